"""Several adapter methods at once, each with its own adapter per task (e.g. LoRA on attention and a
bottleneck adapter on the FFN), routed, trained and checkpointed together as one method."""

from cl_adapters.adapters.combined.config import CombinedConfig
from cl_adapters.adapters.combined.model import CombinedAdapters

__all__ = ["CombinedAdapters", "CombinedConfig"]
