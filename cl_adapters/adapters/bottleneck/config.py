"""Adapter hyper-parameters (PEFT style: a dataclass that checks itself)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F

from cl_adapters.adapters.base import check_shared_fields
from cl_adapters.adapters.bottleneck.model import BottleneckAdapters
from cl_adapters.errors import UserError

PLACEMENTS = ("houlsby", "pfeiffer", "parallel")


@dataclass
class AdapterConfig:
    """A bottleneck adapter ``h + scaling * up(act(down(h)))``; ``up`` starts at zero (identity)."""

    placement: str = field(default="pfeiffer", metadata={"help": "houlsby | pfeiffer | parallel"})
    r: int = field(default=64, metadata={"help": "bottleneck width"})
    activation: str = field(default="relu", metadata={"help": "a torch.nn.functional name"})
    dropout: float = field(default=0.0, metadata={"help": "dropout inside the bottleneck"})
    scaling: float = field(default=1.0, metadata={"help": "multiplies the adapter's output"})
    targets: list[str] | None = field(
        default=None, metadata={"help": "module-name regexes to wrap; None = the backbone's preset"}
    )

    def __post_init__(self):
        if self.placement not in PLACEMENTS:
            raise UserError(f"adapter.placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if not hasattr(F, str(self.activation)):
            raise UserError(f"adapter.activation {self.activation!r} is not in torch.nn.functional")
        check_shared_fields(self)

    @property
    def mode(self) -> str:
        """How the adapter meets its module: on its output (serial) or beside it (parallel)."""
        return "parallel" if self.placement == "parallel" else "serial"

    def attach(self, backbone):
        """Inject into ``backbone``; the returned set grows one adapter per task key."""
        return BottleneckAdapters(backbone, self)
