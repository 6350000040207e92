"""SSF (Lian et al. 2022, "Scaling & Shifting Your Features"): a per-channel scale and shift after every
Linear, LayerNorm and Conv2d of the backbone, one pair per task key, routed per sample."""

from cl_adapters.adapters.ssf.config import SSFConfig
from cl_adapters.adapters.ssf.layer import ScaleShift, SSFLayer
from cl_adapters.adapters.ssf.model import SSFAdapters

__all__ = ["SSFAdapters", "SSFConfig", "SSFLayer", "ScaleShift"]
