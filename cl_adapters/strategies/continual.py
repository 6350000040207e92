"""ContinualStrategy: the one SupervisedTemplate subclass behind every strategy config.

Strategies differ in their model policy (``strategy/*.yaml``: adapter, full_ft, lora, bitfit, ...)
and in their ``protocol``:
- ``sequential``: the continual-learning run itself, one task after another;
- ``joint``: the upper-bound reference, trained from the initial weights on the union of tasks 0..i
  at experience i (gives J for intransigence);
- ``single_task``: the transfer reference, trained from the initial weights on task i alone
  (gives S for transfer vs single-task).
Every experience starts from a fresh optimizer state and the same budget of optimizer steps:
``iterations`` if set (the van de Ven & Tolias protocol: 2000 per task), else ``epochs`` passes over the
task's training data; two-stage AdapterFusion splits it between its stages (``fusion.budget=equal``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
from avalanche.benchmarks.utils.utils import concat_datasets
from avalanche.core import BaseSGDPlugin
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch import nn
from torch.utils.data import DataLoader

from cl_adapters import avalanche_compat as compat
from cl_adapters.errors import UserError
from cl_adapters.models.walks import parameters
from cl_adapters.strategies.batches import TensorBatches

PROTOCOLS = ("sequential", "joint", "single_task")
REFERENCES = ("single_task", "joint")  # their R diagonals: S (transfer vs single-task), J (intransigence)
PRECISIONS = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}  # and "auto": see resolve_precision
STEP_EVENTS = ("before_training_iteration", "before_forward", "after_forward", "before_backward", "after_backward",
               "before_update", "after_update", "after_training_iteration",
               "before_eval_iteration", "before_eval_forward", "after_eval_forward", "after_eval_iteration")
FINITE_CHECK_EVERY = 50  # training steps between reads of the losses (a NaN stops the run within this many)


class ContinualStrategy(SupervisedTemplate):
    def __init__(
        self,
        *,
        backbone: nn.Module,
        model: Callable[[nn.Module], nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        epochs: int = 5,
        iterations: int | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        device: str = "cpu",
        precision: str | None = None,
        protocol: str = "sequential",
        num_workers: int | None = None,
        plugins: Sequence = (),
        monitors: Sequence = (),
        evaluator: EvaluationPlugin | None = None,
    ):
        """``plugins`` are continual-learning plugins (EWC, LwF, Replay, ...): they change training
        and are checked against the model; ``monitors`` only observe (metrics, costs, progress).
        ``num_workers``: DataLoader worker processes, for streams read lazily from files (0 or None: none)."""
        for key, value in (("epochs", epochs), ("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if not isinstance(value, int) or value < 1:
                raise UserError(f"strategy.{key} must be a positive integer, got {value!r}")
        if num_workers is not None and (not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0):
            raise UserError(f"strategy.num_workers must be an integer >= 0 or null, got {num_workers!r}")
        if iterations is not None and (not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1):
            raise UserError(f"strategy.iterations must be a positive integer or null, got {iterations!r}")
        if protocol not in PROTOCOLS:
            raise UserError(f"strategy.protocol must be one of {PROTOCOLS}, got {protocol!r}")
        device = _check_device(device)
        precision = resolve_precision(precision, device)
        model = model(backbone)
        _check_plugins(plugins, model, protocol)
        try:
            opt = optimizer(model.parameters())
        except (ValueError, TypeError) as e:  # torch's own checks: "Invalid learning rate: -0.1"
            text = [f"strategy.optimizer.{k}={v!r} is not a number" for k, v in getattr(optimizer, "keywords", {}).items()
                    if isinstance(v, str)]
            raise UserError(text[0] if text else f"strategy.optimizer: {e}") from e
        if evaluator is None:
            with warnings.catch_warnings():  # "no loggers": our own plugins measure and log
                warnings.simplefilter("ignore")
                evaluator = _Unmeasured()
        self.protocol, self.iterations, self.num_workers = protocol, iterations, num_workers or 0
        self.precision = precision or "fp32"  # what ran (auto resolved), recorded in results.json
        self.amp_dtype = PRECISIONS[precision]  # autocast: weights stay fp32, matmuls run in this dtype
        self.scaler = torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")
        self._steps_left = 0
        self._losses: list[tuple[torch.Tensor, int, int]] = []  # (loss, epoch, batch) since the last finite check
        self._initial_state = copy.deepcopy(model.state_dict()) if protocol != "sequential" else None
        self._seen_data = None
        super().__init__(
            model=model,
            optimizer=opt,
            train_mb_size=batch_size,
            train_epochs=epochs,
            eval_mb_size=eval_batch_size,
            device=device,
            plugins=[*plugins, *monitors],
            evaluator=evaluator,
            eval_every=-1,
        )

    def train(self, experiences, eval_streams=None, **kwargs):
        return super().train(experiences, eval_streams, **self._loader_options(kwargs))

    def eval(self, exp_list, **kwargs):
        return super().eval(exp_list, **self._loader_options(kwargs))

    def _loader_options(self, kwargs: dict) -> dict:
        """Avalanche's loader options (its loaders' and plugins' such as Replay's): ``num_workers`` workers,
        kept across epochs. Avalanche pins memory on CUDA itself. With none, nothing is passed: the loaders
        are exactly Avalanche's defaults."""
        if self.num_workers:
            kwargs = {"num_workers": self.num_workers, "persistent_workers": True, **kwargs}
        return kwargs

    def _before_training_exp(self, **kwargs):
        super()._before_training_exp(**kwargs)  # the loader, then the plugins' (Replay: its own loader)
        self.dataloader = TensorBatches.wrap(self.dataloader)
        self._find_listeners()

    def _before_eval_exp(self, **kwargs):
        super()._before_eval_exp(**kwargs)
        self.dataloader = TensorBatches.wrap(self.dataloader)
        self._find_listeners()

    # Avalanche calls every plugin on every step event, no-ops included (8 calls a training step per plugin):
    # here only the plugins that act on an event are called, in their order.
    def _find_listeners(self) -> None:
        self._listeners = {event: [p for p in self.plugins if _acts_on(p, event)] for event in STEP_EVENTS}

    def _notify(self, event: str, kwargs: dict) -> None:
        for plugin in self._listeners[event]:
            getattr(plugin, event)(self, **kwargs)

    def _before_training_iteration(self, **kwargs):
        self._notify("before_training_iteration", kwargs)

    def _before_forward(self, **kwargs):
        self._notify("before_forward", kwargs)

    def _after_forward(self, **kwargs):
        self._notify("after_forward", kwargs)

    def _before_backward(self, **kwargs):
        self._notify("before_backward", kwargs)

    def _after_backward(self, **kwargs):
        self._notify("after_backward", kwargs)

    def _before_update(self, **kwargs):
        self._notify("before_update", kwargs)

    def _after_update(self, **kwargs):
        self._notify("after_update", kwargs)

    def _before_eval_iteration(self, **kwargs):
        self._notify("before_eval_iteration", kwargs)

    def _before_eval_forward(self, **kwargs):
        self._notify("before_eval_forward", kwargs)

    def _after_eval_forward(self, **kwargs):
        self._notify("after_eval_forward", kwargs)

    def _after_eval_iteration(self, **kwargs):
        self._notify("after_eval_iteration", kwargs)

    def train_dataset_adaptation(self, **kwargs):
        super().train_dataset_adaptation(**kwargs)
        if self.protocol == "joint":
            seen = self.adapted_dataset if self._seen_data is None else concat_datasets([self._seen_data, self.adapted_dataset])
            self._seen_data = self.adapted_dataset = seen

    def restore_experiences(self, experiences) -> None:
        """After a resume: count the experiences already trained (Avalanche's clock) and keep what the
        protocol keeps of them (joint: their data)."""
        self.clock.train_exp_counter = len(experiences)
        if self.protocol == "joint":
            for experience in experiences:
                self.experience = experience
                self.train_dataset_adaptation()

    def model_adaptation(self, model=None):
        if self.is_training and self._initial_state is not None:  # references restart from the initial weights
            self.model.load_state_dict(self._initial_state, strict=False)  # heads are not in it: reset below
            for head in self.model.heads.values():
                head.reset_parameters()
            if self.protocol == "single_task":  # trained on this task alone: only its classes are live (class-IL)
                self.model.trained_tasks.clear()
        return super().model_adaptation(model)

    def stage_steps(self) -> list[int]:
        """Optimizer steps of each training stage of the current task (AdapterFusion: the task's adapter,
        then its fusion): ``iterations`` or ``epochs`` passes over the data in all with
        ``fusion.budget=equal`` (the first stage gets the odd step), each stage all of them with ``extra``."""
        total = self.iterations or self.train_epochs * len(self.dataloader)
        stages = self.model.stages()
        if stages == 1 or self.model.fusion.budget == "extra":
            return [total] * stages
        return [total // stages + (s < total % stages) for s in range(stages)]

    def _train_exp(self, experience, eval_streams=None, **kwargs):
        epochs = self.train_epochs
        try:
            for stage, steps in enumerate(self.stage_steps()):
                if stage:
                    self.model.next_stage()
                    self.make_optimizer()
                if steps and self.model.trains():  # strategy=ncm after its first task: only the class means
                    self._steps_left, self.train_epochs = steps, math.ceil(steps / len(self.dataloader))
                    super()._train_exp(experience, eval_streams, **kwargs)
                    compat.keep_training(self)  # stopped by the stage's last step
        finally:
            self.train_epochs = epochs
        self.model.end_task_training(int(experience.task_labels[0]), experience.dataset)
        self._fit_task(experience)

    def _after_training_iteration(self, **kwargs):
        self._notify("after_training_iteration", kwargs)
        self._steps_left -= 1
        if self._steps_left == 0:
            self.stop_training()

    @torch.no_grad()
    def _fit_task(self, experience) -> None:
        """The model fits what it learns from data without training (a router's or a fitted head's: an NCM
        head's class means), in eval mode, on the task's data; the RNG is left as it was (with the
        oracle, a run trains exactly as its task-IL twin)."""
        if not self.model.fits_after_task:
            return
        training = self.model.training
        self.model.eval()
        with torch.random.fork_rng(), self.autocast():  # the features the evaluation's forwards will give
            loader = DataLoader(experience.dataset.eval(), batch_size=self.eval_mb_size, num_workers=self.num_workers)
            batches = ((x.to(self.device), y.to(self.device)) for x, y, *_ in loader)
            self.model.fit_task(int(experience.task_labels[0]), batches)
        self.model.train(training)

    def make_optimizer(self, reset_optimizer_state=False, **kwargs):
        """A fresh state each task and stage, over the parameters that train now: the frozen ones (a long
        stream's earlier adapters) would only be skipped, every step."""
        if len(self.optimizer.param_groups) != 1:  # a user's groups: Avalanche's update
            return super().make_optimizer(reset_optimizer_state=True, **kwargs)
        params = [p for p in parameters(self.model) if p.requires_grad]
        self.optimized_param_id = {}  # Avalanche's name -> parameter map, read only by its own make_optimizer
        self.optimizer.param_groups[0]["params"] = params
        self.optimizer.state = defaultdict(dict)

    def forward(self):
        task = getattr(self.dataloader, "task", None) if self.is_training else None  # one task: no per-step lookup
        with self.autocast():
            return self.model(self.mb_x, self.mb_task_id if task is None else task)

    def autocast(self):
        """``strategy.precision``'s autocast (none for fp32: even a disabled one costs every forward)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def backward(self):
        """fp16: the loss scaled against underflow, the gradients unscaled before plugins read them."""
        self.scaler.scale(self.loss).backward(retain_graph=self.retain_graph)
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)

    def optimizer_step(self):
        self.scaler.step(self.optimizer)  # fp16: skipped when a gradient overflowed
        self.scaler.update()

    def criterion(self):
        loss = super().criterion()
        if self.is_training:
            if torch.is_tensor(penalty := self.model.penalty()):  # (0.0 without one: no op to add)
                loss = loss + penalty
            self._losses.append((loss.detach(), self.clock.train_exp_epochs, self.clock.train_epoch_iterations))
            if len(self._losses) == FINITE_CHECK_EVERY:
                self._check_finite()
        return loss

    def _after_training_epoch(self, **kwargs):
        self._check_finite()
        super()._after_training_epoch(**kwargs)

    def _check_finite(self) -> None:
        """One line naming the first non-finite loss since the last check. Read every few steps and at
        each epoch's end, not per step: a per-step read would wait for the device every step."""
        losses, self._losses = self._losses, []
        if not losses or bool(torch.isfinite(torch.stack([loss for loss, *_ in losses])).all()):
            return
        loss, epoch, batch = next(entry for entry in losses if not torch.isfinite(entry[0]))
        exp = self.experience.current_experience
        raise UserError(
            f"training loss is {loss.item()} in task {exp + 1} (experience {exp}), epoch {epoch + 1}/{self.train_epochs}, "
            f"batch {batch + 1} (lower strategy.optimizer.lr or check the inputs)"
        )


class _Unmeasured(EvaluationPlugin):
    """Avalanche's evaluator with no metrics and no loggers (our monitors measure and log): its callbacks,
    eight a training step, return at once instead of switching the experience to logging mode each time."""

    def _update_metrics_and_loggers(self, strategy, callback):
        return []


def _acts_on(plugin, event: str) -> bool:
    """Whether ``plugin``'s ``event`` callback does anything: not the plugin base class's no-op, nor the
    evaluator without metrics."""
    if isinstance(plugin, _Unmeasured) or not hasattr(plugin, event):
        return False
    return event in vars(plugin) or getattr(type(plugin), event, None) is not getattr(BaseSGDPlugin, event)


def resolve_precision(precision: str | None, device: str) -> str | None:
    """``strategy.precision`` for a run on ``device``: ``auto`` is bf16 on a CUDA device with bf16 support
    (autocast halves a ViT's matmul time there), else null (fp32: on CPU, bf16 autocast is slower and
    changes results)."""
    if precision == "auto":
        device = _check_device(device)
        return "bf16" if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported() else None
    if precision not in PRECISIONS:
        raise UserError(f"strategy.precision must be null (fp32), bf16, fp16 or auto, got {precision!r}")
    return precision


def _check_device(device) -> str:
    """The device to train on, checked against this machine: one line, not an error deep in torch when the
    model moves there (auto: cuda where there is one, else cpu)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device) if isinstance(device, str) else None
    except RuntimeError:
        kind = None
    if kind is None or kind.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device must be cpu, cuda, cuda:<index>, mps or auto, got {device!r}")
    count = {"cuda": torch.cuda.device_count() if torch.cuda.is_available() else 0,
             "mps": int(torch.backends.mps.is_available())}.get(kind.type)
    if count is not None and (kind.index or 0) >= count:
        have = f"only {kind.type}:0 to {kind.type}:{count - 1}" if count else f"no {kind.type} device"
        raise UserError(f"device={device}: this machine has {have} (device=auto: cuda where there is one, else cpu)")
    return device


def _check_plugins(plugins: Sequence, model: nn.Module, protocol: str) -> None:
    """CL plugins act on what tasks share; refuse combinations where they cannot do anything."""
    if not plugins:
        return
    names = [type(p).__name__ for p in plugins]
    if protocol != "sequential":
        raise UserError(f"plugins {names} do not apply to the {protocol} reference (it must train plainly)")
    if not getattr(model, "shares_training", True):
        raise UserError(
            f"plugins {names} have nothing to act on: with per-task adapters on a frozen backbone no "
            "parameter is shared between tasks (use them with full_ft, lora or bitfit)"
        )
