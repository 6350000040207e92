"""A frozen base in 4-bit NF4 (QLoRA, Dettmers et al. 2023) or int8 (LLM.int8), through bitsandbytes:
every ``nn.Linear`` of the base is replaced by bitsandbytes' layer holding the quantized weight,
dequantized on the fly in its forward; gradients flow through to whatever sits below (adapters,
LoRAs), the quantized weights never train. Adapters, LoRAs and heads stay in full precision.

A pretrained base is quantized when it loads (``HFEncoder``); a from-scratch one when it stops training
(``AdaptedModel.quantize_frozen_backbone``: after its first task), and its checkpoints then hold the quantized
tensors, which ``load_quantized`` puts back.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from cl_adapters.errors import UserError

KINDS = ("nf4", "int8")


def check_kind(kind: str | None) -> str | None:
    if kind is not None and kind not in KINDS:
        raise UserError(f"model.quantize must be one of {KINDS} or null, got {kind!r}")
    return kind


@functools.cache
def count_4bit_matmul_flops() -> None:
    """Let torch's FLOP counter (the runs' budget column) count bitsandbytes' fused 4-bit matmul as the
    matmul it is; unregistered, an NF4 base's forward would count as free."""
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.bitsandbytes.gemm_4bit)
    def gemm_4bit_flops(a_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * math.prod(out_shape) * a_shape[-1]


def quantized_linear(linear: nn.Linear, kind: str) -> nn.Module:
    """bitsandbytes' frozen ``kind`` layer with ``linear``'s weights (fp32 compute), on its device."""
    import bitsandbytes as bnb

    bias = linear.bias is not None
    if kind == "nf4":
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=bias, compute_dtype=torch.float32,
                                  quant_type="nf4", device="meta")
        layer.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, quant_type="nf4")
        # on an AVX512-BF16 CPU bitsandbytes repacks the weight at its first eval forward, and from then on
        # the layer has no backward: the next task's adapters below it would get no gradient (PyTorch
        # warns; with a bias it fails). Keep the layout that trains.
        layer.support_avx512bf16_for_cpu = False
        count_4bit_matmul_flops()
    else:
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=bias, has_fp16_weights=False,
                                    device="meta")
        layer.weight = bnb.nn.Int8Params(linear.weight.data, requires_grad=False, has_fp16_weights=False)
    if bias:
        layer.bias = nn.Parameter(linear.bias.data, requires_grad=False)
    return layer.to(linear.weight.device)  # bitsandbytes quantizes on the move to a device


def quantize_linears(model: nn.Module, kind: str, only: list[nn.Module] | None = None) -> int:
    """Replace every ``nn.Linear`` in ``model`` (or those of ``only``, wherever they sit now: an adapter
    may have wrapped them) with its quantized layer; returns how many."""
    check_kind(kind)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise UserError("model.quantize needs bitsandbytes (pip install 'cl-adapters[quantize]')") from e
    wanted = None if only is None else set(map(id, only))
    names = [name for name, module in model.named_modules()
             if type(module) is nn.Linear and (wanted is None or id(module) in wanted)]
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, quantized_linear(model.get_submodule(name), kind))
    return len(names)


def quantize_pretrained(backbone: nn.Module, kind: str | None) -> None:
    """A pretrained backbone's base quantized as it loads (``kind`` None: left as it is): its Linear weights in
    ``backbone.model`` stored quantized, frozen for good, and flagged as peft reads it (so its LoRA layers wrap
    the bitsandbytes layers)."""
    backbone.quantize = backbone.quantized = kind
    if kind is None:
        return
    quantize_linears(backbone.model, kind)
    backbone.requires_grad_(False)
    backbone.is_loaded_in_4bit, backbone.is_loaded_in_8bit = kind == "nf4", kind == "int8"


def load_quantized(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give ``model``'s NF4 layers the quantized weights in ``state`` (state-dict names). An NF4 weight
    cannot be copied into in place: its statistics' offset is not a tensor. int8 layers can (and are
    left to the caller's copy)."""
    import bitsandbytes as bnb

    for name, module in model.named_modules():
        prefix = f"{name}.weight"
        if isinstance(module, bnb.nn.Linear4bit) and prefix in state:
            stats = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
            module.weight = bnb.nn.Params4bit.from_prequantized(state[prefix], stats, requires_grad=False,
                                                                device=module.weight.device, module=module)


def weight_bytes(model: nn.Module) -> int:
    """Bytes the model's parameters and buffers hold (a quantized weight: its packed bytes + statistics)."""
    total = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    for module in model.modules():  # NF4's absmax and code table live in the weight's quant_state
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None:
            total += sum(t.numel() * t.element_size() for t in (state.absmax, state.code))
    return total
