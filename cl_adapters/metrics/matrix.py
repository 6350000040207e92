"""Continual-learning metrics as pure functions of the accuracy matrix.

``R[i, j]`` is the accuracy on task j after training task i (T x T). Definitions follow DESIGN.md:
BWT and FWT as in GEM (Lopez-Paz & Ranzato 2017), forgetting as in Chaudhry et al. 2018 (max over
the rows since the task was trained, not Avalanche's first-value convention). GEM's FWT needs a head that exists before its
task is trained (a shared head: class/domain-IL without per-task heads); ``fwt_probe`` is forward transfer
by linear probe (``probe.py``), defined for every model. The accuracy curve ``A_b`` (``accuracy_curve``) is
the class-incremental protocol of the pretrained-model literature (PyCIL / LAMDA-PILOT): accuracy on one pool of
the eval samples of every task seen so far, so it also needs each task's eval-set size.
"""

from __future__ import annotations

import numpy as np

def _square(R) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square and non-empty, got shape {R.shape}")
    return R


def _vector(v, T: int, name: str) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    if v.shape != (T,):
        raise ValueError(f"{name} must have one entry per task ({T}), got shape {v.shape}")
    return v


def acc(R) -> float:
    R = _square(R)
    return float(R[-1].mean())


def bwt(R) -> float:
    R = _square(R)
    T = len(R)
    if T < 2:
        return 0.0
    return float(np.mean(R[-1, :-1] - np.diag(R)[:-1]))


def forgetting(R) -> float:
    R = _square(R)
    T = len(R)
    if T < 2:
        return 0.0
    best = [R[j:-1, j].max() for j in range(T - 1)]  # since task j was trained: before, its accuracy means nothing
    return float(np.mean(best - R[-1, :-1]))


def fwt(R, b) -> float:
    R = _square(R)
    T = len(R)
    b = _vector(b, T, "b")
    if T < 2:
        return 0.0
    return float(np.mean([R[j - 1, j] - b[j] for j in range(1, T)]))


def fwt_probe(P, P0) -> float | None:
    """``P``, ``P0``: per task, the probe accuracy after the previous task and on the initial model (entry 0,
    the first task's, is unused: nothing came before it). A task without a probe (None: one class) is left
    out of the mean; None if no task has one."""
    if len(P) != len(P0):
        raise ValueError(f"P and P0 must have one entry per task, got {len(P)} and {len(P0)}")
    gains = [p - p0 for p, p0 in zip(P[1:], P0[1:]) if p is not None and p0 is not None]
    return float(np.mean(gains)) if gains else None


def transfer_vs_single(R, S) -> float:
    R = _square(R)
    return float(np.mean(np.diag(R) - _vector(S, len(R), "S")))


def intransigence(R, J) -> float:
    R = _square(R)
    return float(np.mean(_vector(J, len(R), "J") - np.diag(R)))


def accuracy_curve(R, n) -> list[float]:
    """``A_b`` for every step b: R's row b weighted by the eval-set sizes ``n`` of the tasks seen (j <= b).

    Why weighted: LAMDA-PILOT (github.com/LAMDA-CL/LAMDA-PILOT @ 5240714) scores one test set of all classes
    seen so far, ``np.arange(0, self._total_classes)`` (models/simplecil.py:63, as every learner builds its
    ``test_loader``), in ``eval_task`` (models/base.py:115-118, ``_eval_cnn``); ``_evaluate`` (base.py:103-107)
    takes ``top1 = accuracy(...)["total"]``, which is ``(y_pred == y_true).sum() * 100 / len(y_true)``
    (utils/toolkit.py:32-34): a pool of samples, so a task counts by its number of samples. trainer.py:89/113
    append it to ``cnn_curve["top1"]`` (this A_b); trainer.py:100/119 log ``sum(curve) / len(curve)`` (Ā).
    R[b, j] (j <= b) is correct_j / n_j, so sum_j n_j R[b, j] is the pool's correct count: the same number,
    as a fraction, not PILOT's percent rounded to two decimals. R[b, j] for j > b (unseen) is not read.
    """
    R = _square(R)
    n = _vector(n, len(R), "n")
    if (n < 0).any() or n[0] <= 0:
        raise ValueError(f"eval-set sizes must be >= 0 with the first task's > 0, got {n.tolist()}")
    return [float(n[: b + 1] @ R[b, : b + 1] / n[: b + 1].sum()) for b in range(len(R))]


def avg_incremental_acc(R, n) -> float:
    return float(np.mean(accuracy_curve(R, n)))


def last_acc(R, n) -> float:
    return accuracy_curve(R, n)[-1]
