"""End-to-end runs on split digits: the properties the platform promises."""

import json
import re

import numpy as np
import pytest

from cl_adapters.metrics.spec import METRICS
from cl_adapters.runs.run import run


@pytest.fixture(scope="module")
def adapter_run(tmp_path_factory):
    from hydra import compose, initialize_config_dir

    from cl_adapters import CONFIG_DIR

    out = tmp_path_factory.mktemp("adapter")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["stream=split_digits", "strategy=adapter", "logger=console",
                                           f"references.dir={out}/refs"])  # nothing written into the repo
    return run(cfg, out), out


def test_routed_adapters_do_not_forget_at_all(adapter_run):
    results, _ = adapter_run
    R = np.array(results["accuracy_matrix"])
    assert results["metrics"]["bwt"] == 0.0 and results["metrics"]["forgetting"] == 0.0
    for j in range(len(R)):  # every column is constant from the row that trained it
        assert (R[j:, j] == R[j, j]).all()
    assert results["metrics"]["acc"] >= 0.95


def test_results_json_is_complete(adapter_run):
    results, out = adapter_run
    saved = json.loads((out / "results.json").read_text())
    assert saved["run"]["status"] == "complete"
    assert np.array(saved["accuracy_matrix"]).shape == (5, 5) and len(saved["untrained_accuracy"]) == 5
    absent = {"fwt",  # GEM's FWT: n/a, a head per task
              "transfer_vs_single", "intransigence",  # no reference cached
              "acc_til", "til_cil_gap", "task_id_acc"}  # task-IL: no task-label pass, no router
    assert set(saved["metrics"]) == {m.key for m in METRICS if m.compute} - absent  # every other metric of the table
    assert len(saved["accuracy_curve"]) == len(saved["eval_samples_per_task"]) == 5 and saved["class_order"] == list(range(10))
    assert "fwt" in saved["not_applicable"] and saved["probe"]["initial"][0] is None and len(saved["probe"]["before_task"]) == 5
    assert saved["versions"]["torch"].startswith("2.13.0") and saved["config"]["strategy"]["epochs"] == 10
    costs = saved["costs"]
    assert len(costs) == 5 and all(c["train_samples_per_s"] > 0 and c["peak_rss_bytes"] > 0 for c in costs)
    # the first task trains the from-scratch backbone; later tasks only their adapter and head
    assert costs[0]["trainable_params"] > costs[1]["trainable_params"] == costs[4]["trainable_params"]
    assert costs[1]["bytes_per_task"] == 4 * costs[1]["trainable_params"]
    assert [c["optimizer_steps"] for c in costs] == [10 * -(-c["train_samples"] // 10 // 32) for c in costs]  # 10 epochs
    assert saved["throughput"]["eval_samples_per_s"] > 0


def test_full_fine_tuning_forgets(make_cfg, tmp_path):
    results = run(make_cfg("stream=split_digits", "strategy=full_ft"), tmp_path)
    assert results["metrics"]["bwt"] < -0.005 and results["metrics"]["forgetting"] > 0.005
    # the whole backbone and the heads of the tasks so far: each task adds one head
    params = [c["trainable_params"] for c in results["costs"]]
    assert len({b - a for a, b in zip(params, params[1:])}) == 1 and params[1] > params[0]


def test_nan_loss_stops_with_a_clear_error_and_keeps_results(make_cfg, tmp_path):
    from cl_adapters.errors import UserError

    cfg = make_cfg("stream=split_digits", "strategy=full_ft", "strategy.optimizer.lr=1e30", "strategy.epochs=3")
    with pytest.raises(UserError, match="training loss is nan"):
        run(cfg, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())  # kept, and says why it stopped
    assert saved["run"]["status"] == "failed" and "training loss is nan" in saved["run"]["error"]


@pytest.mark.slow
def test_split_mnist_adapter_reaches_98(make_cfg, tmp_path):
    results = run(make_cfg("stream=split_mnist", "strategy=adapter"), tmp_path)
    assert results["metrics"]["acc"] >= 0.98 and results["metrics"]["bwt"] == 0.0


def test_progress_by_epoch_prints_each_epochs_mean_loss(make_cfg, tmp_path, capsys):
    run(make_cfg("strategy.epochs=2", "progress=epoch"), tmp_path)
    lines = re.findall(r"task (\d)/5 epoch (\d)/2 loss (\d+\.\d{4})", capsys.readouterr().out)
    assert [(t, e) for t, e, _ in lines] == [(str(t), str(e)) for t in range(1, 6) for e in (1, 2)]
    assert all(float(loss) > 0 for *_, loss in lines)


@pytest.mark.parametrize("overrides", [("strategy=adapter_fusion",), ("strategy=full_ft", "plugins=[lwf]")])
def test_tasks_not_trained_yet_are_not_evaluated_and_nothing_else_moves(make_cfg, tmp_path, monkeypatch, overrides):
    """Task-IL with a head per task: no metric reads R[i, j > i], so those evaluations are skipped; the RNG
    draws they took are still taken, so the measured entries and every metric equal a run that evaluated all."""
    import sys

    cfg = make_cfg("stream=split_digits", "strategy.epochs=1", *overrides)
    skipped = run(cfg, tmp_path / "skipped")
    assert json.loads((tmp_path / "skipped" / "results.json").read_text())["accuracy_matrix"] == skipped["accuracy_matrix"]
    monkeypatch.setattr(sys.modules["cl_adapters.runs.evaluator"], "unseen_tasks_needed", lambda cfg, model: True)
    full = run(cfg, tmp_path / "full")
    T = len(full["accuracy_matrix"])
    for i, (mine, every) in enumerate(zip(skipped["accuracy_matrix"], full["accuracy_matrix"])):
        assert mine[: i + 1] == every[: i + 1] and mine[i + 1:] == [None] * (T - i - 1)
        assert None not in every
    assert skipped["metrics"] == full["metrics"] and "fwt_probe" in skipped["metrics"]
