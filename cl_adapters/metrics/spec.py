"""Every metric a run reports, once: its key, definition, function, report column and console format.

results.json (``metrics``, ``metric_definitions``), the console, the report's columns, the report's check of a
results.json, W&B and the docs' metric reference all read ``METRICS``. A new metric is its own module in
``metrics/added/`` whose ``METRICS`` tuple holds its rows (``metric.Metric``): found there, appended here in
module-name order, with no edit elsewhere.
"""

from __future__ import annotations

import importlib
import pkgutil

from cl_adapters.metrics import added, matrix
from cl_adapters.metrics.metric import Inputs, Metric, given

METRICS = (  # in the report's column order
    Metric("acc", "ACC", "mean_j R[T-1, j]", lambda m: matrix.acc(m.R), accuracy=True),
    Metric("bwt", "BWT", "mean_{j<T-1} (R[T-1, j] - R[j, j])  (GEM)", lambda m: matrix.bwt(m.R)),
    Metric("forgetting", "forgetting", "mean_{j<T-1} (max_{j<=l<T-1} R[l, j] - R[T-1, j])  (Chaudhry 2018, the best "
           "accuracy since task j was trained)", lambda m: matrix.forgetting(m.R)),
    Metric("avg_incremental_acc", "avg incremental acc Ā",
           "mean_b A_b, A_b = sum_{j<=b} n_j R[b, j] / sum_{j<=b} n_j, n_j = task j's eval samples: accuracy on one "
           "pool of all seen tasks' samples (LAMDA-PILOT's average incremental accuracy; in task-IL with task "
           "labels, over the tasks seen)",
           given("sizes")(lambda m: matrix.avg_incremental_acc(m.R, m.sizes)), accuracy=True,
           optional=True),  # runs recorded before the accuracy curve have none
    Metric("last_acc", "last acc A_B", "A_{T-1}: sample-weighted accuracy on all tasks after the last (LAMDA-PILOT's "
           "last accuracy; acc weights every task equally)",
           given("sizes")(lambda m: matrix.last_acc(m.R, m.sizes)), accuracy=True, optional=True),
    Metric("fwt_probe", "FWT (probe)", "mean_{j>0} (P[j] - P0[j]), P[j] = linear-probe accuracy on task j (logistic "
           "regression on a fixed subsample of its training data, scored on its eval data) on the features task j "
           "starts from after task j-1, P0[j] the same on the initial model",
           given("P", "P0")(lambda m: matrix.fwt_probe(m.P[: len(m.R)], m.P0[: len(m.R)]))),
    Metric("fwt", "FWT (GEM)", "mean_{j>0} (R[j-1, j] - b[j]), b = untrained model  (GEM; only with a shared head: n/a "
           "with a fresh head per task, whose R[j-1, j] reads task j through an untrained head)",
           given("b")(lambda m: matrix.fwt(m.R, m.b))),
    Metric("transfer_vs_single", "transfer vs single", "mean_j (R[j, j] - S[j]), S = single-task reference",
           given("S")(lambda m: matrix.transfer_vs_single(m.R, m.S))),
    Metric("intransigence", "intransigence", "mean_j (J[j] - R[j, j]), J = joint training on tasks 0..j",
           given("J")(lambda m: matrix.intransigence(m.R, m.J))),
    Metric("acc_til", "ACC with task labels", "mean_j R_til[T-1, j], R_til = the same model evaluated with task labels",
           given("R_til")(lambda m: matrix.acc(m.R_til)), accuracy=True, optional=True),  # class/domain-IL
    Metric("til_cil_gap", "TIL-CIL gap", "acc_til - acc: what not being given the task label costs",
           given("R_til")(lambda m: matrix.acc(m.R_til) - matrix.acc(m.R)), optional=True),
    Metric("task_id_acc", "task-ID acc", "mean_j Q[T-1, j], Q[i, j] = share of task j's test samples routed to task j "
           "after task i", given("Q")(lambda m: matrix.acc(m.Q)), accuracy=True, optional=True),
    Metric("acc_average", "ACC averaged adapter", "mean_j accuracy on task j after the last task with every task's "
           "adapter replaced by their parameter average (compositions=[average]; each sample through its own task's "
           "head)", None, accuracy=True, optional=True),
)


def rows_of(package) -> tuple[Metric, ...]:
    """The rows of every module in ``package`` (its ``METRICS``), in module-name order."""
    rows = []
    for module in sorted(info.name for info in pkgutil.iter_modules(package.__path__)):
        rows.extend(importlib.import_module(f"{package.__name__}.{module}").METRICS)
    return tuple(rows)


METRICS += rows_of(added)
BY_KEY = {m.key: m for m in METRICS}
if len(BY_KEY) != len(METRICS):
    raise ValueError(f"two metrics share a key: {sorted(m.key for m in METRICS)}")
DEFINITIONS = {m.key: m.definition for m in METRICS}  # what a results.json records as ``metric_definitions``


def summarize(R, **inputs) -> dict[str, float]:
    """Every metric the inputs allow (``Inputs``' fields), keyed and ordered as ``METRICS``."""
    known = Inputs(R, **inputs)
    values = {m.key: m.compute(known) for m in METRICS if m.compute is not None}
    return {k: v for k, v in values.items() if v is not None}
