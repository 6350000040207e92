"""AdaptedModel: a backbone that grows a head (and, with adapters, an adapter) per task."""

from __future__ import annotations

import torch
from avalanche.models import MultiTaskModule
from torch import nn

from cl_adapters.adapters import FusionConfig
from cl_adapters.adapters.base import AdapterMethod
from cl_adapters.adapters.route import Route
from cl_adapters.errors import UserError
from cl_adapters.models.contract import check_backbone

BACKBONE_POLICIES = ("auto", "first", "all", "never")
SHARED = "shared"  # the adapter key when one adapter serves every task


def task_key(task: int) -> str:
    return str(int(task))


class AdaptedModel(MultiTaskModule):
    """Backbone + per-task heads (+ adapters when ``adapter`` is given: bottleneck or LoRA).

    Parts for a task are created in ``adaptation()``, which Avalanche calls before it rebuilds the
    optimizer. What trains on a task:
    - its head, and its own adapter (``per_task``) or the one adapter all tasks share (not per_task);
    - the backbone weights per ``train_backbone``: ``all`` (sequential fine-tuning), ``first``
      (first-session adaptation, then frozen, as in APER), ``never``, or ``auto`` (= first unless
      pretrained); with ``train_biases`` its biases keep training after that (BitFit);
    - earlier tasks' heads too whenever a shared part trains (replay, LwF and joint training need
      them); with per-task adapters on a frozen backbone nothing of an earlier task changes.

    With ``fusion`` (AdapterFusion), every task from the second on also gets its own fusion over the
    adapters so far: trained after its adapter (``two_stage``: the strategy runs ``stages()`` rounds
    of epochs, calling ``next_stage()`` in between) or together with it (``joint``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        adapter: AdapterMethod | None = None,
        *,
        per_task: bool = True,
        train_backbone: str = "auto",
        train_biases: bool = False,
        fusion: FusionConfig | None = None,
    ):
        super().__init__()
        check_backbone(backbone)
        if train_backbone not in BACKBONE_POLICIES:
            raise UserError(f"strategy.model.train_backbone must be one of {BACKBONE_POLICIES}, got {train_backbone!r}")
        if train_backbone == "auto":
            train_backbone = "never" if backbone.pretrained else "first"
        self.train_backbone = train_backbone
        self.train_biases = train_biases
        self.per_task = per_task
        self.adapter_config = adapter
        self.backbone = backbone
        self.adapters = adapter.attach(backbone) if adapter is not None else None  # layers live in the backbone
        self.heads = nn.ModuleDict()
        self.trained_tasks: list[int] = []
        self.fusion = fusion
        supports_fusion = self.adapters is not None and self.adapters.supports_fusion
        if fusion is not None and not (supports_fusion and per_task and not self.shares_training):
            raise UserError("fusion needs per-task bottleneck adapters on a frozen backbone "
                            "(strategy=adapter_fusion: adapter=houlsby|pfeiffer|parallel, train_backbone first|never)")

    @property
    def shares_training(self) -> bool:
        """Whether anything shared between tasks trains after the first one (what CL plugins act on)."""
        return self.train_backbone == "all" or self.train_biases or (self.adapters is not None and not self.per_task)

    def adapter_key(self, task: int) -> str:
        return task_key(task) if self.per_task else SHARED

    # -- growth ---------------------------------------------------------------------------------
    def adaptation(self, experience) -> None:
        if self.training and len(experience.task_labels) != 1:
            raise UserError(f"training experience {experience.current_experience} mixes tasks {experience.task_labels}")
        for task in experience.task_labels:
            self.add_task(int(task), _n_classes(experience), train=self.training)

    def add_task(self, task: int, n_classes: int, train: bool = True) -> None:
        """Create ``task``'s head if new; with ``train``, also its adapter, and set what trains.
        Evaluation only needs the head."""
        key = task_key(task)
        if key not in self.heads:
            self.heads[key] = nn.Linear(self.backbone.out_features, n_classes).to(self._adaptation_device)
        if not train:
            return
        if self.adapters is not None:
            self.adapters.add(self.adapter_key(task))
        if self._fusable(task) and self.fusion.mode == "joint":
            self._add_fusion(task)
        self.set_trainable(task)
        self.trained_tasks.append(task)

    def restore_task(self, task: int, n_classes: int, fusion_over: list[str] | None = None) -> None:
        """Create ``task``'s head, adapter and fusion as they were trained, to load weights into."""
        self.add_task(task, n_classes, train=False)
        if self.adapters is not None:
            self.adapters.add(self.adapter_key(task))
        if fusion_over:
            self.adapters.add_fusion(task_key(task), fusion_over, self.fusion)
        if task not in self.trained_tasks:
            self.trained_tasks.append(task)

    def _fusable(self, task: int) -> bool:
        """A fusion needs something to mix: the task's adapter and at least one earlier one."""
        return self.fusion is not None and self.adapters.keys().index(task_key(task)) > 0

    def fusions(self, task: int) -> list:
        """``task``'s fusion in every adapted layer (empty without one)."""
        return self.adapters.fusions(task_key(task)) if self.fusion is not None else []

    def _add_fusion(self, task: int) -> None:
        keys = self.adapters.keys()
        self.adapters.add_fusion(task_key(task), keys[: keys.index(task_key(task)) + 1], self.fusion)

    def stages(self) -> int:
        """Training stages of the task being trained: 2 for two-stage fusion (adapter, then fusion)."""
        task = self.trained_tasks[-1]
        return 2 if self._fusable(task) and self.fusion.mode == "two_stage" else 1

    def next_stage(self) -> None:
        """Two-stage fusion's second stage: the task's fusion trains, every adapter is frozen."""
        task = self.trained_tasks[-1]
        self._add_fusion(task)
        self.set_trainable(task)

    def penalty(self) -> torch.Tensor | float:
        """Extra training loss: the paper's ``||V - I||^2`` on the fusion being trained."""
        if self.fusion is None or not self.fusion.regularization or not self.trained_tasks:
            return 0.0
        fusions = self.fusions(self.trained_tasks[-1])
        return self.fusion.regularization * sum(f.value_penalty() for f in fusions) if fusions else 0.0

    def set_trainable(self, task: int) -> None:
        """``requires_grad`` on exactly what trains on ``task`` (see the class docstring)."""
        train_base = self.train_backbone == "all" or (self.train_backbone == "first" and not self.trained_tasks)
        self.requires_grad_(train_base)
        if self.train_biases and not train_base:
            for name, p in self.backbone.named_parameters():
                if name.endswith("bias"):
                    p.requires_grad_(True)
        if self.adapters is not None:
            own, fusions = self.adapter_key(task), self.fusions(task)
            train_adapter = not (fusions and self.fusion.mode == "two_stage")
            for key in self.adapters.keys():
                for p in self.adapters.parameters(key):
                    p.requires_grad_(key == own and train_adapter)
            for fusion in fusions:  # earlier tasks' fusions were frozen with the backbone above
                fusion.requires_grad_(True)
        seen = {task_key(t) for t in self.trained_tasks} if self.shares_training else set()
        for key, head in self.heads.items():
            head.requires_grad_(key == task_key(task) or key in seen)

    def owns_adapter(self, task: int) -> bool:
        """Whether ``task`` has an adapter (and fusion) of its own, rather than none or a shared one."""
        return self.adapters is not None and self.per_task and task_key(task) in self.adapters.keys()

    def task_parameters(self, task: int) -> dict[str, nn.Parameter]:
        """The parameters that belong to ``task`` alone: its head and, if per task, its adapter and fusion."""
        key = task_key(task)
        own = set(map(id, self.heads[key].parameters()))
        if self.owns_adapter(task):
            own |= set(map(id, self.adapters.parameters(key)))
            own |= {id(p) for fusion in self.fusions(task) for p in fusion.parameters()}
        return {n: p for n, p in self.named_parameters() if id(p) in own}

    def fusion_attention(self, task: int) -> dict | None:
        """Task's mean fusion attention per layer over the tokens it saw in eval mode (None: no fusion)."""
        fusions = self.fusions(task)
        if not fusions:
            return None
        return {"adapters": fusions[0].keys, "layers": self.adapters.layer_names,
                "weights": [f.mean_attention() for f in fusions]}

    # -- forward --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, task_labels: torch.Tensor | int | None) -> torch.Tensor | dict:
        """Route each sample through its own task's adapter and head.

        Returns (B, max classes) logits; a task with fewer classes gets -inf in the unused columns.
        ``task_labels=None`` gives {task: logits} for every trained task (what LwF distils).
        """
        if task_labels is None:
            return self.forward_all_tasks(x)
        route = task_labels if isinstance(task_labels, Route) else Route.from_labels(task_labels)
        features = self.features(x, route)
        if len(route) == 1:
            return self.heads[route[0][0]](features)
        width = max(self.heads[key].out_features for key, _ in route)
        out = features.new_full((len(x), width), float("-inf"))
        for key, idx in route:
            logits = self.heads[key](features[idx])
            cols = torch.arange(logits.shape[1], device=x.device)
            out = out.index_put((idx[:, None], cols[None, :]), logits)
        return out

    def features(self, x: torch.Tensor, route: Route) -> torch.Tensor:
        """The backbone's features with each sample through the adapter ``route`` gives it (the shared
        adapter when there is one for all tasks), for this forward only."""
        if self.adapters is None:
            return self.backbone(x)
        with self.adapters.routed(route if self.per_task else Route.whole(SHARED)):
            return self.backbone(x)

    def forward_all_tasks(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """{task: logits} for every trained task: what LwF distils (Avalanche calls ``forward(x, None)``)."""
        if self.adapters is not None and self.per_task:
            return {t: self.forward(x, t) for t in self.trained_tasks}
        features = self.features(x, Route.whole(SHARED))
        return {t: self.heads[task_key(t)](features) for t in self.trained_tasks}


def _n_classes(experience) -> int:
    """Head width: the stream's declared classes for the task, else the largest label + 1."""
    declared = getattr(experience, "n_classes", None)
    if declared is not None:
        return int(declared)
    return int(max(experience.dataset.targets.uniques)) + 1
