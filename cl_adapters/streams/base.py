"""Building blocks for task streams: per-task tensors in, a checked Avalanche scenario out.

A stream is any function that returns an Avalanche ``CLScenario`` with task labels. The easiest way
to write one is to produce per-task ``(inputs, labels)`` pairs and call :func:`task_stream`.
Labels are given task-local (``0 .. n_classes[t]-1``); task ``t`` gets task label ``t``.

The scenario says what a test sample carries (van de Ven et al. 2022's three scenarios):
``task_il`` its task label; ``class_il`` no task label, and labels are global (task t's classes
follow task t-1's: ``0 .. C-1`` over the stream); ``domain_il`` no task label, and every task has the
same label space. Training experiences keep their task labels in every scenario; the model decides
whether it may use them at test time. Each experience declares ``classes`` (the label ids it uses).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence

import numpy as np
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.benchmarks.utils import DataAttribute, TaskLabels
from avalanche.benchmarks.utils.classification_dataset import (
    TaskAwareSupervisedClassificationDataset,
)
from torch.utils.data import Dataset, TensorDataset

from cl_adapters.errors import UserError

Split = tuple[torch.Tensor, torch.Tensor]
SCENARIOS = ("task_il", "class_il", "domain_il")


def check_scenario(scenario: str, supported: Sequence[str], stream: str) -> None:
    """One line if ``stream`` does not support ``scenario`` (or it is not a scenario at all)."""
    if scenario not in SCENARIOS:
        raise UserError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    if scenario not in supported:
        raise UserError(f"stream {stream} supports scenario {', '.join(supported)}, not {scenario}")


def task_stream(
    train: Sequence[Split],
    test: Sequence[Split],
    n_classes: Sequence[int] | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    scenario: str = "task_il",
    classes_per_task: Sequence | None = None,
):
    """A scenario (streams ``train``, ``test`` and, with ``val_fraction``, ``valid``) of kind ``scenario``
    (module docstring): task_il, class_il (labels made global), domain_il (needs equal ``n_classes``).

    ``train`` and ``test`` hold one ``(inputs, labels)`` pair per task, as numpy arrays or torch tensors:
    inputs (N, ...) -- float images (N, C, H, W) for the image backbones (float64 becomes float32), or
    right-padded int64 token ids (N, L) for ``model=hf_encoder`` -- and integer labels (N,) local to the
    task (``0 .. n_classes[t]-1``; default: the largest label + 1). Task ``t`` gets task label ``t``.
    Every experience carries ``n_classes``, the width of its task's head, and ``classes``, the label ids
    it uses. Bad data fails here, with the task and split named: no empty task, no NaN/inf input, every
    label in ``[0, n_classes)``. ``classes_per_task`` (what each task's labels were in the source) is recorded
    as the scenario's.
    """
    check_scenario(scenario, SCENARIOS, "task_stream")
    if not train or len(train) != len(test):
        raise UserError(f"a stream needs the same non-zero number of train and test tasks, got {len(train)} and {len(test)}")
    check_val_fraction(val_fraction)
    train = [_checked(pair, f"task {t} train") for t, pair in enumerate(train)]
    test = [_checked(pair, f"task {t} test") for t, pair in enumerate(test)]
    if n_classes is None:
        n_classes = [int(max(ytr.max(), yte.max())) + 1 for (_, ytr), (_, yte) in zip(train, test)]
    if len(n_classes) != len(train):
        raise UserError(f"n_classes lists {len(n_classes)} tasks, the stream has {len(train)}")
    for t, k in enumerate(n_classes):
        for split, (_, y) in (("train", train[t]), ("test", test[t])):
            if int(y.max()) >= k:
                raise UserError(f"task {t} {split} labels go up to {int(y.max())}, outside the task's {k} classes")
    if scenario == "domain_il" and len(set(n_classes)) > 1:
        raise UserError(f"scenario=domain_il needs the same classes in every task; this stream's tasks have {list(n_classes)}")
    offsets = class_offsets(n_classes, scenario)
    train = [(x, y + offsets[t]) for t, (x, y) in enumerate(train)]
    test = [(x, y + offsets[t]) for t, (x, y) in enumerate(test)]
    streams = {"train": train, "test": test}
    if val_fraction:
        streams["train"], streams["valid"] = zip(*(_split(x, y, val_fraction, seed + t) for t, (x, y) in enumerate(train)))
    datasets = {name: [task_dataset(x, y, t) for t, (x, y) in enumerate(s)] for name, s in streams.items()}
    return scenario_of(datasets, n_classes, scenario, classes_per_task)


def check_val_fraction(val_fraction: float) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"stream.val_fraction must be in [0, 1), got {val_fraction}")


def class_offsets(n_classes: Sequence[int], scenario: str) -> list[int]:
    """Each task's first label: class_il numbers the classes over the stream, the others per task."""
    return np.cumsum([0, *n_classes[:-1]]).tolist() if scenario == "class_il" else [0] * len(n_classes)


def scenario_of(datasets: dict, n_classes: Sequence[int], scenario: str, classes_per_task: Sequence | None = None):
    """The tail every stream shares, in-memory or read lazily: ``datasets`` (stream name -> one task-aware
    dataset per task, labels already offset by :func:`class_offsets`) as a scenario whose experiences carry
    ``n_classes`` and ``classes``, with its ``kind`` and (given) ``classes_per_task``."""
    offsets = class_offsets(n_classes, scenario)
    built = with_task_labels(benchmark_from_datasets(**datasets))
    for stream in built.streams.values():
        for exp in stream:
            t = exp.current_experience
            exp.n_classes = int(n_classes[t])
            exp.classes = list(range(offsets[t], offsets[t] + exp.n_classes))
    built.kind = scenario
    if classes_per_task is not None:
        built.classes_per_task = [list(c) for c in classes_per_task]
    return built


def _pair(pair, where: str) -> Split:
    """``(inputs, labels)`` (numpy arrays, tensors or nested lists) as float32 or integer inputs and int64
    labels, or one UserError naming ``where``."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise UserError(f"{where} must be an (inputs, labels) pair, got {type(pair).__name__}")
    arrays = []
    for part, value in zip(("inputs", "labels"), pair):
        try:
            arrays.append(torch.as_tensor(value))
        except (TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"{where} {part} are not an array of numbers ({' '.join(str(e).split())})") from e
    x, y = arrays
    if len(x) != len(y):
        raise UserError(f"{where} has {len(x)} inputs but {len(y)} labels")
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise UserError(f"{where} labels must be integers")
    # images and features as float32; integer inputs (token ids) stay as they are
    return (x.float() if x.is_floating_point() else x), y.long()


def _checked(pair, where: str) -> Split:
    """``_pair``, plus what a task must be: not empty, no negative label, no NaN/inf input."""
    x, y = _pair(pair, where)
    if len(x) == 0:
        raise UserError(f"{where} is empty")
    if int(y.min()) < 0:
        raise UserError(f"{where} has a negative label ({int(y.min())})")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise UserError(f"{where} inputs contain NaN or inf")
    return x, y


def _split(x, y, fraction: float, seed: int) -> tuple[Split, Split]:
    tr, val = val_split(len(x), fraction, seed)
    return (x[tr], y[tr]), (x[val], y[val])


def val_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the samples kept for training and of those carved out for validation (fixed by ``seed``)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n * fraction)))
    return perm[n_val:], perm[:n_val]


def task_dataset(x: torch.Tensor, y: torch.Tensor, task: int):
    """A task-aware classification dataset (``task_set``, ``targets``), as Avalanche's plugins expect."""
    return labelled_dataset(TensorDataset(x, y), y.tolist(), task)


def labelled_dataset(data: Dataset, labels: Sequence[int], task: int, transform_groups: dict | None = None):
    """``data`` (samples ``(input, label)``, ``labels`` theirs) as task ``task``'s task-aware dataset;
    ``transform_groups`` (``{"train": f, "eval": g}``) turn each input into what the model takes."""
    return TaskAwareSupervisedClassificationDataset(
        [data],
        data_attributes=[DataAttribute(list(labels), "targets"), TaskLabels([task] * len(labels))],
        transform_groups=transform_groups,
    )


def subsample(x, y, n: int | None, seed: int) -> Split:
    """At most ``n`` samples, drawn without replacement (fixed by ``seed``)."""
    if n is None or n >= len(x):
        return x, y
    if n <= 0:
        raise UserError(f"per-task subsample sizes must be positive, got {n}")
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def class_order_for(classes: Sequence[int], class_order, seed: int) -> list[int]:
    """``None`` keeps natural order, ``"random"`` shuffles with ``seed``, a list is used as given (a
    subset of the classes is fine: the others are left out of the stream)."""
    classes = sorted(int(c) for c in classes)
    if class_order is None:
        return classes
    if class_order == "random":
        return [classes[i] for i in np.random.default_rng(seed).permutation(len(classes))]
    order = [int(c) for c in class_order]
    if not order:
        raise UserError("stream.class_order lists no class (null: all classes in order, random: shuffled)")
    if len(set(order)) != len(order) or not set(order) <= set(classes):
        raise UserError(f"stream.class_order must list distinct classes of {classes}, got {order}")
    return order


def split_by_class(
    train: Split,
    test: Split,
    n_tasks: int,
    class_order=None,
    seed: int = 0,
    train_per_task: int | None = None,
    test_per_task: int | None = None,
    val_fraction: float = 0.0,
    scenario: str = "task_il",
):
    """Split a labelled dataset into ``n_tasks`` tasks of ``C / n_tasks`` consecutive classes each.

    ``train`` and ``test`` are ``(inputs, labels)`` pairs, numpy arrays or torch tensors: inputs (N, ...)
    as the backbone takes them (images (N, C, H, W), e.g. (N, 1, 28, 28) for MNIST; token ids (N, L)),
    labels (N,) global class ids. ``class_order``: None (sorted), ``"random"`` (shuffled by ``seed``) or
    a list of classes (a subset leaves the rest out). Within each task the labels are remapped to
    ``0 .. C/n_tasks - 1`` in ``class_order`` (the scenario's ``classes_per_task`` keeps the original
    ids); ``*_per_task`` subsample each task, ``val_fraction`` carves a ``valid`` stream from train.
    ``scenario``: task_il, class_il (labels 0..C-1, the position in ``class_order``) or domain_il (every
    task's labels ``0 .. C/n_tasks - 1``: "first or second class of the task", as in split MNIST).
    """
    train, test = _pair(train, "split_by_class train"), _pair(test, "split_by_class test")  # task_stream checks the rest
    order = class_order_for(torch.unique(train[1]).tolist(), class_order, seed)
    if not isinstance(n_tasks, int) or n_tasks <= 0 or len(order) % n_tasks:
        raise UserError(f"stream.n_tasks={n_tasks} must divide the {len(order)} classes evenly")
    per = len(order) // n_tasks
    tasks_tr, tasks_te = [], []
    for t in range(n_tasks):
        classes = torch.tensor(order[t * per : (t + 1) * per])
        for (x, y), n, out in ((train, train_per_task, tasks_tr), (test, test_per_task, tasks_te)):
            mask = torch.isin(y, classes)
            local = (y[mask][:, None] == classes[None]).int().argmax(1)  # class -> 0..per-1
            out.append(subsample(x[mask], local, n, seed + t))
    return task_stream(tasks_tr, tasks_te, [per] * n_tasks, val_fraction, seed, scenario,
                       [order[t * per : (t + 1) * per] for t in range(n_tasks)])


class ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays (in dicts, lists, strings and numbers) and nothing else: a pickle names
    functions to call, and a file from disk must not run code (MNIST's and CIFAR's need exactly these three)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which is not part of a numpy array")
        return super().find_class(module, name)
