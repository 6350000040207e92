"""Adapters: config dataclass, bottleneck layer, injection by module-name patterns."""

from cl_adapters.adapters.config import AdapterConfig
from cl_adapters.adapters.inject import PRESETS, inject_adapters
from cl_adapters.adapters.layer import AdapterLayer, Bottleneck

__all__ = ["AdapterConfig", "AdapterLayer", "Bottleneck", "PRESETS", "inject_adapters"]
