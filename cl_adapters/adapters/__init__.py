"""Adapters: config dataclass, bottleneck layer, injection by module-name patterns."""

from cl_adapters.adapters.config import AdapterConfig
from cl_adapters.adapters.inject import LORA_TARGETS, PRESETS, inject_adapters
from cl_adapters.adapters.layer import AdapterLayer, Bottleneck

__all__ = ["AdapterConfig", "AdapterLayer", "Bottleneck", "LORA_TARGETS", "PRESETS", "inject_adapters"]
