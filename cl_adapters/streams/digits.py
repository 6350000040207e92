"""scikit-learn's 8x8 digits (1,797 real scans, shipped with sklearn): the fast stream for tests."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from cl_adapters.streams.base import split_by_class


def split_digits(
    n_tasks: int = 5,
    class_order=None,
    seed: int = 0,
    train_per_task: int | None = None,
    test_per_task: int | None = None,
    val_fraction: float = 0.0,
    test_fraction: float = 0.3,
    scenario: str = "task_il",
):
    """Digits as ``n_tasks`` tasks of 10/n_tasks classes each; a stratified test split per seed."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    x_tr, x_te, y_tr, y_te = train_test_split(x, torch.tensor(y), test_size=test_fraction, stratify=y, random_state=seed)
    return split_by_class(
        (x_tr, y_tr), (x_te, y_te), n_tasks, class_order, seed, train_per_task, test_per_task, val_fraction, scenario
    )
