"""The router interface, and the one batched pass that scores every trained task's adapter at once."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import torch

from cl_adapters.adapters.route import Route


@runtime_checkable
class Router(Protocol):
    def predict(self, model, x: torch.Tensor, task_labels: torch.Tensor | int) -> torch.Tensor:
        """A trained task per sample, (B,) long. ``task_labels`` is read by the oracle only."""

    def fit(self, model, task: int, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """After ``task`` is trained: learn what routing needs from its training data (model in eval mode)."""

    def task_state(self, task: int) -> dict[str, torch.Tensor]:
        """What the router keeps of ``task`` (a checkpoint's ``router.*`` tensors)."""

    def load_task_state(self, task: int, tensors: dict[str, torch.Tensor]) -> None: ...


class Stateless:
    """fit/task_state/load_task_state for routers that keep nothing per task."""

    def fit(self, model, task: int, batches) -> None:
        pass

    def task_state(self, task: int) -> dict[str, torch.Tensor]:
        return {}

    def load_task_state(self, task: int, tensors: dict[str, torch.Tensor]) -> None:
        pass


def is_number(value) -> bool:
    """A real number from the config (a string or a bool there is a typo)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def every_task(model, x: torch.Tensor) -> tuple[list[int], Route, torch.Tensor]:
    """(trained tasks, a route sending copy i of the batch through task i's adapter, the copies): N tasks
    scored in one forward of N x B samples (the per-sample routing of the adapter layers)."""
    tasks = sorted(model.trained_tasks)
    copies = x.repeat(len(tasks), *([1] * (x.dim() - 1)))
    labels = torch.tensor(tasks, device=x.device).repeat_interleave(len(x))
    return tasks, Route.from_labels(labels), copies
