"""Injection: a plain walk over module names that wraps the matches in AdapterLayer (PEFT style).

Presets name the targets per backbone family and placement; ``AdapterConfig.targets`` overrides them.
Houlsby = after the attention output projection and after the FFN output; Pfeiffer = after the FFN
output only (both before the residual add); parallel = beside the whole FFN.
"""

from __future__ import annotations

import re

from collections.abc import Iterator

from torch import nn

from cl_adapters.adapters.config import AdapterConfig
from cl_adapters.adapters.fusion import FusionConfig
from cl_adapters.adapters.layer import AdapterLayer, Route
from cl_adapters.errors import UserError

# A target is a module-name regex, or (regex, source) for a parallel adapter whose input is another
# module's input: ``source`` is the match expanded (``\\1`` = the layer prefix), e.g. BERT's FFN is
# ``intermediate`` + ``output.dense``, so the adapter reads the intermediate's input.
Target = str | tuple[str, str]
_BERT = r"(.*encoder\.layer\.\d+)"  # BERT, RoBERTa, MiniLM, ELECTRA, XLM-R and ViT share these names
_BERT_LIKE = {
    "houlsby": [_BERT + r"\.attention\.output\.dense", _BERT + r"\.output\.dense"],
    "pfeiffer": [_BERT + r"\.output\.dense"],
    "parallel": [(_BERT + r"\.output\.dense", r"\1.intermediate")],
}
_DISTIL = r".*transformer\.layer\.\d+"
PRESETS: dict[str, dict[str, list[Target]]] = {
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
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "electra", "vit"), _BERT_LIKE),
    "distilbert": {
        "houlsby": [_DISTIL + r"\.attention\.out_lin", _DISTIL + r"\.ffn\.lin2"],
        "pfeiffer": [_DISTIL + r"\.ffn\.lin2"],
        "parallel": [_DISTIL + r"\.ffn"],
    },
}


def target_patterns(backbone: nn.Module, cfg: AdapterConfig) -> list[Target]:
    if cfg.targets is not None:
        return cfg.targets
    family = backbone.family
    if family not in PRESETS:
        raise UserError(
            f"no adapter preset for backbone family {family!r}: set adapter.targets to module-name "
            f"regexes (presets: {sorted(PRESETS)})"
        )
    return PRESETS[family][cfg.placement]


def inject_adapters(backbone: nn.Module, cfg: AdapterConfig) -> dict[str, AdapterLayer]:
    """Wrap every module whose full name matches a target; return {name: layer} in module order."""
    targets = [(t, None) if isinstance(t, str) else tuple(t) for t in target_patterns(backbone, cfg)]
    modules = dict(backbone.named_modules())
    layers = {}
    for name in list(modules):
        for pattern, source in targets:
            match = re.fullmatch(pattern, name) if name else None
            if match is None:
                continue
            parent_name, _, child = name.rpartition(".")
            src = modules[match.expand(source)] if source else None
            layers[name] = AdapterLayer(modules[name], cfg.mode, source=src)
            setattr(backbone.get_submodule(parent_name), child, layers[name])
            break
    if not layers:
        raise UserError(f"adapter targets {[t for t, _ in targets]} match no module of the backbone")
    return layers


class BottleneckAdapters:
    """The bottleneck adapters injected into one backbone, one per task key in every wrapped layer,
    and the fusions over them (one per fused task key in every layer)."""

    def __init__(self, backbone: nn.Module, cfg: AdapterConfig):
        self.cfg = cfg
        named = inject_adapters(backbone, cfg)
        self.layer_names, self.layers = list(named), list(named.values())

    def add(self, key: str) -> None:
        for layer in self.layers:
            if key not in layer.adapters:
                layer.add(key, self.cfg)

    def keys(self) -> list[str]:
        return list(self.layers[0].adapters)

    def parameters(self, key: str) -> Iterator[nn.Parameter]:
        for layer in self.layers:
            yield from layer.adapters[key].parameters()

    def add_fusion(self, key: str, over: list[str], cfg: FusionConfig) -> None:
        """A fusion for task ``key`` over the adapters ``over``, in every layer."""
        for layer in self.layers:
            layer.add_fusion(key, over, cfg)

    def fusions(self, key: str) -> list:
        """Task ``key``'s fusion in every layer (empty if it has none)."""
        return [layer.fusions[key] for layer in self.layers if key in layer.fusions]

    def route(self, route: Route) -> None:
        for layer in self.layers:
            layer.route = route
