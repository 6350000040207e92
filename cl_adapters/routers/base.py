"""The router base class, and the one batched pass that scores every trained task's adapter at once."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

import torch

from cl_adapters.adapters.route import Route


class Router(ABC):
    """What the model and the checkpoint call on a router; every router subclasses it (the model refuses one
    that does not, naming what it lacks). ``predict`` is the one method to write; ``fit``, ``task_state`` and
    ``load_task_state`` default to keeping nothing (the oracle, entropy). A router that fits something per
    task overrides all three, so that a checkpoint, a resumed run and a served model keep what it fitted."""

    @abstractmethod
    def predict(self, model, x: torch.Tensor, task_labels: torch.Tensor | int | None = None) -> torch.Tensor:
        """A trained task per sample, (B,) long. ``task_labels`` is read by the oracle only."""

    def fit(self, model, task: int, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """After ``task`` is trained: learn what routing needs from its training data (model in eval mode)."""

    def task_state(self, task: int) -> dict[str, torch.Tensor]:
        """What the router keeps of ``task`` (a checkpoint's ``router.*`` tensors)."""
        return {}

    def load_task_state(self, task: int, tensors: dict[str, torch.Tensor]) -> None:
        """Restore ``task_state``'s tensors (a resumed run, a loaded model)."""


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
