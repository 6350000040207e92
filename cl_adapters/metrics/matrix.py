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

DEFINITIONS = {
    "acc": "mean_j R[T-1, j]",
    "bwt": "mean_{j<T-1} (R[T-1, j] - R[j, j])  (GEM)",
    "forgetting": "mean_{j<T-1} (max_{j<=l<T-1} R[l, j] - R[T-1, j])  (Chaudhry 2018, the best accuracy since task j "
                  "was trained)",
    "fwt": "mean_{j>0} (R[j-1, j] - b[j]), b = untrained model  (GEM; only with a shared head: n/a with a fresh head "
           "per task, whose R[j-1, j] reads task j through an untrained head)",
    "fwt_probe": "mean_{j>0} (P[j] - P0[j]), P[j] = linear-probe accuracy on task j (logistic regression on a fixed "
                 "subsample of its training data, scored on its eval data) on the features task j starts from "
                 "after task j-1, P0[j] the same on the initial model",
    "transfer_vs_single": "mean_j (R[j, j] - S[j]), S = single-task reference",
    "intransigence": "mean_j (J[j] - R[j, j]), J = joint training on tasks 0..j",
    "avg_incremental_acc": "mean_b A_b, A_b = sum_{j<=b} n_j R[b, j] / sum_{j<=b} n_j, n_j = task j's eval samples: "
                           "accuracy on one pool of all seen tasks' samples (LAMDA-PILOT's average incremental "
                           "accuracy; in task-IL with task labels, over the tasks seen)",
    "last_acc": "A_{T-1}: sample-weighted accuracy on all tasks after the last (LAMDA-PILOT's last accuracy; acc weights "
                "every task equally)",
    "acc_til": "mean_j R_til[T-1, j], R_til = the same model evaluated with task labels",
    "til_cil_gap": "acc_til - acc: what not being given the task label costs",
    "task_id_acc": "mean_j Q[T-1, j], Q[i, j] = share of task j's test samples routed to task j after task i",
    "acc_average": "mean_j accuracy on task j after the last task with every task's adapter replaced by their "
                   "parameter average (compositions=[average]; each sample through its own task's head)",
}

# the metrics that are accuracies, in [0, 1]; every other one is a difference of two, in [-1, 1] (shown signed)
ACCURACIES = ("acc", "avg_incremental_acc", "last_acc", "acc_til", "task_id_acc", "acc_average")


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


def summarize(R, b=None, S=None, J=None, P=None, P0=None, sizes=None) -> dict[str, float]:
    """Every metric the inputs allow, keyed as in ``DEFINITIONS`` (``sizes``: each task's eval samples)."""
    out = {"acc": acc(R), "bwt": bwt(R), "forgetting": forgetting(R)}
    if sizes is not None:
        curve = accuracy_curve(R, sizes)
        out |= {"avg_incremental_acc": float(np.mean(curve)), "last_acc": curve[-1]}
    if b is not None:
        out["fwt"] = fwt(R, b)
    if P is not None and (gain := fwt_probe(P[: len(R)], P0[: len(R)])) is not None:
        out["fwt_probe"] = gain
    if S is not None:
        out["transfer_vs_single"] = transfer_vs_single(R, S)
    if J is not None:
        out["intransigence"] = intransigence(R, J)
    return out


def summarize_without_labels(R, R_til, Q=None) -> dict[str, float]:
    """What a scenario without test-time task labels adds: the task-IL view of the same model and, when a
    router picks tasks, its task-ID accuracy (``Q``)."""
    out = {"acc_til": acc(R_til), "til_cil_gap": acc(R_til) - acc(R)}
    if Q is not None:
        out["task_id_acc"] = acc(Q)
    return out
