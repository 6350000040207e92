"""The parts of a combined method: each an adapter method's config, attached in order."""

from __future__ import annotations

from dataclasses import dataclass, field

from cl_adapters.adapters.combined.model import CombinedAdapters
from cl_adapters.errors import UserError


@dataclass
class CombinedConfig:
    """Every part gets its own adapter per task key; a task's adapter is all of them. Attached in order:
    put LoRA first, since a bottleneck adapter wraps modules and so renames the ones inside them."""

    parts: list = field(default_factory=list, metadata={"help": "adapter method configs (LoraConfig, AdapterConfig, ...)"})

    def __post_init__(self):
        self.parts = list(self.parts)
        if len(self.parts) < 2:
            raise UserError(f"adapter.parts: a combined adapter needs at least two methods, got {len(self.parts)}")
        if bad := [type(p).__name__ for p in self.parts if not callable(getattr(p, "attach", None))]:
            raise UserError(f"adapter.parts: {bad[0]} is not an adapter method config (it has no attach)")

    def attach(self, backbone):
        return CombinedAdapters([part.attach(backbone) for part in self.parts])
