"""Injection: a plain walk over module names that wraps the matches in AdapterLayer (PEFT style).

Presets name the targets per backbone family and placement; ``AdapterConfig.targets`` overrides them.
Houlsby = after the attention output projection and after the FFN output; Pfeiffer = after the FFN
output only (both before the residual add); parallel = beside the whole FFN.
"""

from __future__ import annotations

import re

from torch import nn

from cl_adapters.adapters.config import AdapterConfig
from cl_adapters.adapters.layer import AdapterLayer
from cl_adapters.errors import UserError

PRESETS: dict[str, dict[str, list[str]]] = {
    "mlp": {
        "houlsby": [r"layers\.\d+"],
        "pfeiffer": [r"layers\.\d+"],
        "parallel": [r"layers\.\d+"],
    },
    "patch_transformer": {
        "houlsby": [r"blocks\.\d+\.attn\.proj", r"blocks\.\d+\.ffn\.fc2"],
        "pfeiffer": [r"blocks\.\d+\.ffn\.fc2"],
        "parallel": [r"blocks\.\d+\.ffn"],
    },
}


def target_patterns(backbone: nn.Module, cfg: AdapterConfig) -> list[str]:
    if cfg.targets is not None:
        return cfg.targets
    family = getattr(backbone, "family", None)
    if family not in PRESETS:
        raise UserError(
            f"no adapter preset for backbone family {family!r}: set adapter.targets to module-name "
            f"regexes (presets: {sorted(PRESETS)})"
        )
    return PRESETS[family][cfg.placement]


def inject_adapters(backbone: nn.Module, cfg: AdapterConfig) -> dict[str, AdapterLayer]:
    """Wrap every module whose full name matches a target pattern; return {name: layer}."""
    patterns = [re.compile(p) for p in target_patterns(backbone, cfg)]
    names = [n for n, _ in backbone.named_modules() if n and any(p.fullmatch(n) for p in patterns)]
    if not names:
        raise UserError(f"adapter targets {[p.pattern for p in patterns]} match no module of the backbone")
    layers = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = backbone.get_submodule(parent_name)
        layers[name] = AdapterLayer(getattr(parent, child), cfg.mode)
        setattr(parent, child, layers[name])
    return layers
