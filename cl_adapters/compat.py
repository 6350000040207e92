"""Environment shims, applied once when ``cl_adapters`` is imported.

The registry's torchvision is a CUDA build. On CPU-only torch its compiled ops fail to load and
``import torchvision`` dies in ``register_fake("torchvision::nms")`` because the op schema was never
defined -- which also breaks Avalanche, transformers and peft (they import torchvision). Defining
the two schemas first lets torchvision's Python parts load. Where the compiled ops do load (a CUDA
machine with a matching torchvision) the shim does nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None  # kept alive: a collected Library unregisters its ops


def torchvision_ops_load() -> bool:
    """True if torchvision's compiled ops are (or can be) registered with this torch."""
    if hasattr(torch.ops.torchvision, "nms"):
        return True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return True  # nothing to shim
    for lib in Path(spec.origin).parent.glob("_C*.so"):
        try:
            torch.ops.load_library(str(lib))
            return True
        except OSError:
            return False
    return False


def patch_torchvision() -> bool:
    """Define the torchvision op schemas if its compiled ops cannot load. Returns True if patched."""
    global _library
    if _library is not None or "torchvision" in sys.modules or torchvision_ops_load():
        return False
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS.values():
        _library.define(schema)
    return True
