"""Routing as a value: which task's adapter each sample of one forward goes through.

A ``Route`` is made from task labels (task-incremental) or from a router's predictions (no task labels:
``cl_adapters/routers``); an adapter set applies it for one forward only (``with adapters.routed(route): backbone(x)``)
and clears every trace afterwards: no layer state, no hook outlives the forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Route:
    """``groups``: one (task key, indices of its samples, or None for the whole batch) per task."""

    groups: tuple[tuple[str, torch.Tensor | None], ...] = ()

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
