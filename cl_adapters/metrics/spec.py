"""Every metric a run reports, once: its key, definition, function, report column and console format.

results.json (``metrics``, ``metric_definitions``), the console, the report's columns, the report's check of a
results.json, W&B and the docs' metric reference all read ``METRICS``; a new metric is a row here and its
function (``matrix.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cl_adapters.metrics import matrix


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


def _given(*names: str):
    """``fn(inputs)`` where the inputs ``names`` are all there, else None."""
    def wrap(fn):
        return lambda m: fn(m) if all(getattr(m, n) is not None for n in names) else None
    return wrap


METRICS = (  # in the report's column order
    Metric("acc", "ACC", "mean_j R[T-1, j]", lambda m: matrix.acc(m.R), accuracy=True),
    Metric("bwt", "BWT", "mean_{j<T-1} (R[T-1, j] - R[j, j])  (GEM)", lambda m: matrix.bwt(m.R)),
    Metric("forgetting", "forgetting", "mean_{j<T-1} (max_{j<=l<T-1} R[l, j] - R[T-1, j])  (Chaudhry 2018, the best "
           "accuracy since task j was trained)", lambda m: matrix.forgetting(m.R)),
    Metric("avg_incremental_acc", "avg incremental acc Ā",
           "mean_b A_b, A_b = sum_{j<=b} n_j R[b, j] / sum_{j<=b} n_j, n_j = task j's eval samples: accuracy on one "
           "pool of all seen tasks' samples (LAMDA-PILOT's average incremental accuracy; in task-IL with task "
           "labels, over the tasks seen)",
           _given("sizes")(lambda m: matrix.avg_incremental_acc(m.R, m.sizes)), accuracy=True,
           optional=True),  # runs recorded before the accuracy curve have none
    Metric("last_acc", "last acc A_B", "A_{T-1}: sample-weighted accuracy on all tasks after the last (LAMDA-PILOT's "
           "last accuracy; acc weights every task equally)",
           _given("sizes")(lambda m: matrix.last_acc(m.R, m.sizes)), accuracy=True, optional=True),
    Metric("fwt_probe", "FWT (probe)", "mean_{j>0} (P[j] - P0[j]), P[j] = linear-probe accuracy on task j (logistic "
           "regression on a fixed subsample of its training data, scored on its eval data) on the features task j "
           "starts from after task j-1, P0[j] the same on the initial model",
           _given("P", "P0")(lambda m: matrix.fwt_probe(m.P[: len(m.R)], m.P0[: len(m.R)]))),
    Metric("fwt", "FWT (GEM)", "mean_{j>0} (R[j-1, j] - b[j]), b = untrained model  (GEM; only with a shared head: n/a "
           "with a fresh head per task, whose R[j-1, j] reads task j through an untrained head)",
           _given("b")(lambda m: matrix.fwt(m.R, m.b))),
    Metric("transfer_vs_single", "transfer vs single", "mean_j (R[j, j] - S[j]), S = single-task reference",
           _given("S")(lambda m: matrix.transfer_vs_single(m.R, m.S))),
    Metric("intransigence", "intransigence", "mean_j (J[j] - R[j, j]), J = joint training on tasks 0..j",
           _given("J")(lambda m: matrix.intransigence(m.R, m.J))),
    Metric("acc_til", "ACC with task labels", "mean_j R_til[T-1, j], R_til = the same model evaluated with task labels",
           _given("R_til")(lambda m: matrix.acc(m.R_til)), accuracy=True, optional=True),  # class/domain-IL
    Metric("til_cil_gap", "TIL-CIL gap", "acc_til - acc: what not being given the task label costs",
           _given("R_til")(lambda m: matrix.acc(m.R_til) - matrix.acc(m.R)), optional=True),
    Metric("task_id_acc", "task-ID acc", "mean_j Q[T-1, j], Q[i, j] = share of task j's test samples routed to task j "
           "after task i", _given("Q")(lambda m: matrix.acc(m.Q)), accuracy=True, optional=True),
    Metric("acc_average", "ACC averaged adapter", "mean_j accuracy on task j after the last task with every task's "
           "adapter replaced by their parameter average (compositions=[average]; each sample through its own task's "
           "head)", None, accuracy=True, optional=True),
)
BY_KEY = {m.key: m for m in METRICS}
DEFINITIONS = {m.key: m.definition for m in METRICS}  # what a results.json records as ``metric_definitions``


def summarize(R, **inputs) -> dict[str, float]:
    """Every metric the inputs allow (``Inputs``' fields), keyed and ordered as ``METRICS``."""
    given = Inputs(R, **inputs)
    values = {m.key: m.compute(given) for m in METRICS if m.compute is not None}
    return {k: v for k, v in values.items() if v is not None}
