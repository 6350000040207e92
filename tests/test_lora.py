"""LoRA baselines through peft: parameter counts equal peft's, routing, freezing, errors."""

import copy

import pytest
import torch
from torch import nn

from cl_adapters.adapters import LoraConfig
from cl_adapters.errors import UserError
from cl_adapters.models import MLP, AdaptedModel, HFEncoder

SHAPE = (1, 8, 8)


def mlp():
    torch.manual_seed(0)
    return MLP(SHAPE, hidden=(32, 32))


def grow(model, tasks, n_classes=2):
    for t in tasks:
        model.add_task(t, n_classes)
    return model


def randomize_lora(model):
    """Non-zero B matrices, so that LoRAs change outputs (as after training)."""
    with torch.no_grad():
        for layer in model.adapters.layers:
            for b in layer.lora_B.values():
                b.weight.normal_(0, 0.5)


def lora_count(model, key):
    return sum(p.numel() for p in model.adapters.parameters(key))


@pytest.fixture(scope="module")
def minilm():
    return HFEncoder()


@pytest.mark.parametrize("r,targets", [(8, None), (4, [r"layers\.0\.fc"])])
def test_trainable_params_equal_peft_on_the_mlp(r, targets):
    from peft import get_peft_model

    cfg = LoraConfig(r=r, targets=targets)
    model = grow(AdaptedModel(mlp(), cfg, train_backbone="never"), [0, 1])
    theirs, _ = get_peft_model(mlp(), cfg.to_peft(model.backbone)).get_nb_trainable_parameters()
    assert lora_count(model, "0") == lora_count(model, "1") == theirs
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == theirs + sum(p.numel() for p in model.heads["1"].parameters())


def test_trainable_params_equal_peft_on_minilm(minilm):
    from peft import get_peft_model

    cfg = LoraConfig(r=8)
    model = grow(AdaptedModel(copy.deepcopy(minilm), cfg), [0])
    theirs, _ = get_peft_model(copy.deepcopy(minilm), cfg.to_peft(minilm)).get_nb_trainable_parameters()
    assert lora_count(model, "0") == theirs == 6 * 2 * 8 * (384 + 384)  # query+value in 6 layers
    names = sorted({n.rsplit(".lora_A", 1)[0] for n, _ in model.named_parameters() if ".lora_A." in n})
    assert names[:2] == ["backbone.model.encoder.layer.0.attention.self.query",
                         "backbone.model.encoder.layer.0.attention.self.value"]


def test_identity_at_init_and_per_sample_routing():
    plain = grow(AdaptedModel(mlp()), [0, 1, 2])
    model = grow(AdaptedModel(mlp(), LoraConfig(r=4)), [0, 1, 2]).eval()
    plain.heads = copy.deepcopy(model.heads)
    x, t = torch.randn(9, *SHAPE), torch.tensor([0, 1, 2] * 3)
    assert torch.equal(model(x, t), plain.eval()(x, t))  # B = 0: the LoRAs are no-ops
    randomize_lora(model)
    mixed = model(x, t)
    assert not torch.allclose(mixed, plain(x, t))
    for task in (0, 1, 2):  # a mixed batch gives what each task's own batch gives
        torch.testing.assert_close(mixed[t == task], model(x[t == task], task))


def test_per_task_lora_trains_only_the_current_task():
    model = grow(AdaptedModel(mlp(), LoraConfig(r=4)), [0, 1, 2])
    randomize_lora(model)
    x, t = torch.randn(9, *SHAPE), torch.tensor([0, 1, 2] * 3)
    nn.functional.cross_entropy(model(x, t), torch.randint(0, 2, (9,))).backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    assert got == set(model.task_parameters(2)) and any(".lora_A.2." in n for n in got)


def test_shared_lora_is_one_adapter_trained_on_every_task():
    model = grow(AdaptedModel(mlp(), LoraConfig(r=4), per_task=False), [0, 1, 2])
    assert model.adapters.keys() == ["shared"] and model.shares_training
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora = {n for n, _ in model.named_parameters() if ".lora_" in n}
    assert trainable == lora | {f"heads.{t}.{w}" for t in range(3) for w in ("weight", "bias")}


def test_bitfit_trains_biases_and_heads_only():
    model = grow(AdaptedModel(mlp(), train_biases=True), [0, 1])  # task 0: the whole from-scratch backbone
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.backbone.named_parameters(prefix="backbone") if n.endswith("bias")} | {
        "heads.0.weight", "heads.0.bias", "heads.1.weight", "heads.1.bias"}


@pytest.mark.parametrize("bad", [dict(r=0), dict(r=-2), dict(alpha=0), dict(dropout=1.0), dict(targets=[])])
def test_config_rejects_impossible_values(bad):
    with pytest.raises(UserError, match="adapter\\."):
        LoraConfig(**bad)


def test_targets_that_match_nothing_are_a_clear_error():
    model = AdaptedModel(mlp(), LoraConfig(targets=["no_such_module"]))
    with pytest.raises(UserError, match="LoRA"):
        model.add_task(0, 2)
