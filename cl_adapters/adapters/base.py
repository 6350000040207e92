"""The task-adapter method interface: what the model and the strategy need from any adapter method.

A method is a config (a dataclass that checks itself) whose ``attach(backbone)`` injects into the backbone
and returns the method's adapter set. The set grows one adapter per task key and applies a ``Route`` for
one forward; everything else (what trains, checkpoints, fusion) goes through these few members.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from torch import nn

from cl_adapters.adapters.route import Route
from cl_adapters.errors import UserError


@runtime_checkable
class AdapterSet(Protocol):
    """One backbone's adapters of one method, keyed by task (or ``shared``)."""

    supports_fusion: bool  # AdapterFusion can mix its adapters (``add_fusion``, ``fusions``)

    def add(self, key: str) -> None:
        """Create ``key``'s adapter in every targeted layer (a no-op if it exists); it is identity at init."""

    def keys(self) -> list[str]:
        """The task keys with an adapter, in the order they were added."""

    def parameters(self, key: str) -> Iterator[nn.Parameter]:
        """``key``'s parameters: what trains on its task, and what its checkpoint holds."""

    def routed(self, route: Route) -> AbstractContextManager[None]:
        """Apply ``route`` to the forwards inside the block; afterwards no state or hook is left."""


@runtime_checkable
class AdapterMethod(Protocol):
    """A method's config: ``attach`` injects into a backbone and returns its ``AdapterSet``."""

    def attach(self, backbone: nn.Module) -> AdapterSet: ...


def check_shared_fields(cfg) -> None:
    """The checks every adapter config needs: rank ``r``, ``dropout`` and ``targets``."""
    if not isinstance(cfg.r, int) or isinstance(cfg.r, bool) or cfg.r <= 0:
        raise UserError(f"adapter.r must be a positive integer, got {cfg.r!r}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise UserError(f"adapter.dropout must be in [0, 1), got {cfg.dropout!r}")
    if cfg.targets is not None:
        cfg.targets = list(cfg.targets)
        if not cfg.targets:
            raise UserError("adapter.targets must name at least one module pattern (or be null)")
