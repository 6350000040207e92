"""A quantized frozen base (model.quantize=nf4|int8, bitsandbytes): every pretrained Linear stored
quantized, close to the fp32 base, frozen; adapters and LoRAs on it train and round-trip through a
checkpoint; what would train it is refused."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cl_adapters.adapters import AdapterConfig, LoraConfig
from cl_adapters.errors import UserError
from cl_adapters.models import AdaptedModel, HFEncoder, checkpoint
from cl_adapters.models.quantize import quantize_linears, weight_bytes


def ids(n=8, length=12):
    return torch.randint(1, 100, (n, length), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind,layer,ratio", [("nf4", "Linear4bit", 0.2), ("int8", "Linear8bitLt", 0.3)])
def test_every_pretrained_linear_is_stored_quantized_and_close(tiny_bert, kind, layer, ratio):
    fp32 = HFEncoder(name_or_path=tiny_bert).eval()
    quantized = HFEncoder(name_or_path=tiny_bert, quantize=kind).eval()
    linears = [m for m in fp32.model.modules() if type(m) is nn.Linear]
    assert [type(m).__name__ for m in quantized.model.modules() if isinstance(m, nn.Linear)] == [layer] * len(linears)
    linear_bytes = sum(m.weight.numel() * 4 for m in linears)
    saved = weight_bytes(fp32.model) - weight_bytes(quantized.model)
    assert saved > (1 - ratio) * linear_bytes  # nf4: ~1/8 of fp32 plus block statistics; int8: ~1/4
    assert not any(p.requires_grad for p in quantized.parameters())
    with torch.no_grad():
        assert F.cosine_similarity(quantized(ids()), fp32(ids())).min() > 0.95


@pytest.mark.parametrize("kind", ["nf4", "int8"])
@pytest.mark.parametrize("adapter", [AdapterConfig(r=8), LoraConfig(r=4)])
def test_adapters_on_a_quantized_base_train_and_round_trip(tiny_bert, kind, adapter, tmp_path):
    torch.manual_seed(0)
    model = AdaptedModel(HFEncoder(name_or_path=tiny_bert, quantize=kind), adapter)
    model.add_task(0, 2)
    base = {n: t.clone() for n, t in model.backbone.state_dict().items() if "lora_" not in n and ".adapters." not in n}
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    x, y = ids(), torch.tensor([0, 1] * 4)
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(model(x, 0), y)
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[-1] < losses[0]
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(model.task_parameters(0))
    now = model.backbone.state_dict()
    assert all(torch.equal(now[n], t) for n, t in base.items())  # the quantized base never moved
    model.eval()
    checkpoint.save(model, tmp_path)
    fresh = checkpoint.load(AdaptedModel(HFEncoder(name_or_path=tiny_bert, quantize=kind), copy.deepcopy(adapter)), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(fresh(x, 0), model(x, 0))


def test_what_would_train_or_misread_a_quantized_base_is_refused(tiny_bert, tmp_path):
    from cl_adapters.models.exports.peft import save_peft

    with pytest.raises(UserError, match="model.quantize=nf4: a quantized base cannot train .train_backbone=all"):
        AdaptedModel(HFEncoder(name_or_path=tiny_bert, quantize="nf4"), None, train_backbone="all")
    with pytest.raises(UserError, match="model.quantize must be one of .'nf4', 'int8'. or null, got 'fp8'"):
        HFEncoder(name_or_path=tiny_bert, quantize="fp8")
    model = AdaptedModel(HFEncoder(name_or_path=tiny_bert, quantize="nf4"), LoraConfig(r=4))
    model.add_task(0, 2)
    with pytest.raises(UserError, match="format=peft: the base is quantized"):
        save_peft(model, tmp_path)


@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_a_quantized_base_trains_the_same_after_an_eval_forward(tiny_bert, kind):
    """bitsandbytes repacks a 4-bit weight for AVX512-BF16 CPUs at its first eval forward, after which
    the layer has no backward; the next task trains after an evaluation, so that must not happen."""
    model = AdaptedModel(HFEncoder(name_or_path=tiny_bert, quantize=kind), AdapterConfig(r=8))
    model.add_task(0, 2)
    x, y = ids(), torch.tensor([0, 1] * 4)

    def grads():
        model.train().zero_grad()
        torch.manual_seed(1)  # the same dropout masks
        F.cross_entropy(model(x, 0), y).backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    before = grads()
    with torch.no_grad():
        model.eval()(x, 0)
    after = grads()
    assert all(torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("kind", ["nf4", "int8"])
@pytest.mark.parametrize("adapter", [AdapterConfig(r=8), LoraConfig(r=4)])
def test_a_from_scratch_backbone_is_quantized_when_it_freezes(kind, adapter, tmp_path):
    """MLP (model.quantize): trained on task 0 in fp32, then its own Linears quantized (not the adapters'),
    close to the fp32 outputs; later adapters train through it; a checkpoint restores the quantized
    weights into a fresh model exactly."""
    from cl_adapters.models import MLP

    def build():
        torch.manual_seed(0)
        return AdaptedModel(MLP((64,), hidden=(64, 64), quantize=kind), copy.deepcopy(adapter))

    model, x, y = build(), torch.randn(16, 64), torch.arange(16) % 2
    model.add_task(0, 2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert model.backbone.quantized is None and trainable > set(model.task_parameters(0))  # the backbone trains
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        F.cross_entropy(model(x, 0), y).backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        fp32 = model.backbone(x)  # a direct forward is the bare backbone
        model.quantize_frozen_backbone()
        assert F.cosine_similarity(model.backbone(x), fp32).min() > 0.98
    layer = "Linear4bit" if kind == "nf4" else "Linear8bitLt"
    assert model.backbone.quantized == kind
    quantized = [type(m).__name__ for m in model.backbone.modules() if isinstance(m, nn.Linear) and type(m) is not nn.Linear]
    assert quantized == [layer, layer]  # the two hidden layers; the adapters' own Linears stay fp32
    model.train()
    model.add_task(1, 2)
    F.cross_entropy(model(x, 1), y).backward()
    own = model.task_parameters(1)
    assert all(p.grad is not None for p in own.values())  # and through the quantized layer above it:
    assert sum(p.grad.abs().sum() for n, p in own.items() if n.startswith("backbone.layers.0.")) > 0
    assert not any(p.requires_grad for m in model.backbone.modules() if type(m).__name__ == layer for p in m.parameters())
    model.eval()
    checkpoint.save(model, tmp_path)
    fresh = checkpoint.load(build(), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(fresh(x, 0), model(x, 0)) and torch.equal(fresh(x, 1), model(x, 1))
    with pytest.raises(UserError, match=f"saved with model.quantize={kind}, the model has model.quantize=None"):
        checkpoint.load(AdaptedModel(MLP((64,), hidden=(64, 64)), copy.deepcopy(adapter)), tmp_path)


@pytest.mark.parametrize("strategy", ["adapter", "lora_per_task", "adapter_fusion"])
def test_split_digits_on_an_nf4_base_forgets_nothing_and_resumes_exactly(make_cfg, whole_and_resumed, tmp_path, strategy):
    from cl_adapters.runs.references import ReferenceCache

    overrides = (f"strategy={strategy}", "model.quantize=nf4", "strategy.epochs=2", "stream.n_tasks=3",
                 "stream.class_order=[0,1,2,3,4,5]")
    whole, resumed = whole_and_resumed(*overrides)
    assert whole["metrics"]["bwt"] == 0.0 and whole["metrics"]["acc"] > 0.8  # chance: 0.5
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    cache = ReferenceCache(tmp_path)  # the references are the fp32 backbone trained whole: shared with fp32 runs
    assert cache.path("joint", make_cfg(*overrides)) == cache.path("joint", make_cfg(*overrides[:1], *overrides[2:]))


def test_a_quantized_from_scratch_base_that_would_train_is_refused(make_cfg, tmp_path):
    import json

    from cl_adapters.runs.run import run

    with pytest.raises(UserError, match="model.quantize=int8: a quantized base cannot train .train_backbone=all"):
        run(make_cfg("strategy=full_ft", "model.quantize=int8"), tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["run"]["status"] == "failed"
    with pytest.raises(UserError, match="model.quantize must be one of .'nf4', 'int8'. or null, got 'fp8'"):
        run(make_cfg("model.quantize=fp8"), tmp_path / "bad")


def test_a_quantized_base_counts_the_flops_of_its_matmuls():
    """The budget column (torch's FLOP counter) counts bitsandbytes' fused 4-bit matmul like any other."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = {}
    for kind in (None, "nf4", "int8"):
        frozen = nn.Sequential(nn.Linear(64, 128), nn.Linear(128, 32)).requires_grad_(False)
        if kind:
            quantize_linears(frozen, kind)
        x = torch.randn(16, 64, requires_grad=True)
        with FlopCounterMode(display=False) as counter:
            frozen(x).sum().backward()
        counts[kind] = counter.get_total_flops()
    assert counts == dict.fromkeys(counts, 2 * 2 * 16 * (64 * 128 + 128 * 32))  # forward + the input's gradient
