"""Routing as a value: which task's adapter each sample of one forward goes through.

A group's key is a task key, or a ``Stack`` of them (AdapterHub's composition block): the adapters
applied in order, e.g. a first task's frozen adapter and then the task's own.

A ``Route`` is made from task labels (task-incremental) or from a router's predictions (no task labels:
``cl_adapters/routers``); an adapter set applies it for one forward only (``with adapters.routed(route): backbone(x)``)
and clears every trace afterwards: no layer state, no hook outlives the forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Stack:
    """Adapters applied one after another: each reads what the one before produced."""

    keys: tuple[str, ...]

    def __str__(self) -> str:
        return ">".join(self.keys)


def stacked_keys(key: str | Stack) -> tuple[str, ...]:
    """The task keys a route key applies, in order."""
    return key.keys if isinstance(key, Stack) else (key,)


@dataclass(frozen=True)
class Route:
    """``groups``: one (task key, indices of its samples, or None for the whole batch) per task."""

    groups: tuple[tuple[str | Stack, torch.Tensor | None], ...] = ()

    @classmethod
    def whole(cls, key: str) -> Route:
        """Every sample through ``key``'s adapter."""
        return cls(((key, None),))

    @classmethod
    def from_labels(cls, task_labels: torch.Tensor | int) -> Route:
        """Each sample through its own task's adapter (the task key is the label as a string)."""
        if isinstance(task_labels, int):
            return cls.whole(str(task_labels))
        tasks = torch.unique(task_labels)
        if len(tasks) == 1:
            return cls.whole(str(int(tasks[0])))
        return cls(tuple((str(int(t)), torch.nonzero(task_labels == t).squeeze(1)) for t in tasks))

    def map(self, fn) -> Route:
        """The same groups with each key replaced by ``fn(key)``."""
        return Route(tuple((fn(key), idx) for key, idx in self.groups))

    def per_sample(self) -> list[str]:
        """The task key of each sample, in batch order (a multi-task route)."""
        keys = [""] * sum(len(idx) for _, idx in self.groups)
        for key, idx in self.groups:
            for i in idx.tolist():
                keys[i] = key
        return keys

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor | None]]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor | None]:
        return self.groups[i]


NO_ROUTE = Route()  # between forwards: every adapted layer is its bare base layer
