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
