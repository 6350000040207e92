"""The task-adapter method interface: what the model and the strategy need from any adapter method.

A method is a package ``adapters/<method>/`` with a config (a dataclass that checks itself) whose
``attach(backbone)`` injects into the backbone and returns the method's adapter set. The set grows one
adapter per task key and applies a ``Route`` for one forward; what trains, what a checkpoint holds and
fusion go through these few members, so the model, the strategy and the checkpoint format never look
inside a method.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from cl_adapters.adapters.route import Route
from cl_adapters.errors import UserError


@runtime_checkable
class AdapterSet(Protocol):
    """One backbone's adapters of one method, keyed by task (or ``shared``)."""

    supports_fusion: bool  # AdapterFusion can mix its adapters (``add_fusion``, ``fusions``)
    supports_stack: bool  # a route key may be a ``Stack`` of its adapters

    def add(self, key: str) -> None:
        """Create ``key``'s adapter in every targeted layer (a no-op if it exists); it is identity at init."""

    def keys(self) -> list[str]:
        """The task keys with an adapter, in the order they were added."""

    def parameters(self, key: str) -> Iterator[nn.Parameter]:
        """``key``'s parameters: what trains on its task, and what its checkpoint holds."""

    def routed(self, route: Route) -> AbstractContextManager[None]:
        """Apply ``route`` to the forwards inside the block; afterwards no state or hook is left."""

    def task_state(self, key: str) -> dict[str, torch.Tensor]:
        """``key``'s adapter as named tensors (names without the key: loadable under another key)."""

    def load_task_state(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        """Create ``key``'s adapter if needed and load ``task_state`` tensors into it (``copy_state``)."""

    def remove(self, key: str) -> None:
        """Delete ``key``'s adapter everywhere (a composition made for one evaluation, e.g. an average)."""

    def merge(self, key: str) -> None:
        """Fold ``key``'s adapter into the base weights (a linear method only; others raise UserError):
        the bare backbone then computes that task's function, for serving one task at no extra cost."""


@runtime_checkable
class AdapterMethod(Protocol):
    """A method's config: ``attach`` injects into a backbone and returns its ``AdapterSet``."""

    def attach(self, backbone: nn.Module) -> AdapterSet: ...


def check_shared_fields(cfg) -> None:
    """The checks every adapter config needs: ``dropout``, ``targets`` and the rank ``r`` where it has one."""
    r = getattr(cfg, "r", 1)
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise UserError(f"adapter.r must be a positive integer, got {r!r}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise UserError(f"adapter.dropout must be in [0, 1), got {cfg.dropout!r}")
    if cfg.targets is not None:
        cfg.targets = list(cfg.targets)
        if not cfg.targets:
            raise UserError("adapter.targets must name at least one module pattern (or be null)")


def copy_state(own: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], what: str) -> None:
    """Copy ``tensors`` into the live tensors ``own``: the same names and shapes, or a UserError naming
    the first tensor that does not fit (``what``: whose state it is)."""
    if unknown := sorted(tensors.keys() - own.keys()):
        raise UserError(f"{what}: tensor {unknown[0]} is not in the model ({len(unknown)} such)")
    if missing := sorted(own.keys() - tensors.keys()):
        raise UserError(f"{what}: tensor {missing[0]} is missing ({len(missing)} such)")
    for name, tensor in own.items():
        if tensor.shape != tensors[name].shape:
            raise UserError(f"{what}: tensor {name} has shape {tuple(tensors[name].shape)}, the model {tuple(tensor.shape)}")
    with torch.no_grad():
        for name, tensor in own.items():
            tensor.copy_(tensors[name])
