"""AdaptedModel: a backbone that grows a head (and, with adapters, an adapter set) per task."""

from __future__ import annotations

import torch
from avalanche.models import DynamicModule
from torch import nn

from cl_adapters.adapters import AdapterConfig, inject_adapters
from cl_adapters.errors import UserError

BACKBONE_POLICIES = ("auto", "first", "all", "never")


def task_key(task: int) -> str:
    return str(int(task))


class AdaptedModel(DynamicModule):
    """Backbone + per-task heads (+ per-task adapters when ``adapter`` is given).

    Parts for a task are created in ``adaptation()``, which Avalanche calls before it rebuilds the
    optimizer. On each training experience only that task's adapter and head train; the backbone
    trains according to ``train_backbone``: ``all`` (sequential fine-tuning), ``first`` (first-session
    adaptation, then frozen, as in APER), ``never``, or ``auto`` (= first unless pretrained).
    """

    def __init__(self, backbone: nn.Module, adapter: AdapterConfig | None = None, train_backbone: str = "auto"):
        super().__init__()
        if train_backbone not in BACKBONE_POLICIES:
            raise UserError(f"strategy.model.train_backbone must be one of {BACKBONE_POLICIES}, got {train_backbone!r}")
        if train_backbone == "auto":
            train_backbone = "never" if getattr(backbone, "pretrained", False) else "first"
        self.train_backbone = train_backbone
        self.adapter_config = adapter
        self.backbone = backbone
        # a plain list: the layers are registered once, inside the backbone
        self.adapter_layers = list(inject_adapters(backbone, adapter).values()) if adapter else []
        self.heads = nn.ModuleDict()
        self.trained_tasks: list[int] = []

    # -- growth ---------------------------------------------------------------------------------
    def adaptation(self, experience) -> None:
        if self.training and len(experience.task_labels) != 1:
            raise UserError(f"training experience {experience.current_experience} mixes tasks {experience.task_labels}")
        for task in experience.task_labels:
            self.add_task(int(task), _n_classes(experience), train=self.training)

    def add_task(self, task: int, n_classes: int, train: bool = True) -> None:
        """Create ``task``'s head if new; with ``train``, also its adapters, and make only its parts
        (plus the backbone, if the policy says so) trainable. Evaluation only needs the head."""
        key = task_key(task)
        if key not in self.heads:
            self.heads[key] = nn.Linear(self.backbone.out_features, n_classes).to(self._adaptation_device)
        if not train:
            return
        if self.adapter_config is not None:
            for layer in self.adapter_layers:
                if key not in layer.adapters:
                    layer.add(key, self.adapter_config)
        self.set_trainable(task)
        self.trained_tasks.append(task)

    def set_trainable(self, task: int) -> None:
        """Only ``task``'s parts train (plus the backbone if the policy says so); the rest is frozen."""
        first = not self.trained_tasks
        train_base = self.train_backbone == "all" or (self.train_backbone == "first" and first)
        self.requires_grad_(train_base)  # backbone weights; task parts are set below
        for key, head in self.heads.items():
            head.requires_grad_(key == task_key(task))
        for layer in self.adapter_layers:
            for key, adapter in layer.adapters.items():
                adapter.requires_grad_(key == task_key(task))

    def task_parameters(self, task: int) -> dict[str, nn.Parameter]:
        """The parameters that belong to ``task`` alone (its adapters and head)."""
        key = task_key(task)
        return {
            n: p
            for n, p in self.named_parameters()
            if n.startswith(f"heads.{key}.") or f".adapters.{key}." in n
        }

    # -- forward --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, task_labels: torch.Tensor | int) -> torch.Tensor:
        """Route each sample through its own task's adapters and head.

        Returns (B, max classes) logits; a task with fewer classes gets -inf in the unused columns.
        """
        route = _route(task_labels, len(x))
        for layer in self.adapter_layers:
            layer.route = route
        features = self.backbone(x)
        if len(route) == 1:
            return self.heads[route[0][0]](features)
        width = max(self.heads[key].out_features for key, _ in route)
        out = features.new_full((len(x), width), float("-inf"))
        for key, idx in route:
            logits = self.heads[key](features[idx])
            cols = torch.arange(logits.shape[1], device=x.device)
            out = out.index_put((idx[:, None], cols[None, :]), logits)
        return out


def _route(task_labels: torch.Tensor | int, batch: int) -> list[tuple[str, torch.Tensor | None]]:
    if isinstance(task_labels, int):
        return [(task_key(task_labels), None)]
    tasks = torch.unique(task_labels)
    if len(tasks) == 1:
        return [(task_key(tasks[0]), None)]
    return [(task_key(t), torch.nonzero(task_labels == t).squeeze(1)) for t in tasks]


def _n_classes(experience) -> int:
    """Head width: the stream's declared classes for the task, else the largest label + 1."""
    declared = getattr(experience, "n_classes", None)
    if declared is not None:
        return int(declared)
    return int(max(experience.dataset.targets.uniques)) + 1
