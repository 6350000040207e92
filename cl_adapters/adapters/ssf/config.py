"""SSF hyper-parameters (a dataclass that checks itself)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cl_adapters.adapters.ssf.model import SSFAdapters
from cl_adapters.errors import UserError


@dataclass
class SSFConfig:
    """``y = scale * x + shift`` per output channel of every targeted layer; scale starts at 1, shift at 0."""

    init_std: float = field(default=0.0, metadata={
        "help": "std of the normal init around scale 1 / shift 0; 0 = identity at init (the paper: 0.02)"})
    targets: list[str] | None = field(default=None, metadata={
        "help": "module-name regexes of Linear, LayerNorm or Conv2d layers; None = every one the features pass"})

    def __post_init__(self):
        std = self.init_std
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not 0 <= std < 1:
            raise UserError(f"adapter.init_std must be a number in [0, 1), got {std!r}")
        if self.targets is not None:
            self.targets = list(self.targets)
            if not self.targets or not all(isinstance(t, str) for t in self.targets):
                raise UserError(f"adapter.targets must be module-name regexes (or null), got {self.targets!r}")

    def attach(self, backbone):
        """Wrap ``backbone``'s targeted layers; the returned set grows one scale/shift pair per task key."""
        return SSFAdapters(backbone, self)
