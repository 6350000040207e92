import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cl_adapters.metrics import (DEFINITIONS, LinearProbe, acc, accuracy_curve, avg_incremental_acc, bwt, forgetting, fwt,
                                 fwt_probe, intransigence, last_acc, summarize, transfer_vs_single)
from cl_adapters.runs.run import run
from cl_adapters.streams.base import task_dataset

# R[i, j]: accuracy on task j after training task i (hand-made, 3 tasks)
R = np.array(
    [
        [0.9, 0.2, 0.1],
        [0.7, 0.8, 0.3],
        [0.6, 0.9, 0.5],
    ]
)


def test_acc_is_mean_of_last_row():
    assert acc(R) == pytest.approx((0.6 + 0.9 + 0.5) / 3)


def test_bwt_gem():
    # (R[2,0]-R[0,0] + R[2,1]-R[1,1]) / 2 = (-0.3 + 0.1) / 2
    assert bwt(R) == pytest.approx(-0.1)


def test_forgetting_uses_max_over_earlier_rows():
    # task 0: max(0.9, 0.7) - 0.6 = 0.3; task 1: 0.8 - 0.9 = -0.1
    assert forgetting(R) == pytest.approx(0.1)
    # the max differs from Avalanche's first-value convention when accuracy rises then falls
    R2 = np.array([[0.5, 0.0], [0.4, 0.9]])
    assert forgetting(R2) == pytest.approx(0.1)
    R3 = np.array([[0.5, 0.1, 0.0], [0.8, 0.9, 0.0], [0.6, 0.9, 0.7]])
    assert forgetting(R3) == pytest.approx(((0.8 - 0.6) + (0.9 - 0.9)) / 2)
    # only the rows since a task was trained count: before, it is read through an untrained head (or not at all)
    R4 = np.array([[0.9, 0.95, np.nan], [0.7, 0.8, np.nan], [0.6, 0.9, 0.5]])
    assert forgetting(R4) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.9)) / 2)


def test_fwt_against_untrained_baseline():
    b = np.array([0.5, 0.25, 0.2])
    # (R[0,1]-b[1] + R[1,2]-b[2]) / 2 = (-0.05 + 0.1) / 2
    assert fwt(R, b) == pytest.approx(0.025)


def test_transfer_and_intransigence():
    S = np.array([0.8, 0.8, 0.8])
    assert transfer_vs_single(R, S) == pytest.approx(((0.9 - 0.8) + 0 + (0.5 - 0.8)) / 3)
    J = np.array([1.0, 0.9, 0.8])
    assert intransigence(R, J) == pytest.approx(((1.0 - 0.9) + (0.9 - 0.8) + (0.8 - 0.5)) / 3)


def test_single_task_and_perfect_retention():
    assert bwt([[0.7]]) == 0.0 and forgetting([[0.7]]) == 0.0
    same = np.array([[0.9, 0.1], [0.9, 0.8]])
    assert bwt(same) == 0.0 and forgetting(same) == 0.0


def test_accuracy_curve_weights_each_task_by_its_eval_samples():
    """A_b pools the samples of tasks 0..b (LAMDA-PILOT's top-1 on all classes seen): unequal sizes, so it is not the
    mean over tasks. R[b, j > b] (tasks not seen yet) is never read."""
    n = [10, 30, 60]
    # A_0 = 0.9; A_1 = (10*0.7 + 30*0.8) / 40 = 31/40; A_2 = (10*0.6 + 30*0.9 + 60*0.5) / 100 = 63/100
    assert accuracy_curve(R, n) == pytest.approx([0.9, 0.775, 0.63])
    assert avg_incremental_acc(R, n) == pytest.approx((0.9 + 0.775 + 0.63) / 3)
    assert last_acc(R, n) == pytest.approx(0.63) and acc(R) == pytest.approx(2.0 / 3)  # the unweighted mean differs
    assert accuracy_curve(R, [5, 5, 5]) == pytest.approx([0.9, 0.75, 2.0 / 3])  # equal sizes: last_acc = acc
    unseen = R.copy()
    unseen[np.triu_indices(3, 1)] = np.nan
    assert accuracy_curve(unseen, n) == accuracy_curve(R, n)
    assert summarize(R, sizes=n).items() >= {"acc": acc(R), "bwt": bwt(R), "forgetting": forgetting(R),
                                             "avg_incremental_acc": avg_incremental_acc(R, n),
                                             "last_acc": last_acc(R, n)}.items()
    assert {"avg_incremental_acc", "last_acc"} <= set(DEFINITIONS) and "task-IL" in DEFINITIONS["avg_incremental_acc"]
    with pytest.raises(ValueError, match="one entry per task"):
        accuracy_curve(R, [10, 30])
    with pytest.raises(ValueError, match="sizes must be >= 0"):
        accuracy_curve(R, [0, 30, 60])


def test_summarize_keys_and_bad_shapes():
    assert set(summarize(R, b=[0, 0, 0])) == {"acc", "bwt", "forgetting", "fwt"}
    with pytest.raises(ValueError, match="square"):
        acc(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="one entry per task"):
        fwt(R, [0.1, 0.2])


def test_probe_fwt_is_the_mean_gain_over_the_initial_models_probe():
    assert fwt_probe([None, 0.8, 0.9], [None, 0.7, 0.95]) == pytest.approx(0.025)  # (0.1 - 0.05) / 2
    assert set(summarize(R, P=[None, 0.8, 0.9], P0=[None, 0.7, 0.95])) == {"acc", "bwt", "forgetting", "fwt_probe"}


def test_probe_fwt_leaves_out_the_tasks_without_a_probe():
    assert fwt_probe([None, None, 0.9], [None, None, 0.95]) == pytest.approx(-0.05)
    assert fwt_probe([None, None, None], [None, None, None]) is None
    assert "fwt_probe" not in summarize(R, P=[None, None, None], P0=[None, None, None])


class Features(torch.nn.Module):
    """A stand-in model whose features are the inputs, optionally with their product (what makes XOR linear)."""

    def __init__(self, product: bool):
        super().__init__()
        self.product = product

    def features(self, x, route):
        return torch.cat([x, x[:, :1] * x[:, 1:]], 1) if self.product else x


def test_linear_probe_on_a_hand_made_case():
    """Task 1 is XOR of two signs: a linear probe on the raw inputs gets at most three quadrants of four, one on features with
    the product is exact. Task 0 is never probed (nothing comes before it)."""
    g = torch.Generator().manual_seed(0)

    def experience(n, task):
        signs = torch.randint(0, 2, (n, 2), generator=g) * 2 - 1
        x = signs * (0.2 + 0.8 * torch.rand(n, 2, generator=g))  # a margin around the axes
        return SimpleNamespace(dataset=task_dataset(x, (x[:, 0] * x[:, 1] > 0).long(), task))

    train, test = [experience(400, 0), experience(400, 1)], [experience(200, 0), experience(200, 1)]
    probe = LinearProbe(train, test, samples=300, seed=0, batch_size=64, device="cpu")
    assert probe.measure(Features(product=True), 1) == 1.0
    assert probe.measure(Features(product=False), 1) < 0.8  # a line gets at most 3 of the 4 quadrants right
    assert probe.initial == probe.before == [None, None]


class ReaderPids(torch.utils.data.Dataset):
    """Each sample is the id of the process that read it (a lazily decoded stream decodes where it is read)."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.tensor([float(os.getpid())]), i % 2, 1

    def eval(self):
        return self


def test_the_probe_reads_its_samples_in_the_strategys_loader_workers(monkeypatch):
    """With ``num_workers`` (the strategy's), a JPEG folder stream is decoded in the loader's workers, as in
    training; with none, in the main process."""
    from cl_adapters.metrics import probe as probe_module

    read = []
    monkeypatch.setattr(probe_module, "probe_accuracy", lambda train_x, *rest: read.append(set(train_x.ravel())) or 1.0)
    stream = [SimpleNamespace(dataset=ReaderPids())] * 2
    for workers in (2, 0):
        LinearProbe(stream, stream, samples=8, seed=0, batch_size=2, device="cpu", num_workers=workers).measure(
            Features(product=False), 1)
    assert os.getpid() not in read[0] and len(read[0]) == 2 and read[1] == {os.getpid()}


def test_a_run_gives_the_probe_the_strategys_workers(make_cfg, tmp_path, monkeypatch):
    from cl_adapters.runs import evaluator

    made = []
    monkeypatch.setattr(evaluator, "LinearProbe", lambda *a, **k: made.append(LinearProbe(*a, **k)) or made[-1])
    run(make_cfg("stream=split_digits", "stream.n_tasks=2", "strategy=adapter", "strategy.epochs=1",
                 "strategy.num_workers=1"), tmp_path / "run")
    assert made[0].num_workers == 1


def test_probe_fwt_in_a_run_and_gem_fwt_only_with_a_shared_head(make_cfg, tmp_path):
    til = run(make_cfg("stream=split_digits", "strategy=lora", "strategy.epochs=1"), tmp_path / "til")
    assert "fwt" not in til["metrics"] and "fresh head per task" in til["not_applicable"]["fwt"]
    P, P0 = til["probe"]["before_task"], til["probe"]["initial"]
    assert til["metrics"]["fwt_probe"] == pytest.approx(np.mean(np.subtract(P[1:], P0[1:])))
    cil = run(make_cfg("stream=split_digits", "strategy=full_ft", "scenario=class_il", "strategy.epochs=1",
                       "probe_samples=0"), tmp_path / "cil")
    assert "fwt" in cil["metrics"] and "fwt_probe" not in cil["metrics"] and "probe" not in cil


def test_one_class_tasks_have_no_probe_and_the_run_completes(make_cfg, tmp_path):
    """stream.n_tasks=10 on digits: one class per task, on which no linear probe can be fitted. The run completes
    with the probe's entries None, each with its reason, and FWT (probe) not applicable."""
    run(make_cfg("stream.n_tasks=10", "strategy.epochs=1"), tmp_path / "run")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["run"]["status"] == "complete"
    assert results["probe"]["initial"] == results["probe"]["before_task"] == [None] * 10
    assert sorted(results["probe"]["skipped"], key=int) == [str(j) for j in range(1, 10)]
    assert results["probe"]["skipped"]["9"] == "task 9's probe samples have one class (0): a probe needs two"
    assert "fwt_probe" not in results["metrics"]
    assert results["not_applicable"]["fwt_probe"] == ("no task after the first has two classes to fit a linear probe on "
                                                      "(probe.skipped)")


def test_a_class_il_run_records_the_sample_weighted_accuracy_curve(make_cfg, tmp_path):
    """results.json's A_b is R's row b weighted by the eval sizes it records, which are the test tasks' sizes (R's
    entries are whole counts of them); Ā and A_B are the curve's mean and last value; the class order is the
    stream's. Full fine-tuning forgets, so the weighting shows: A_B != ACC."""
    from cl_adapters.outputs.report import load_runs, table
    from cl_adapters.streams import split_digits

    run(make_cfg("stream=split_digits", "scenario=class_il", "strategy=full_ft", "strategy.epochs=1", "probe_samples=0",
                 "stream.class_order=random"), tmp_path / "run")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    stream = split_digits(class_order="random", seed=0, scenario="class_il")
    n = results["eval_samples_per_task"]
    assert n == [len(e.dataset) for e in stream.test_stream] and len(set(n)) > 1
    R = np.array(results["accuracy_matrix"])
    assert np.allclose(R * n, np.round(R * n), atol=1e-9)  # R[i, j] = correct / n_j
    curve = results["accuracy_curve"]
    assert curve == accuracy_curve(R, n) and len(curve) == 5
    assert curve[-1] == pytest.approx(float(np.round(R[-1] * n).sum() / sum(n)))  # one pool of all test samples
    m = results["metrics"]
    assert m["avg_incremental_acc"] == pytest.approx(np.mean(curve)) and m["last_acc"] == curve[-1] != m["acc"]
    assert results["class_order"] == [c for task in stream.classes_per_task for c in task] != list(range(10))
    header = table(load_runs([tmp_path])[0]).splitlines()[2]
    assert "| avg incremental acc Ā | last acc A_B |" in header


def test_the_class_order_is_the_streams_class_ids_flattened_or_null():
    from cl_adapters.runs.run import class_order

    assert class_order(SimpleNamespace(classes_per_task=[[3, 1], [0, 2]])) == [3, 1, 0, 2]
    assert class_order(SimpleNamespace(classes_per_task=[["negative", "positive"]])) is None  # a text stream's names
    assert class_order(SimpleNamespace()) is None


def test_a_metric_module_in_added_joins_the_table(tmp_path, monkeypatch):
    """A module with a ``METRICS`` tuple in ``metrics/added/`` is all a new metric takes: its rows are found."""
    import importlib

    from cl_adapters.metrics import spec

    (tmp_path / "zz_added").mkdir()
    (tmp_path / "zz_added" / "__init__.py").write_text("")
    (tmp_path / "zz_added" / "mine.py").write_text(
        "from cl_adapters.metrics.metric import Metric\n"
        "METRICS = (Metric('mine', 'mine', 'R[0, 0]', lambda m: float(m.R[0][0]), accuracy=True),)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = spec.rows_of(importlib.import_module("zz_added"))
    assert [m.key for m in rows] == ["mine"] and rows[0].compute(spec.Inputs(np.array([[0.5]]))) == 0.5
