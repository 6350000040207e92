"""Bottleneck adapters (Houlsby, Pfeiffer, parallel) and AdapterFusion over them: the config, the layer
that wraps a backbone module with one adapter per task, and the injection walk (``model``)."""

from cl_adapters.adapters.bottleneck.config import AdapterConfig
from cl_adapters.adapters.bottleneck.fusion import Fusion, FusionConfig
from cl_adapters.adapters.bottleneck.layer import AdapterLayer, Bottleneck
from cl_adapters.adapters.bottleneck.model import BottleneckAdapters, inject_adapters

__all__ = ["AdapterConfig", "AdapterLayer", "Bottleneck", "BottleneckAdapters", "Fusion", "FusionConfig", "inject_adapters"]
