"""Compacter hyper-parameters: a bottleneck adapter's, plus the PHM dimension n and the rank of B."""

from __future__ import annotations

from dataclasses import dataclass, field

from cl_adapters.adapters.bottleneck import AdapterConfig
from cl_adapters.adapters.compacter.model import CompacterAdapters
from cl_adapters.errors import UserError


@dataclass
class CompacterConfig(AdapterConfig):
    """Defaults as AdapterHub's ``CompacterConfig``: Houlsby placement, GELU, n = 4, rank-1 B
    (``placement=pfeiffer`` is their Compacter++). ``r`` is the bottleneck width (theirs is d / 32)."""

    placement: str = field(default="houlsby", metadata={"help": "houlsby (Compacter) | pfeiffer (Compacter++) | parallel"})
    r: int = field(default=64, metadata={"help": "bottleneck width, a multiple of phm_dim"})
    activation: str = field(default="gelu", metadata={"help": "a torch.nn.functional name"})
    phm_dim: int = field(default=4, metadata={"help": "n: the number of Kronecker products (and rule matrices)"})
    phm_rank: int = field(default=1, metadata={"help": "rank of each per-layer matrix B_i = left @ right"})

    def __post_init__(self):
        super().__post_init__()
        for name in ("phm_dim", "phm_rank"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserError(f"adapter.{name} must be a positive integer, got {value!r}")
        if self.r % self.phm_dim:
            raise UserError(f"adapter.r ({self.r}) must be a multiple of adapter.phm_dim ({self.phm_dim})")

    def attach(self, backbone):
        """Inject into ``backbone``; the returned set grows one Compacter per task key."""
        return CompacterAdapters(backbone, self)
