"""Accuracy on old and on new classes after each step: what a learner keeps (stability) against what it
learns (plasticity), the two numbers LAMDA-PILOT logs beside its accuracy curve.

After step b, ``Old_b`` is the accuracy on the eval samples of every task learned before b, as one pool (a
task weighs by its samples, n_j), and ``New_b`` = R[b, b], on step b's own samples. PILOT computes them in
``utils/toolkit.py`` ``accuracy`` (its "Old accuracy" / "New accuracy" blocks: ``y_true < nb_old`` against
``y_true >= nb_old``, ``nb_old`` = the classes known before the step, passed by ``models/base.py``
``_evaluate``); R[b, j] is task j's correct share, so sum_{j<b} n_j R[b, j] is the old pool's correct count:
the same number, as a fraction. ``old_acc`` and ``new_acc`` are their means over the steps (``Old`` from the
second step, when there are old classes; PILOT logs 0 at the first). Per step: ``old_new_curves``.
"""

from __future__ import annotations

import numpy as np

from cl_adapters.metrics.metric import Metric, given


def old_new_curves(R, n) -> tuple[list[float], list[float]]:
    """(``Old_b`` for b = 1..T-1, ``New_b`` for b = 0..T-1) from R (T x T) and each task's eval samples ``n``."""
    R, n = np.asarray(R, dtype=float), np.asarray(n, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0 or n.shape != (len(R),) or (n <= 0).any():
        raise ValueError(f"need a square non-empty R and a positive sample count per task, got {R.shape} and {n.shape}")
    old = [float(R[b, :b] @ n[:b] / n[:b].sum()) for b in range(1, len(R))]
    return old, [float(R[b, b]) for b in range(len(R))]


def old_acc(R, n) -> float | None:
    old = old_new_curves(R, n)[0]
    return float(np.mean(old)) if old else None


def new_acc(R, n) -> float:
    return float(np.mean(old_new_curves(R, n)[1]))


METRICS = (
    Metric("old_acc", "old-class acc", "mean_{b>=1} Old_b, Old_b = sum_{j<b} n_j R[b, j] / sum_{j<b} n_j: after each "
           "step, accuracy on the pooled eval samples of the tasks learned before it (LAMDA-PILOT's old accuracy)",
           given("sizes")(lambda m: old_acc(m.R, m.sizes)), accuracy=True, optional=True),
    Metric("new_acc", "new-class acc", "mean_b R[b, b]: after each step, accuracy on that step's own eval samples "
           "(LAMDA-PILOT's new accuracy)", given("sizes")(lambda m: new_acc(m.R, m.sizes)), accuracy=True,
           optional=True),
)
