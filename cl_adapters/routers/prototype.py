"""Nearest-prototype routing (SimpleCIL/APER, EASE): after each task, the mean feature of each of its
classes; a test sample goes to the task of its nearest class mean over all classes seen.

``features``: ``backbone`` (the backbone without adapters: one pass, one feature space) or ``adapted``
(each task's classes in the features of its own adapter, as EASE; N passes batched into one).
``metric``: cosine similarity, or Mahalanobis distance with the classes' pooled covariance (shrunk
towards the identity by ``shrinkage``, per feature space).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cl_adapters.adapters.route import NO_ROUTE, Route
from cl_adapters.errors import UserError
from cl_adapters.routers.base import Router, every_task, is_number

FEATURES, METRICS = ("backbone", "adapted"), ("cosine", "mahalanobis")


class PrototypeRouter(Router):
    def __init__(self, features: str = "backbone", metric: str = "cosine", shrinkage: float = 0.1):
        if features not in FEATURES:
            raise UserError(f"router.features must be one of {FEATURES}, got {features!r}")
        if metric not in METRICS:
            raise UserError(f"router.metric must be one of {METRICS}, got {metric!r}")
        if not is_number(shrinkage) or not 0.0 <= shrinkage <= 1.0:
            raise UserError(f"router.shrinkage must be in [0, 1], got {shrinkage!r}")
        self.features, self.metric, self.shrinkage = features, metric, shrinkage
        self.tasks: dict[int, dict[str, torch.Tensor]] = {}  # task -> classes, means (and scatter, count)
        self._precisions: dict[tuple[int, ...], torch.Tensor] = {}  # per feature space, until the next task

    def _features(self, model, x: torch.Tensor, task: int) -> torch.Tensor:
        route = NO_ROUTE if self.features == "backbone" else Route.whole(str(task))
        return model.features(x, route).flatten(1).float()

    @torch.no_grad()
    def fit(self, model, task: int, batches) -> None:
        feats, labels = [], []
        for x, y in batches:
            feats.append(self._features(model, x, task).cpu())
            labels.append(y.cpu())
        f, y = torch.cat(feats).double(), torch.cat(labels)
        classes = torch.unique(y)
        means = torch.stack([f[y == c].mean(0) for c in classes])
        self.tasks[task] = {"classes": classes, "means": means.float()}
        if self.metric == "mahalanobis":  # the within-class scatter: d x d per task, kept only when used
            centred = f - means[torch.searchsorted(classes, y)]
            self.tasks[task] |= {"scatter": (centred.T @ centred).float(), "count": torch.tensor([len(f)])}
        self._precisions.clear()

    def task_state(self, task: int) -> dict[str, torch.Tensor]:
        return dict(self.tasks.get(task, {}))

    def load_task_state(self, task: int, tensors: dict[str, torch.Tensor]) -> None:
        if tensors:
            self.tasks[task] = {k: v.clone() for k, v in tensors.items()}
            self._precisions.clear()

    def _precision(self, tasks: list[int]) -> torch.Tensor:
        """The inverse of the classes' pooled within-class covariance over ``tasks``, shrunk (computed once
        per set of tasks, not per batch)."""
        key = tuple(tasks)
        if key not in self._precisions:
            self._precisions[key] = self._pooled_precision(tasks)
        return self._precisions[key]

    def _pooled_precision(self, tasks: list[int]) -> torch.Tensor:
        scatter = sum(self.tasks[t]["scatter"].double() for t in tasks)
        dof = sum(int(self.tasks[t]["count"]) - len(self.tasks[t]["classes"]) for t in tasks)
        cov = scatter / max(dof, 1)
        target = torch.eye(len(cov), dtype=cov.dtype) * cov.diagonal().mean()
        return torch.linalg.pinv((1 - self.shrinkage) * cov + self.shrinkage * target)

    def _scores(self, f: torch.Tensor, tasks: list[int]) -> torch.Tensor:
        """Higher is nearer: (B, classes of ``tasks``)."""
        means = torch.cat([self.tasks[t]["means"] for t in tasks]).to(f.device)
        if self.metric == "cosine":
            return F.normalize(f, dim=-1) @ F.normalize(means, dim=-1).T
        precision = self._precision(tasks).to(f.device)
        diff = f.double()[:, None, :] - means.double()[None, :, :]  # (B, C, d)
        return -torch.einsum("bcd,de,bce->bc", diff, precision, diff).float()

    @torch.no_grad()
    def predict(self, model, x: torch.Tensor, task_labels=None) -> torch.Tensor:
        tasks = [t for t in sorted(model.trained_tasks) if t in self.tasks]
        owner = torch.cat([torch.full((len(self.tasks[t]["classes"]),), t) for t in tasks]).to(x.device)
        if self.features == "backbone":
            scores = self._scores(self._features(model, x, tasks[0]), tasks)
        else:  # each task's classes scored in its own adapter's features
            _, route, copies = every_task(model, x)
            f = model.features(copies, route).flatten(1).float().view(len(model.trained_tasks), len(x), -1)
            order = sorted(model.trained_tasks)
            scores = torch.cat([self._scores(f[order.index(t)], [t]) for t in tasks], dim=1)
        return owner[scores.argmax(1)]
