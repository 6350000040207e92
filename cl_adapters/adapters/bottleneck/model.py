"""Injection: a plain walk over module names that wraps the matches in AdapterLayer (PEFT style).
The targets come from ``presets`` per backbone family and placement; ``AdapterConfig.targets``
overrides them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from torch import nn

from cl_adapters.adapters.base import LayerwiseAdapters
from cl_adapters.adapters.bottleneck.fusion import FusionConfig
from cl_adapters.adapters.bottleneck.layer import AdapterLayer, Bottleneck
from cl_adapters.adapters.presets import Target, preset
from cl_adapters.adapters.route import Route
from cl_adapters.errors import UserError

if TYPE_CHECKING:  # annotations only: config.py imports this module to build it
    from cl_adapters.adapters.bottleneck.config import AdapterConfig


def target_patterns(backbone: nn.Module, cfg: AdapterConfig) -> list[Target]:
    return cfg.targets if cfg.targets is not None else preset(backbone, cfg.placement)


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


class BottleneckAdapters(LayerwiseAdapters):
    """The bottleneck adapters injected into one backbone, one per task key in every wrapped layer,
    and the fusions over them (one per fused task key in every layer)."""

    capabilities = frozenset({"fusion", "stack"})  # not merge: the activation is not linear
    task_modules = "adapters"

    def __init__(self, backbone: nn.Module, cfg: AdapterConfig):
        self.cfg = cfg
        named = inject_adapters(backbone, cfg)
        self.layer_names, self.layers = list(named), list(named.values())

    def add(self, key: str) -> None:
        if key not in self.keys():
            for layer in self.layers:
                layer.add(key, Bottleneck(layer.adapter_in, layer.out_dim, self.cfg))

    def merge(self, key: str) -> None:
        raise self._unsupported("merge", "an adapter with a non-linearity (adapter.activation) cannot be merged "
                                         "into the base weights; serve it routed, or use LoRA")

    def add_fusion(self, key: str, over: list[str], cfg: FusionConfig) -> None:
        """A fusion for task ``key`` over the adapters ``over``, in every layer."""
        for layer in self.layers:
            layer.add_fusion(key, over, cfg)

    def fusions(self, key: str) -> list:
        """Task ``key``'s fusion in every layer (empty if it has none)."""
        return [layer.fusions[key] for layer in self.layers if key in layer.fusions]

    @contextmanager
    def routed(self, route: Route) -> Iterator[None]:
        """``route`` in every layer (and the hooks that read a parallel adapter's source input) for the
        forwards inside the block; afterwards the layers are bare and the hooks gone."""
        hooks = [source.register_forward_pre_hook(layer.keep_source_input) for layer in self.layers
                 for source in layer.sources]
        for layer in self.layers:
            layer.route = route
        try:
            yield
        finally:
            for layer in self.layers:
                layer.clear()
            for hook in hooks:
                hook.remove()
