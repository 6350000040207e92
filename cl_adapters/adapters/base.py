"""The task-adapter method interface: what the model and the strategy need from any adapter method.

A method is a package ``adapters/<method>/`` with a config (a dataclass that checks itself) whose
``attach(backbone)`` injects into the backbone and returns the method's adapter set. The set grows one
adapter per task key and applies a ``Route`` for one forward; what trains, what a checkpoint holds and
fusion go through these few members, so the model, the strategy and the checkpoint format never look
inside a method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from cl_adapters.adapters.route import Route
from cl_adapters.errors import UserError, check_contract

CAPABILITIES = frozenset({"fusion", "stack", "merge"})  # what a method may add to the members every set has


class AdapterSet(ABC):
    """One backbone's adapters of one method, keyed by task (or ``shared``). Every method's set subclasses it
    (the model refuses one that does not, naming what it lacks).

    ``capabilities`` declares which optional compositions the method supports, as AdapterHub's
    ``supported_compositions``: ``fusion`` (AdapterFusion mixes its adapters: ``add_fusion``, ``fusions``),
    ``stack`` (a route key may be a ``Stack`` of its adapters), ``merge`` (``merge`` folds an adapter into
    the base weights). The model checks them once, when it is built; a capability's method left to its
    default refuses in one line."""

    capabilities: frozenset[str] = frozenset()
    layer_names: list[str]  # the modules it adapted, in module order (exports, fusion attention)

    @abstractmethod
    def add(self, key: str) -> None:
        """Create ``key``'s adapter in every targeted layer (a no-op if it exists); it is identity at init."""

    @abstractmethod
    def keys(self) -> list[str]:
        """The task keys with an adapter, in the order they were added."""

    @abstractmethod
    def parameters(self, key: str) -> Iterator[nn.Parameter]:
        """``key``'s parameters: what trains on its task, and what its checkpoint holds."""

    @abstractmethod
    def routed(self, route: Route) -> AbstractContextManager[None]:
        """Apply ``route`` to the forwards inside the block; afterwards no state or hook is left."""

    @abstractmethod
    def task_state(self, key: str) -> dict[str, torch.Tensor]:
        """``key``'s adapter as named tensors (names without the key: loadable under another key)."""

    @abstractmethod
    def load_task_state(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        """Create ``key``'s adapter if needed and load ``task_state`` tensors into it (``copy_state``)."""

    @abstractmethod
    def remove(self, key: str) -> None:
        """Delete ``key``'s adapter everywhere (a composition made for one evaluation, e.g. an average)."""

    def every_parameter(self) -> Iterator[nn.Parameter]:
        """Every adapter's and fusion's parameters: modules inside the backbone that its bare forward (no
        route) does not use."""
        for key in self.keys():
            yield from self.parameters(key)
            for fusion in self.fusions(key):
                yield from fusion.parameters()

    def merge(self, key: str) -> None:
        """(``merge``) Fold ``key``'s adapter into the base weights (a linear method): the bare backbone then
        computes that task's function, for serving one task at no extra cost."""
        raise self._unsupported("merge")

    def add_fusion(self, key: str, over: list[str], cfg) -> None:
        """(``fusion``) A fusion for task ``key`` over the adapters ``over``, in every layer."""
        raise self._unsupported("fusion")

    def fusions(self, key: str) -> list:
        """(``fusion``) Task ``key``'s fusion in every layer; none without the capability."""
        return []

    def _unsupported(self, capability: str, why: str = "") -> UserError:
        """The one-line refusal of a capability the method lacks (``why``: the method's own reason)."""
        why = why or f"it supports {', '.join(sorted(self.capabilities)) or 'none of ' + ', '.join(sorted(CAPABILITIES))}"
        return UserError(f"adapter {type(self).__name__} does not support {capability}: {why}")


class LayerwiseAdapters(AdapterSet):
    """A set whose adapters live in its wrapped layers, each layer holding one module per task key in the
    ``nn.ModuleDict`` named ``task_modules`` (the bottleneck's ``adapters``, SSF's ``ssf``): the bookkeeping
    such methods share. A subclass sets ``layers``, ``layer_names`` and ``task_modules`` and writes ``add``."""

    task_modules: str
    layers: list[nn.Module]

    def _of(self, layer: nn.Module) -> nn.ModuleDict:
        return getattr(layer, self.task_modules)

    def keys(self) -> list[str]:
        return list(self._of(self.layers[0]))

    def parameters(self, key: str) -> Iterator[nn.Parameter]:
        for layer in self.layers:
            yield from self._of(layer)[key].parameters()

    def task_state(self, key: str) -> dict[str, torch.Tensor]:
        return {f"{name}.{k}": t for name, layer in zip(self.layer_names, self.layers)
                for k, t in self._of(layer)[key].state_dict().items()}

    def load_task_state(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        self.add(key)
        copy_state(self.task_state(key), tensors, f"adapter {key}")

    def remove(self, key: str) -> None:
        for layer in self.layers:
            del self._of(layer)[key]


def check_adapter_set(adapters, method) -> None:
    """What ``method.attach`` returned meets the contract: an ``AdapterSet`` declaring known capabilities."""
    key = f"adapter ({type(method).__name__}.attach)"
    check_contract(adapters, AdapterSet, key)
    if unknown := sorted(set(adapters.capabilities) - CAPABILITIES):
        raise UserError(f"{key}: unknown capabilities {unknown}; they are {sorted(CAPABILITIES)}")
    if not isinstance(getattr(adapters, "layer_names", None), list):
        raise UserError(f"{key}: {type(adapters).__name__}.layer_names must be the list of the modules it adapted")


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
