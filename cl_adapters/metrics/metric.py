"""What a metric is: the inputs every metric is a function of, and a metric's row (key, report column,
definition, function, console format). The table is ``spec.py``'s; a metric of its own module in
``metrics/added/`` declares its rows with these."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Inputs:
    """What the metrics are functions of: R and, where the run has them, each task's eval samples (``sizes``),
    the untrained model's accuracies (``b``), the references (``S``, ``J``), the probe (``P``, ``P0``), R with task
    labels (``R_til``) and the router's task-ID matrix (``Q``)."""

    R: np.ndarray
    sizes: list | None = None
    b: list | None = None
    S: list | None = None
    J: list | None = None
    P: list | None = None
    P0: list | None = None
    R_til: np.ndarray | None = None
    Q: np.ndarray | None = None


@dataclass(frozen=True)
class Metric:
    key: str
    column: str  # the report's header
    definition: str
    compute: Callable[[Inputs], float | None] | None  # None where its inputs are missing; no function: measured by the run
    accuracy: bool = False  # in [0, 1]; otherwise a difference of two accuracies, in [-1, 1], shown signed
    optional: bool = False  # a report column only where some run has it

    def format(self, value: float) -> str:
        return f"{value:.4f}" if self.accuracy else f"{value:+.4f}"


def given(*names: str):
    """``fn(inputs)`` where the inputs ``names`` are all there, else None."""
    def wrap(fn):
        return lambda m: fn(m) if all(getattr(m, n) is not None for n in names) else None
    return wrap
