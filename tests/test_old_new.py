"""Accuracy on old vs new classes (metrics/added/old_new.py): hand-computed values, edges, and a run that reports it."""

import numpy as np
import pytest

from cl_adapters.metrics.added.old_new import old_acc, old_new_curves
from cl_adapters.metrics.spec import BY_KEY, summarize

R = [[0.9, 0.0, 0.0],
     [0.6, 0.8, 0.0],
     [0.5, 0.4, 0.7]]
SIZES = [10, 30, 20]


def test_old_and_new_after_each_step_by_hand():
    """Old_1 = R[1,0] = 0.6; Old_2 = (10 * 0.5 + 30 * 0.4) / 40 = 0.425 (pooled: task 1 weighs 3x); New = the diagonal."""
    old, new = old_new_curves(R, SIZES)
    assert old == pytest.approx([0.6, 0.425]) and new == pytest.approx([0.9, 0.8, 0.7])
    m = summarize(R, sizes=SIZES)
    assert m["old_acc"] == pytest.approx(0.5125) and m["new_acc"] == pytest.approx(0.8)
    assert old_new_curves(R, [1, 1, 1])[0][1] == pytest.approx(0.45)  # equal sizes: the plain mean


def test_edges_one_task_no_sizes_and_bad_input():
    assert summarize([[0.7]], sizes=[5]) == {"acc": 0.7, "bwt": 0.0, "forgetting": 0.0, "avg_incremental_acc": 0.7,
                                             "last_acc": 0.7, "new_acc": 0.7}  # no old classes yet: no old_acc
    assert old_acc([[0.7]], [5]) is None
    assert not {"old_acc", "new_acc"} & set(summarize(R))  # a run without eval sizes (recorded before them)
    with pytest.raises(ValueError, match="positive sample count"):
        old_new_curves(R, [10, 0, 20])
    assert BY_KEY["old_acc"].accuracy and BY_KEY["new_acc"].optional


def test_a_class_il_run_reports_it(make_cfg, tmp_path):
    from cl_adapters.runs.run import run

    results = run(make_cfg("stream=split_digits", "stream.n_tasks=2", "scenario=class_il", "strategy=full_ft",
                           "strategy.epochs=1", "probe_samples=0"), tmp_path / "run")
    R, n, m = np.array(results["accuracy_matrix"]), results["eval_samples_per_task"], results["metrics"]
    assert m["old_acc"] == pytest.approx(R[1, 0]) and m["new_acc"] == pytest.approx((R[0, 0] + R[1, 1]) / 2)
    assert "old_acc" in results["metric_definitions"] and len(n) == 2
