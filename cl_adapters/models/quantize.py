"""A frozen base in 4-bit NF4 (QLoRA, Dettmers et al. 2023) or int8 (LLM.int8), through bitsandbytes:
every ``nn.Linear`` of the pretrained model is replaced by bitsandbytes' layer holding the quantized
weight, dequantized on the fly in its forward; gradients flow through to whatever sits below (adapters,
LoRAs), the quantized weights never train. Adapters, LoRAs and heads added later stay in full precision.
"""

from __future__ import annotations

import torch
from torch import nn

from cl_adapters.errors import UserError

KINDS = ("nf4", "int8")


def quantized_linear(linear: nn.Linear, kind: str) -> nn.Module:
    """bitsandbytes' frozen ``kind`` layer with ``linear``'s weights (fp32 compute), on its device."""
    import bitsandbytes as bnb

    bias = linear.bias is not None
    if kind == "nf4":
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=bias, compute_dtype=torch.float32,
                                  quant_type="nf4", device="meta")
        layer.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, quant_type="nf4")
    else:
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=bias, has_fp16_weights=False,
                                    device="meta")
        layer.weight = bnb.nn.Int8Params(linear.weight.data, requires_grad=False, has_fp16_weights=False)
    if bias:
        layer.bias = nn.Parameter(linear.bias.data, requires_grad=False)
    return layer.to(linear.weight.device)  # bitsandbytes quantizes on the move to a device


def quantize_linears(model: nn.Module, kind: str) -> int:
    """Replace every ``nn.Linear`` in ``model`` with its quantized layer; returns how many."""
    if kind not in KINDS:
        raise UserError(f"model.quantize must be one of {KINDS} or null, got {kind!r}")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise UserError("model.quantize needs bitsandbytes (pip install 'cl-adapters[quantize]')") from e
    names = [name for name, module in model.named_modules() if type(module) is nn.Linear]
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, quantized_linear(model.get_submodule(name), kind))
    return len(names)


def weight_bytes(model: nn.Module) -> int:
    """Bytes the model's parameters and buffers hold (a quantized weight: its packed bytes + statistics)."""
    total = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    for module in model.modules():  # NF4's absmax and code table live in the weight's quant_state
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None:
            total += sum(t.numel() * t.element_size() for t in (state.absmax, state.code))
    return total
