"""strategy.precision: forwards under autocast with fp32 weights; fp16 scales the loss and hands plugins
unscaled gradients; references keep one cache entry per precision."""

import copy

import pytest
import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin

from cl_adapters.adapters import AdapterConfig
from cl_adapters.errors import UserError
from cl_adapters.models import MLP, AdaptedModel
from cl_adapters.runs.references import key_fields
from cl_adapters.strategies import ContinualStrategy
from cl_adapters.strategies.continual import resolve_precision


class Grab(SupervisedPlugin):
    """What a plugin sees after the backward pass of the last step of a task."""

    def after_backward(self, strategy, **kwargs):
        self.model = copy.deepcopy(strategy.model)  # the weights this gradient belongs to
        self.grads = {n: p.grad.clone() for n, p in strategy.model.named_parameters() if p.grad is not None}
        self.batch = strategy.mb_x.clone(), strategy.mb_y.clone(), int(strategy.mb_task_id[0])
        self.output_dtype = strategy.mb_output.dtype


def strategy(precision, monitors=()):
    torch.manual_seed(0)
    return ContinualStrategy(backbone=MLP((1, 8, 8), hidden=(32, 32)), model=lambda b: AdaptedModel(b, AdapterConfig(r=8)),
                             optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2), epochs=2, batch_size=32,
                             precision=precision, monitors=list(monitors))


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_forwards_run_in_the_precision_and_weights_stay_fp32(digits, precision, dtype):
    grab = Grab()
    s = strategy(precision, [grab])
    s.train(digits.train_stream[0])
    assert grab.output_dtype == dtype and all(p.dtype == torch.float32 for p in s.model.parameters())
    assert s.scaler.is_enabled() == (precision == "fp16")


def test_fp16_plugins_see_the_true_gradients_not_the_scaled_ones(digits):
    grab = Grab()
    s = strategy("fp16", [grab])
    s.train(digits.train_stream[0])
    assert s.scaler.get_scale() > 1  # the loss was scaled
    seen = grab.grads
    x, y, task = grab.batch
    model = grab.model
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        logits = model(x, task)
    F.cross_entropy(logits, y).backward()  # unscaled, on the same weights and batch
    assert seen and all(torch.allclose(seen[n], p.grad, rtol=1e-2, atol=1e-4) for n, p in model.named_parameters() if n in seen)


def test_an_unknown_precision_is_refused():
    with pytest.raises(UserError, match="strategy.precision must be null .* got 'fp8'"):
        strategy("fp8")


@pytest.mark.parametrize("device, cuda, bf16, expected", [
    ("cuda", True, True, "bf16"), ("auto", True, True, "bf16"), ("cuda:0", True, True, "bf16"),
    ("cuda", True, False, None),  # a GPU without bf16 (pre-Ampere): fp32, not fp16 (that needs loss scaling)
    ("cpu", True, True, None), ("auto", False, False, None)])
def test_auto_precision_is_bf16_on_a_cuda_gpu_that_has_it_else_fp32(monkeypatch, device, cuda, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: int(cuda))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    assert resolve_precision("auto", device) == expected
    assert resolve_precision("fp16", device) == "fp16" and resolve_precision(None, device) is None


def test_auto_on_cpu_is_fp32_and_shares_fp32_references(make_cfg):
    s = strategy("auto")
    assert s.amp_dtype is None and s.precision == "fp32" and not s.scaler.is_enabled()
    assert key_fields(make_cfg("strategy.precision=auto"), "joint") == key_fields(make_cfg(), "joint")


def test_a_reference_key_holds_the_precision_only_when_it_is_not_fp32(make_cfg):
    assert "precision" not in key_fields(make_cfg(), "joint")
    assert key_fields(make_cfg("strategy.precision=bf16"), "joint")["precision"] == "bf16"


@pytest.mark.parametrize("strategy_name", ["adapter_fusion", "lora_per_task", "full_ft"])
def test_whole_runs_in_bf16_learn_and_keep_per_task_parts_exact(make_cfg, tmp_path, strategy_name):
    from cl_adapters.runs.run import run

    results = run(make_cfg(f"strategy={strategy_name}", "strategy.precision=bf16", "strategy.epochs=3"), tmp_path)
    assert results["metrics"]["acc"] > 0.9 and results["config"]["strategy"]["precision"] == "bf16"
    if strategy_name != "full_ft":
        assert results["metrics"]["bwt"] == 0.0


@pytest.mark.parametrize("adapter", ["pfeiffer", "houlsby", "parallel", "compacter", "lora", "lora_pfeiffer", "mam", "prefix"])
def test_every_adapter_kind_trains_and_serves_mixed_batches_under_bf16_autocast(tiny_bert, adapter):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from cl_adapters import CONFIG_DIR
    from cl_adapters.adapters import FusionConfig
    from cl_adapters.models import HFEncoder

    fusion = FusionConfig(rank=4) if adapter == "pfeiffer" else None
    model = AdaptedModel(HFEncoder(name_or_path=tiny_bert), instantiate(OmegaConf.load(f"{CONFIG_DIR}/adapter/{adapter}.yaml")),
                         fusion=fusion)
    model.add_task(0, [0, 1]), model.add_task(1, [0, 1])
    if fusion is not None:
        model.next_stage()
    x = torch.randint(1, 100, (4, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x, 1)
    logits.float().sum().backward()
    assert logits.dtype == torch.bfloat16 and any(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(x, torch.tensor([0, 1, 0, 1]))
        for i, task in enumerate([0, 1, 0, 1]):  # each sample as it is alone
            torch.testing.assert_close(mixed[i], model(x[i : i + 1], task)[0], rtol=0.05, atol=0.05)
