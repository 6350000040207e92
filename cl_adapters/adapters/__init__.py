"""Adapters: config dataclasses, the bottleneck layer, injection by module-name patterns, LoRA via peft,
prefix tuning, and combinations of them (LoRA + Pfeiffer, Mix-and-Match).

Each config's ``attach(backbone)`` injects into the backbone and returns a set that grows one adapter
per task key (``add``), lists them (``keys``, ``parameters``) and applies a ``Route`` for one forward
(``with adapters.routed(route): backbone(x)``);
bottleneck adapters can also be fused per task (AdapterFusion, ``fusion.py``).
"""

from cl_adapters.adapters.base import AdapterMethod, AdapterSet
from cl_adapters.adapters.bottleneck import (
                                             AdapterConfig,
                                             AdapterLayer,
                                             Bottleneck,
                                             BottleneckAdapters,
                                             Fusion,
                                             FusionConfig,
                                             inject_adapters,
)
from cl_adapters.adapters.combined import CombinedAdapters, CombinedConfig
from cl_adapters.adapters.lora import LoraAdapters, LoraConfig
from cl_adapters.adapters.prefix import PrefixAdapters, PrefixConfig
from cl_adapters.adapters.presets import PRESETS, preset
from cl_adapters.adapters.route import Route, Stack

__all__ = [
    "AdapterConfig",
    "AdapterMethod",
    "AdapterSet",
    "AdapterLayer",
    "Bottleneck",
    "BottleneckAdapters",
    "CombinedAdapters",
    "CombinedConfig",
    "Fusion",
    "FusionConfig",
    "LoraAdapters",
    "LoraConfig",
    "PRESETS",
    "PrefixAdapters",
    "PrefixConfig",
    "Route",
    "Stack",
    "inject_adapters",
    "preset",
]
