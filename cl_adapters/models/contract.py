"""The backbone contract: what any backbone (shipped or yours) declares, checked once when a model is
built around it, so a missing field is one clear error instead of an AttributeError mid-run.

- ``family``: its injection preset (``"bert"``, ``"mlp"``, ...), or None (then give ``adapter.targets``);
- ``pretrained``: True if its weights come trained (adapter strategies then never train it);
- ``inputs``: ``"float"`` (images, features: floating point, or uint8 images in [0, 255], which its forward
  turns into floats with :func:`unit_float`) or ``"token ids"`` (right-padded int64, text);
- ``out_features``: the width of the (B, out_features) features its forward returns;
- optionally ``quantize`` (``"nf4"``, ``"int8"`` or None) and ``quantized`` (the kind once its Linears are
  stored quantized, else None): ``AdaptedModel`` quantizes such a backbone when it stops training.
"""

from __future__ import annotations

import torch
from torch import nn

from cl_adapters.errors import UserError

INPUTS = ("float", "token ids")
MISSING = object()
FIELDS = {  # name -> (is it right?, what it must be)
    "family": (lambda v: v is None or isinstance(v, str), "a preset name or None"),
    "pretrained": (lambda v: isinstance(v, bool), "True or False"),
    "inputs": (lambda v: v in INPUTS, " or ".join(map(repr, INPUTS))),
    "out_features": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer"),
}


def check_backbone(backbone: nn.Module) -> None:
    """One UserError naming every field the backbone lacks or gets wrong."""
    bad = []
    for name, (ok, what) in FIELDS.items():
        value = getattr(backbone, name, MISSING)
        if value is MISSING or not ok(value):
            bad.append(f"{name} ({what}, got {'nothing' if value is MISSING else repr(value)})")
    if bad:
        raise UserError(f"model: {type(backbone).__name__} must declare {'; '.join(bad)} (see cl_adapters.models.contract)")


def check_inputs(backbone_class: type | None, sample: torch.Tensor) -> None:
    """Before the backbone is built: does it take what the stream gives (``inputs``, a class attribute)?"""
    wants = getattr(backbone_class, "inputs", None)
    given = INPUTS[0] if torch.is_floating_point(sample) or sample.dtype == torch.uint8 else INPUTS[1]
    if wants is not None and wants != given:
        raise UserError(f"model: {backbone_class.__name__} takes {wants} inputs, this stream gives {given} inputs of "
                        f"shape {tuple(sample.shape)} (hf_encoder is for text streams; mlp, patch_transformer for images)")


def unit_float(x: torch.Tensor) -> torch.Tensor:
    """A batch of uint8 images (0..255, as image streams keep them: a quarter of float32's memory) as floats
    in [0, 1], what ``ToTensor`` gives; floating inputs pass unchanged."""
    return x.float() / 255 if x.dtype == torch.uint8 else x
