"""AdaptedModel: a backbone that grows a head (and, with adapters, an adapter) per task."""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import torch
from avalanche.models import MultiTaskModule
from torch import nn

from cl_adapters.adapters import FusionConfig
from cl_adapters.adapters.base import AdapterMethod, check_adapter_set
from cl_adapters.adapters.route import Route, Stack
from cl_adapters.avalanche_compat import adaptation_device
from cl_adapters.errors import UserError, check_contract
from cl_adapters.models.contract import check_backbone
from cl_adapters.models.fusion_choice import data_signature, relevant_adapters
from cl_adapters.models import classifiers
from cl_adapters.models.keys import SHARED, task_key
from cl_adapters.models.quantize import quantize_linears
from cl_adapters.models.walks import all_on, parameters, set_training
from cl_adapters.routers.base import Router
from cl_adapters.streams.base import SCENARIOS

BACKBONE_POLICIES = ("auto", "first", "all", "never")


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

    ``scenario`` (``streams/base.py``): with ``task_il`` a test sample's task label picks its head and
    adapter. With ``class_il``/``domain_il`` the test label is not used: per-task adapters keep a head
    per task and a ``router`` predicts each sample's task (``cl_adapters/routers``); every other model has
    one head over the classes trained so far (it grows in class_il, as Avalanche's IncrementalClassifier).
    ``classifier`` picks the heads' kind (``classifiers/``: linear, ncm, ...; ``classifier_options`` its
    options): ``ncm`` (strategy=ncm, SimpleCIL) makes every head a ``PrototypeHead``, class means fitted after
    each task (``fit_task``) scoring the samples; nothing of a fitted kind trains once the backbone is frozen.
    Heads map their columns to label ids (``head_classes``); logits come out over all label ids known,
    with -inf where the sample's head has no column. ``given_task_labels()`` evaluates with the labels
    anyway (the task-IL accuracy of the same model: the TIL-CIL gap); ``adapter_override`` sends every
    sample through one adapter (``compositions.averaged_adapter``). With ``stack_on`` = s, every later task's
    adapter trains and runs stacked on task s's adapter, frozen after its task (``Stack``: e.g. a domain
    adapter learnt on the first task under each task's own).
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
        scenario: str = "task_il",
        router=None,
        classifier: str = "linear",
        classifier_options: dict | None = None,
        stack_on: int | None = None,
    ):
        super().__init__()
        check_backbone(backbone)
        if scenario not in SCENARIOS:
            raise UserError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
        if train_backbone not in BACKBONE_POLICIES:
            raise UserError(f"strategy.model.train_backbone must be one of {BACKBONE_POLICIES}, got {train_backbone!r}")
        self.head_kind = classifiers.resolve(classifier)
        self.head_options = self.head_kind.configure(classifier_options)
        self.head_kind.check_model(adapter)
        if router is not None:
            check_contract(router, Router, "strategy.model.router")
        if train_backbone == "auto":
            train_backbone = "never" if backbone.pretrained else "first"
        quantize = getattr(backbone, "quantize", None)
        if quantize and (train_backbone == "all" or (getattr(backbone, "quantized", None) and train_backbone != "never")):
            raise UserError(f"model.quantize={quantize}: a quantized base cannot train (train_backbone="
                            f"{train_backbone}: full_ft, joint, single_task); train adapters, LoRAs or fusions on it")
        self.train_backbone = train_backbone
        self.train_biases = train_biases
        self.per_task = per_task
        self.adapter_config = adapter
        self.backbone = backbone
        self._base_linears = [m for m in backbone.modules() if type(m) is nn.Linear]  # before adapters wrap any
        if train_backbone == "never":
            self.quantize_frozen_backbone()
        self.adapters = adapter.attach(backbone) if adapter is not None else None  # layers live in the backbone
        if self.adapters is not None:
            check_adapter_set(self.adapters, adapter)
        self.heads = nn.ModuleDict()
        self.classifier = classifier
        self.task_classes: dict[int, list[int]] = {}  # task -> its label ids (from the stream)
        self.trained_tasks: list[int] = []
        self.scenario = scenario
        self.labels_at_test = scenario == "task_il"
        self.head_per_task = scenario == "task_il" or (self.adapters is not None and per_task)
        self.router = router if self.head_per_task and scenario != "task_il" else None
        if self.head_per_task and scenario != "task_il" and router is None:
            raise UserError(f"scenario={scenario} gives no task label at test time: per-task adapters need a router "
                            "(router=prototype | entropy; router=oracle uses the true task label, the task-IL bound)")
        self.task_id_counts: Counter = Counter()  # (true task, routed task) -> samples, while routing
        self.adapter_override: str | None = None  # while set, every sample goes through this adapter
        self.feature_cache = None  # a FeatureCache the run sets: the frozen base's features from disk
        self.fusion_over: dict[int, list[str]] = {}  # task -> the adapters its fusion mixes (fusion.top_k)
        self.signatures: dict[int, torch.Tensor] = {}  # task -> its data signature (fusion.candidates)
        self.fusion = fusion
        self.stack_on = stack_on
        if stack_on is not None:
            if isinstance(stack_on, bool) or not isinstance(stack_on, int) or stack_on < 0:
                raise UserError(f"strategy.model.stack_on must be a task index >= 0 or null, got {stack_on!r}")
            if self.adapters is None or not per_task or fusion is not None or "stack" not in self.adapters.capabilities:
                raise UserError("strategy.model.stack_on stacks per-task adapters (strategy=adapter | lora_per_task; "
                                "bottleneck adapters or LoRA, without fusion)")
        fusable = self.adapters is not None and "fusion" in self.adapters.capabilities
        if fusion is not None and not (fusable and per_task and not self.shares_training):
            raise UserError("fusion needs per-task bottleneck adapters on a frozen backbone "
                            "(strategy=adapter_fusion: adapter=houlsby|pfeiffer|parallel, train_backbone first|never)")

    @property
    def shares_training(self) -> bool:
        """Whether anything shared between tasks trains after the first one (what CL plugins act on)."""
        return self.train_backbone == "all" or self.train_biases or (self.adapters is not None and not self.per_task)

    def adapter_key(self, task: int) -> str:
        return task_key(task) if self.per_task else SHARED

    def head_key(self, task: int) -> str:
        return task_key(task) if self.head_per_task else SHARED

    # -- growth ---------------------------------------------------------------------------------
    def adaptation(self, experience) -> None:
        if self.training and len(experience.task_labels) != 1:
            raise UserError(f"training experience {experience.current_experience} mixes tasks {experience.task_labels}")
        for task in experience.task_labels:
            self.add_task(int(task), _classes(experience), train=self.training, data=experience.dataset)

    def add_task(self, task: int, classes: int | list[int], train: bool = True, data=None) -> None:
        """Create ``task``'s head if new (``classes``: its label ids, or how many: 0..n-1); with ``train``,
        also its adapter, and set what trains. Evaluation only needs the head (a shared head's columns
        of classes not trained yet are masked, see ``logits``). ``data``: the task's training samples,
        from which ``fusion.top_k`` picks the adapters its fusion mixes."""
        classes = list(range(classes)) if isinstance(classes, int) else [int(c) for c in classes]
        self.task_classes[task] = classes
        self.add_head(self.head_key(task), classes)
        if not train:
            return
        if self.adapters is not None:
            self.adapters.add(self.adapter_key(task))
        if self._fusable(task) and self.fusion.top_k is not None and data is not None:
            self.fusion_over[task] = relevant_adapters(self, task, data)
        if self._fusable(task) and self.fusion.mode == "joint":
            self._add_fusion(task)
        self.set_trainable(task)
        self.trained_tasks.append(task)

    @property
    def head_classes(self) -> dict[str, list[int]]:
        """head key -> the label id of each of its columns."""
        return {key: head.classes for key, head in self.heads.items()}

    def add_head(self, key: str, classes: list[int]) -> None:
        """Create head ``key`` over ``classes``, or grow it by the ones it lacks (old columns kept)."""
        known = self.heads[key].classes if key in self.heads else []
        new = [c for c in classes if c not in known]
        if key in self.heads and not new:
            return
        if key in self.heads:
            head = self.heads[key].grown(known + new)
        else:
            head = self.head_kind(self.backbone.out_features, known + new, **self.head_options)
        self.heads[key] = head.to(adaptation_device(self)).train(self.training)

    def restore_task(self, task: int, classes: int | list[int], fusion_over: list[str] | None = None) -> None:
        """Create ``task``'s head, adapter and fusion as they were trained, to load weights into."""
        self.add_task(task, classes, train=False)
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
        over = self.fusion_over.get(task) or keys[: keys.index(task_key(task)) + 1]
        self.adapters.add_fusion(task_key(task), over, self.fusion)

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
        """``requires_grad`` on exactly what trains on ``task`` (see the class docstring), in one pass over the
        parameters: a long stream's model has thousands, and this runs at every task and stage."""
        train_base = self.train_backbone == "all" or (self.train_backbone == "first" and not self.trained_tasks)
        trains = {}  # id(parameter) -> whether it trains, where that is not train_base; later entries win
        if self.train_biases and not train_base:
            trains.update((id(p), True) for name, p in self.backbone.named_parameters() if name.endswith("bias"))
        if self.adapters is not None:
            own, fusions = self.adapter_key(task), self.fusions(task)
            train_adapter = not (fusions and self.fusion.mode == "two_stage")
            # with the whole backbone frozen, the other adapters are frozen with it: not listed one by one
            for key in self.adapters.keys() if train_base or self.train_biases else [own]:
                trains.update((id(p), key == own and train_adapter) for p in self.adapters.parameters(key))
            trains.update((id(p), True) for fusion in fusions for p in fusion.parameters())  # earlier ones: frozen with the base
        seen = {self.head_key(t) for t in self.trained_tasks} if self.shares_training else set()
        for key, head in self.heads.items():  # class means are fitted, not trained: their head trains with the backbone
            train_head = (key == self.head_key(task) or key in seen) and (not self.head_kind.fitted or train_base)
            if train_head != train_base:
                trains.update((id(p), train_head) for p in head.parameters())
        for p in parameters(self):
            p.requires_grad_(trains.get(id(p), train_base))

    def end_task_training(self, task: int, data) -> None:
        """After ``task``'s training on ``data``, before its evaluation (the strategy calls it): what is
        settled on the backbone later tasks see. With ``model.quantize`` a backbone that trains no more is
        stored quantized from now on, so every accuracy is read from the base later tasks see (BWT stays
        exactly 0); with ``fusion.candidates`` the task's data signature is taken."""
        self.quantize_frozen_backbone()
        if self.fusion is not None and self.fusion.candidates is not None:
            self.signatures[task] = data_signature(self, data)

    def quantize_frozen_backbone(self) -> None:
        """With ``model.quantize``, once the backbone trains no more (a from-scratch one after task 1, with
        train_backbone=first), its own Linear weights are stored quantized (``quantize.py``)."""
        kind = getattr(self.backbone, "quantize", None)
        if kind and not self.backbone.quantized:  # (a base that would train after it is refused above)
            quantize_linears(self.backbone, kind, only=self._base_linears)
            self.backbone.quantized = kind

    def trains(self) -> bool:
        """Whether anything trains on the current task (strategy=ncm after its first task: nothing)."""
        return any(p.requires_grad for p in parameters(self))

    @torch.no_grad()
    def fit_task(self, task: int, batches) -> None:
        """After ``task`` trained (eval mode): what is fitted on its data, not trained: the router's
        prototypes, or a fitted head's kind (the class means of an ``ncm`` head)."""
        if self.router is not None:
            self.router.fit(self, task, batches)
        elif self.head_kind.fitted:
            head, route = self.heads[self.head_key(task)], Route.whole(self.adapter_key(task))
            for x, y in batches:
                head.fit(self.features(x, route).flatten(1), y)
            head.end_fit()

    @property
    def fits_after_task(self) -> bool:
        """Whether ``fit_task`` fits anything (a router, or a fitted classifier kind): the strategy skips it if not."""
        return self.router is not None or self.head_kind.fitted

    def fitted_state(self, task: int) -> list[torch.Tensor]:
        """What is fitted for ``task`` (router prototypes; its data signature; its head's fitted state: an NCM
        head's means and counts)."""
        kept = list(self.router.task_state(task).values()) if self.router is not None else []
        kept += [self.signatures[task]] if task in self.signatures else []
        return kept + self.heads[self.head_key(task)].fitted_state()

    def owns_adapter(self, task: int) -> bool:
        """Whether ``task`` has an adapter (and fusion) of its own, rather than none or a shared one."""
        return self.adapters is not None and self.per_task and task_key(task) in self.adapters.keys()

    def task_parameters(self, task: int) -> dict[str, nn.Parameter]:
        """The parameters that belong to ``task`` alone: its head and, if per task, its adapter and fusion."""
        key = task_key(task)
        own = set(map(id, self.heads[key].parameters())) if self.head_per_task else set()
        if self.owns_adapter(task):
            own |= set(map(id, self.adapters.parameters(key)))
            own |= {id(p) for fusion in self.fusions(task) for p in fusion.parameters()}
        return {n: p for n, p in self.named_parameters() if id(p) in own}

    def task_state_names(self, task: int) -> set[str]:
        """The state-dict names ``task`` alone owns: its parameters, and its head's buffers (class means)."""
        head = {f"heads.{task_key(task)}.{n}" for n, _ in self.heads[task_key(task)].named_buffers()} if self.head_per_task else set()
        return set(self.task_parameters(task)) | head

    def fusion_attention(self, task: int) -> dict | None:
        """Task's mean fusion attention per layer over the tokens it saw in eval mode (None: no fusion)."""
        fusions = self.fusions(task)
        if not fusions:
            return None
        return {"adapters": fusions[0].keys, "layers": self.adapters.layer_names,
                "weights": [f.mean_attention() for f in fusions]}

    def train(self, mode: bool = True):
        """``nn.Module.train`` in one flat pass (``walks.py``): Avalanche and the fusion choice switch modes a few
        times a task, and a long stream's model has thousands of modules."""
        set_training(self, mode)
        self.training = mode
        return self

    def to(self, *args, **kwargs):
        """Avalanche moves the model to its device a few times every experience: nothing to do if every
        tensor is there already (``nn.Module.to`` would walk every module of a long stream's model)."""
        device, dtype, _, memory_format = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None and dtype is None and memory_format is None and all_on(self, device):
            return self
        return super().to(*args, **kwargs)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, task_labels: torch.Tensor | int | Route | None) -> torch.Tensor | dict:
        """Route each sample through its task's adapter and head: the given task label while training
        or with ``labels_at_test``; else (class/domain-IL at test) the router's prediction, the labels only
        counted in ``task_id_counts``. A ``Route`` is used as given; ``None`` gives {task: logits} for every
        trained task (what LwF distils). Returns logits over the label ids (see the class docstring).
        """
        if task_labels is None:
            return self.forward_all_tasks(x)
        if isinstance(task_labels, Route):
            route = task_labels
        elif self.router is None or self.training or self.labels_at_test or not self.trained_tasks:
            route = Route.from_labels(task_labels)
        else:
            route = Route.from_labels(self.route_by_router(x, task_labels))
        return self.logits(self.features(x, route), route)

    def route_by_router(self, x: torch.Tensor, task_labels: torch.Tensor | int | None) -> torch.Tensor:
        """The router's task for each sample; given labels are tallied against it (and read by the oracle
        only)."""
        with torch.no_grad():
            predicted = self.router.predict(self, x, task_labels).to(x.device)
        if task_labels is not None:
            true = torch.as_tensor(task_labels, device=x.device).expand(len(x))
            self.task_id_counts.update(zip(true.tolist(), predicted.tolist()))
        return predicted

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits without any task label (class/domain-IL inference): through the router's task per
        sample, or the one shared head."""
        if self.labels_at_test:
            raise UserError("this model was trained for task_il: it needs each sample's task label")
        route = Route.whole(SHARED) if self.router is None else Route.from_labels(self.route_by_router(x, None))
        return self.logits(self.features(x, route), route)

    @contextmanager
    def given_task_labels(self):
        """Evaluate with the task labels although the scenario gives none (the task-IL view)."""
        before, self.labels_at_test = self.labels_at_test, True
        try:
            yield
        finally:
            self.labels_at_test = before

    def logits(self, features: torch.Tensor, route: Route) -> torch.Tensor:
        """Each sample's head, its columns placed at their label ids; a shared head evaluated with task
        labels in class-IL keeps only the task's classes."""
        if not self.head_per_task:
            out = self._placed(self.heads[SHARED](features), SHARED)
            trained = {c for t in self.trained_tasks for c in self.task_classes[t]}
            untrained = [c for c in self.heads[SHARED].classes if c not in trained]
            if trained and untrained:  # their columns would take predictions (an untrained model keeps all)
                out = out.index_fill(1, torch.tensor(untrained, device=out.device), float("-inf"))
            if self.scenario == "class_il" and self.labels_at_test and not self.training:
                out = out.masked_fill(~self._task_columns(route, out), float("-inf"))
            return out
        if len(route) == 1:
            key = route[0][0]
            return self._placed(self.heads[key](features), key)
        logits = [self.heads[key](features[idx]) for key, idx in route]
        out = logits[0].new_full((len(features), self._width([key for key, _ in route])), float("-inf"))  # its dtype: autocast's
        for (key, idx), part in zip(route, logits):
            out = out.index_put((idx[:, None], torch.tensor(self.heads[key].classes, device=out.device)[None, :]), part)
        return out

    def _task_columns(self, route: Route, out: torch.Tensor) -> torch.Tensor:
        """True where a column is one of the sample's own task's classes."""
        mask = torch.zeros_like(out, dtype=torch.bool)
        for key, idx in route:
            mask[slice(None) if idx is None else idx[:, None], self.task_classes[int(key)]] = True
        return mask

    def _width(self, keys: list[str]) -> int:
        """Logit columns: task-IL, the routed heads' widest label id + 1; otherwise every label id known
        (a misrouted sample's label must still be a column, if one at -inf)."""
        if self.scenario == "task_il":
            return 1 + max(max(self.heads[key].classes) for key in keys)
        return 1 + max(max(c) for c in self.task_classes.values())

    def _placed(self, logits: torch.Tensor, key: str) -> torch.Tensor:
        classes, width = self.heads[key].classes, self._width([key])
        if classes == list(range(width)):
            return logits
        out = logits.new_full((len(logits), width), float("-inf"))
        out[:, classes] = logits
        return out

    def features(self, x: torch.Tensor, route: Route) -> torch.Tensor:
        """The backbone's features with each sample through the adapter ``route`` gives it (the shared
        adapter when there is one for all tasks), for this forward only."""
        if self.adapters is None or (self.per_task and self.adapter_override is None and not len(route)):
            return self.base_features(x)
        if self.adapter_override is not None:
            route = Route.whole(self.adapter_override)
        elif self.stack_on is not None:
            route = route.map(self._stacked)
        with self.adapters.routed(route if self.per_task else Route.whole(SHARED)):
            return self.backbone(x)

    def base_features(self, x: torch.Tensor) -> torch.Tensor:
        """The bare backbone's features: read from ``feature_cache`` (``feature_cache.py``) where the base is
        frozen for good, in eval mode and without gradients; every other forward computes them."""
        if self.feature_cache is None or self.training or torch.is_grad_enabled() or not self.base_frozen:
            return self.backbone(x)
        unused = {id(p) for p in self.adapters.every_parameter()} if self.adapters is not None else set()
        return self.feature_cache.features(self.backbone, x, exclude=unused)

    @property
    def base_frozen(self) -> bool:
        """Whether the base weights train no more in this run (what makes caching its features pay)."""
        return not self.train_biases and (self.train_backbone == "never" or (self.train_backbone == "first"
                                                                             and bool(self.trained_tasks)))

    def _stacked(self, key: str) -> str | Stack:
        """A task after ``stack_on``'s adapter key as the stack it runs as; any other key as it is."""
        later = key.isdigit() and int(key) > self.stack_on
        return Stack((task_key(self.stack_on), key)) if later else key

    def forward_all_tasks(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """{task: logits} for every trained task: what LwF distils (Avalanche calls ``forward(x, None)``)."""
        if self.adapters is not None and self.per_task:
            return {t: self.forward(x, Route.whole(task_key(t))) for t in self.trained_tasks}
        features = self.features(x, Route.whole(SHARED))
        return {t: self.logits(features, Route.whole(task_key(t))) for t in self.trained_tasks}


def _classes(experience) -> list[int]:
    """The label ids of the experience's task: as the stream declares them, else 0 .. its largest label."""
    declared = getattr(experience, "classes", None)
    if declared is not None:
        return [int(c) for c in declared]
    declared = getattr(experience, "n_classes", None)
    if declared is not None:
        return list(range(int(declared)))
    return list(range(int(max(experience.dataset.targets.uniques)) + 1))
