"""A router learned on stored features, not raw data: after each task, up to ``memory`` of its samples'
backbone features are kept, and a multinomial logistic regression (scikit-learn) over every task's stored
features is fitted anew to predict the task. A discriminative boundary where class means alone are not
enough (cosine prototypes cannot tell two tasks apart whose features point the same way).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from cl_adapters.adapters.route import NO_ROUTE
from cl_adapters.errors import UserError
from cl_adapters.routers.base import Router, is_number


class LearnedRouter(Router):
    """``memory``: features kept per task (a fixed random subset per task, the global RNG untouched);
    ``C``: inverse L2 strength of the logistic regression, fitted on standardised features."""

    def __init__(self, memory: int = 500, C: float = 1.0):
        if isinstance(memory, bool) or not (isinstance(memory, int) and memory > 0):
            raise UserError(f"router.memory must be a positive integer, got {memory!r}")
        if not is_number(C) or not C > 0:
            raise UserError(f"router.C must be positive, got {C!r}")
        self.memory, self.C = memory, C
        self.tasks: dict[int, dict[str, torch.Tensor]] = {}  # task -> {"features": (<= memory, d)}
        self._linear: tuple[list[int], torch.Tensor, torch.Tensor] | None = None  # tasks, W (T, d), b (T,)

    @torch.no_grad()
    def fit(self, model, task: int, batches) -> None:
        f = torch.cat([model.features(x, NO_ROUTE).flatten(1).float().cpu() for x, _ in batches])
        if len(f) > self.memory:
            f = f[torch.randperm(len(f), generator=torch.Generator().manual_seed(task))[: self.memory]]
        self.tasks[task] = {"features": f}
        self._linear = None

    def task_state(self, task: int) -> dict[str, torch.Tensor]:
        return dict(self.tasks.get(task, {}))

    def load_task_state(self, task: int, tensors: dict[str, torch.Tensor]) -> None:
        if tensors:
            self.tasks[task] = {"features": tensors["features"].clone()}
            self._linear = None

    def _fit_linear(self, tasks: list[int]) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """Task scores as one linear map of the raw features (the standardisation folded into it)."""
        f = torch.cat([self.tasks[t]["features"] for t in tasks]).double().numpy()
        y = np.concatenate([np.full(len(self.tasks[t]["features"]), t) for t in tasks])
        mean, std = f.mean(0), f.std(0) + 1e-6
        clf = LogisticRegression(C=self.C, class_weight="balanced", max_iter=1000).fit((f - mean) / std, y)
        w = clf.coef_ / std
        b = clf.intercept_ - w @ mean
        if len(tasks) == 2:  # binary: sklearn gives one row, the score of the second task
            w, b = np.stack([np.zeros_like(w[0]), w[0]]), np.array([0.0, b[0]])
        return tasks, torch.from_numpy(w).float(), torch.from_numpy(b).float()

    @torch.no_grad()
    def predict(self, model, x: torch.Tensor, task_labels=None) -> torch.Tensor:
        tasks = [t for t in sorted(model.trained_tasks) if t in self.tasks]
        if len(tasks) == 1:
            return torch.full((len(x),), tasks[0], device=x.device, dtype=torch.long)
        if self._linear is None or self._linear[0] != tasks:
            self._linear = self._fit_linear(tasks)
        _, w, b = self._linear
        scores = model.features(x, NO_ROUTE).flatten(1).float() @ w.T.to(x.device) + b.to(x.device)
        return torch.tensor(tasks, device=x.device)[scores.argmax(1)]
