"""The comparison report: groups runs by stream and strategy (+ fusion, plugins), averages over seeds,
lists what did not finish, writes Markdown, CSV and plots."""

import csv
import json

import pytest

from cl_adapters.metrics.seeds import mean_ci, within_noise
from cl_adapters.outputs.report import load_runs, main, table


def write(path, strategy, seed, acc, bwt, plugins=(), status="complete", transfer=None, fusion=None, stream="digits",
          config=None, started="2026-11-24T10:00:00", model="mlp", not_applicable=None, references_missing=None,
          curve=None):
    metrics = {"acc": acc, "bwt": bwt, "forgetting": -bwt, "fwt": 0.0}
    if curve is not None:  # A_b over two tasks
        metrics |= {"avg_incremental_acc": sum(curve) / len(curve), "last_acc": curve[-1]}
    if not_applicable:
        metrics["fwt_probe"] = 0.01
    if transfer is not None:
        metrics["transfer_vs_single"] = transfer
    results = {
        "run": {"strategy": strategy, "plugins": list(plugins), "status": status, "fusion": fusion, "stream": stream,
                "started": started, "model": model},
        "config": {"seed": seed, **(config or {})},
        "versions": {"torch": "2.13.0"},
        "machine": {"platform": "Linux", "cpus": 2, "torch_threads": 1, "device": "cpu"},
        "metrics": metrics,
        "not_applicable": not_applicable or {},
        "references_missing": references_missing or {},
        "accuracy_matrix": [[acc, None], [acc - bwt, acc]] if status == "complete" else [[acc, None], [None, None]],
        "costs": [{"trainable_params": 100, "bytes_per_task": 400, "train_seconds": 1.0},
                  {"trainable_params": 10, "bytes_per_task": 40, "train_seconds": 2.0}],
    }
    if curve is not None:
        results["accuracy_curve"] = curve
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(results))


@pytest.fixture
def sweep(tmp_path):
    write(tmp_path / "0", "adapter", 0, 0.90, 0.0, transfer=0.01)
    write(tmp_path / "1", "adapter", 1, 0.80, 0.0, transfer=0.03)
    write(tmp_path / "2", "full_ft", 0, 0.70, -0.1, plugins=["ewc"])
    write(tmp_path / "3", "full_ft", 1, 0.10, -0.9, status="running")  # killed after one task: listed
    write(tmp_path / "2" / "references" / "joint", "joint", 0, 0.99, 0.0)  # trained inside a run: left out
    write(tmp_path / "4", "adapter_fusion", 0, 0.91, 0.0, fusion="light")
    write(tmp_path / "5", "adapter_fusion", 0, 0.92, 0.0, fusion="full")
    write(tmp_path / "6", "adapter", 0, 0.50, 0.0, stream="mnist")  # another stream: its own row
    (tmp_path / "7" / ".hydra").mkdir(parents=True)  # a job that failed before its first task
    return tmp_path


def test_table_groups_by_stream_and_run_and_averages_seeds(sweep):
    runs, missing = load_runs([sweep])
    lines = table(runs).splitlines()
    assert lines[0].startswith("**task_il** (task-incremental") and len(lines) == 9
    assert lines[4].startswith("| 1 | digits | adapter | 0,1 | 0.8500 ± 0.6353 | 2, 3, 4 | 0.0000 ± 0.0000 |")
    assert "| 0.0200 ± 0.1271 |" in lines[4] and "| 100 / 10 | 220 | - | 3.0 |" in lines[4]
    assert lines[5].startswith("| 2 | digits | adapter_fusion[full] | 0 | 0.9200 | 1, 3, 4 |")
    assert lines[6].startswith("| 3 | digits | adapter_fusion[light] | 0 | 0.9100 |")
    assert lines[7].startswith("| 4 | digits | full_ft+ewc | 0 | 0.7000 | 1, 2, 3 | -0.1000 | 0.1000 | - | 0.0000 | - | - |")
    assert lines[8].startswith("| 5 | mnist | adapter | 0 | 0.5000 | - |")
    assert len(missing) == 2 and "3: running after 1 task(s)" in missing[0] and "7: no results.json" in missing[1]


def test_confidence_intervals_and_noise_on_hand_made_numbers():
    mean, half = mean_ci([1.0, 2.0, 3.0])  # s = 1, t(0.975, 2) = 4.302653
    assert mean == 2.0 and half == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-6)
    assert mean_ci([0.5]) == (0.5, None) and mean_ci([None, None]) == (None, None)
    assert within_noise([0.90, 0.91, 0.92], [0.90, 0.92, 0.91])
    assert not within_noise([0.90, 0.91, 0.92], [0.95, 0.96, 0.97])  # Welch p = 0.0031
    assert within_noise([0.90, 0.91, 0.92], [0.90, 0.93, 0.96])  # p = 0.39
    assert within_noise([0.9], [0.1, 0.2])  # one seed: never told apart
    assert not within_noise([0.5, 0.5], [0.6, 0.6]) and within_noise([0.5, 0.5], [0.5, 0.5])


def test_references_have_their_own_table_and_single_task_shows_only_its_diagonal(tmp_path):
    write(tmp_path / "0", "adapter", 0, 0.90, 0.0)
    write(tmp_path / "1", "joint", 0, 0.95, -0.01)
    write(tmp_path / "2", "single_task", 0, 0.40, -0.5)  # R[1, 0] read through a reset head
    write(tmp_path / "3", "single_task", 1, 0.50, -0.4)
    text = table(load_runs([tmp_path])[0])
    strategies, references = text.split("References")
    assert "| adapter |" in strategies and "joint" not in strategies and "single_task" not in strategies
    lines = references.splitlines()
    assert lines[4].startswith("| digits | joint | 0 | J: task j after joint training on tasks 0..j | 0.9500 | 0.9500 0.9500 | 0.9500 |")
    assert lines[5].startswith("| digits | single_task | 0,1 | S: task j after training on it alone | 0.4500 ± 0.6353 | "
                               "0.4500 0.4500 | n/a (its heads are reset at every task) |")


def test_rows_without_a_reference_say_so(tmp_path):
    write(tmp_path / "0", "adapter", 0, 0.90, 0.0, transfer=0.01)
    write(tmp_path / "1", "full_ft", 0, 0.90, 0.0, references_missing={"joint": "/nowhere/joint-1.json"})
    text = table(load_runs([tmp_path])[0])
    assert "Rows 2: no single_task/joint reference was cached" in text and "Rows 1" not in text


def test_gem_fwt_is_na_with_a_head_per_task(tmp_path):
    write(tmp_path / "0", "adapter", 0, 0.90, 0.0, not_applicable={"fwt": "a fresh head per task"})
    write(tmp_path / "1", "full_ft", 0, 0.90, 0.0)
    lines = table(load_runs([tmp_path])[0]).splitlines()
    assert lines[2].split(" | ")[8:10] == ["FWT (probe)", "FWT (GEM)"]
    assert lines[4].split(" | ")[8:10] == ["0.0100", "n/a"] and lines[5].split(" | ")[8:10] == ["-", "0.0000"]


def test_report_files(sweep, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("report")
    main([str(sweep), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == [
        "acc_vs_params.png", "accuracy_matrices.png", "report.csv", "report.md", "task_accuracy.png"]
    assert all((out / name).read_bytes()[:4] == b"\x89PNG" for name in ("acc_vs_params.png", "task_accuracy.png"))
    records = list(csv.DictReader(open(out / "report.csv")))
    assert [(r["stream"], r["run"]) for r in records][:2] == [("digits", "adapter"), ("digits", "adapter_fusion[full]")]
    assert float(records[0]["acc"]) == pytest.approx(0.85) and records[0]["seeds"] == "0 1"
    text = (out / "report.md").read_text()
    assert "Versions: torch 2.13.0.  \nMachine: Linux, 2 CPUs, 1 torch thread(s), cpu." in text
    assert "Not included:" in text and "3: running after 1 task(s)" in text
    assert "not included:" in capsys.readouterr().err


def test_the_accuracy_curve_is_in_the_table_the_csv_and_a_figure(tmp_path, monkeypatch):
    """Ā and A_B next to ACC/BWT/forgetting (only where a run recorded them: not for runs from before), and
    accuracy_curve.png with one line per row: its mean A_b over seeds."""
    from cl_adapters.outputs import report

    write(tmp_path / "0", "adapter", 0, 0.90, 0.0, curve=[1.0, 0.8])
    write(tmp_path / "1", "adapter", 1, 0.80, 0.0, curve=[0.9, 0.7])
    write(tmp_path / "2", "full_ft", 0, 0.70, -0.1)  # recorded before the curve: "-"
    runs, _ = load_runs([tmp_path])
    lines = table(runs).splitlines()
    assert lines[2].split(" | ")[6:11] == ["BWT", "forgetting", "avg incremental acc Ā", "last acc A_B", "FWT (probe)"]
    assert lines[4].split(" | ")[8:10] == ["0.8500 ± 0.6353", "0.7500 ± 0.6353"]  # Ā: 0.9 and 0.8; A_B: 0.8 and 0.7
    assert lines[5].split(" | ")[8:10] == ["-", "-"]
    out = tmp_path / "report"
    main([str(tmp_path), "--out", str(out)])
    records = list(csv.DictReader(open(out / "report.csv")))
    assert float(records[0]["avg_incremental_acc"]) == pytest.approx(0.85) and float(records[0]["last_acc"]) == 0.75
    assert (out / "accuracy_curve.png").read_bytes()[:4] == b"\x89PNG"
    plotted = {}
    monkeypatch.setattr(report, "report_figures", lambda mean_R, rows, out, curves: plotted.update(curves) or [])
    report.plot(runs, out)
    assert list(plotted) == [("task_il", "digits", "adapter")] and plotted["task_il", "digits", "adapter"].tolist() == [
        0.95, 0.75]


def test_runs_recorded_before_a_metric_was_defined_are_averaged_with_the_newer_ones(tmp_path):
    """A definition added since (Ā, A_B) leaves an older run's setup as it was; a changed one does not."""
    from cl_adapters.metrics import DEFINITIONS

    older = {k: v for k, v in DEFINITIONS.items() if k not in ("avg_incremental_acc", "last_acc")}
    write(tmp_path / "0", "adapter", 0, 0.9, 0.0, config={"lr": 0.1}, curve=[1.0, 0.9])
    write(tmp_path / "1", "adapter", 1, 0.8, 0.0, config={"lr": 0.1})
    write(tmp_path / "2", "adapter", 2, 0.7, 0.0, config={"lr": 0.1})
    for i, definitions in enumerate([DEFINITIONS, older, {**older, "forgetting": "first value - last"}]):
        path = tmp_path / str(i) / "results.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "metric_definitions": definitions}))
    lines = table(load_runs([tmp_path])[0]).splitlines()[4:]
    assert [line.split(" | ")[2:4] for line in lines] == [
        ["adapter (metric_definitions.forgetting=first value - last)", "2"],
        [f"adapter (metric_definitions.forgetting={DEFINITIONS['forgetting']})", "0,1"]]


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no complete results.json"):
        main([str(tmp_path)])


def test_a_failed_job_is_listed_with_its_error(tmp_path):
    write(tmp_path / "0", "adapter", 0, 0.9, 0.0)
    write(tmp_path / "1", "lora", 0, 0.5, 0.0, status="failed")
    (tmp_path / "1" / "error.txt").write_text("strategy.optimizer: Invalid learning rate: -1\n")
    runs, missing = load_runs([tmp_path])
    assert [r["run"]["strategy"] for r in runs] == ["adapter"]
    assert missing == [f"{tmp_path / '1'}: failed after 1 task(s): strategy.optimizer: Invalid learning rate: -1"]


def test_runs_of_different_setups_are_never_averaged(tmp_path):
    write(tmp_path / "0", "adapter", 0, 0.9, 0.0, config={"strategy": {"lr": 0.001, "device": "cpu"}})
    write(tmp_path / "1", "adapter", 1, 0.7, 0.0, config={"strategy": {"lr": 0.001, "device": "cuda"}})  # same setup
    write(tmp_path / "2", "adapter", 0, 0.5, 0.0, config={"strategy": {"lr": 0.1, "device": "cpu"}})
    write(tmp_path / "3", "adapter", 0, 0.6, 0.0, config={"strategy": {"lr": 0.1}}, stream="mnist")
    write(tmp_path / "4", "adapter", 2, 0.8, 0.0, config={"strategy": {"lr": 0.001, "quantize": None}})  # a null option since
    runs, _ = load_runs([tmp_path])
    lines = table(runs).splitlines()[4:]
    assert [line.split(" | ")[1:4] for line in lines] == [
        ["digits", "adapter (strategy.lr=0.001)", "0,1,2"], ["digits", "adapter (strategy.lr=0.1)", "0"],
        ["mnist", "adapter", "0"]]


def test_rows_of_several_models_are_labelled_by_their_config_group_choices(tmp_path):
    mlp = {"_target_": "cl_adapters.models.MLP", "hidden": [256, 256]}
    vit = {"_target_": "cl_adapters.models.PatchTransformer", "dim": 128, "depth": 4}
    write(tmp_path / "0", "adapter", 0, 0.9, 0.0, config={"model": mlp, "strategy": {"lr": 0.001}})
    write(tmp_path / "1", "adapter", 0, 0.8, 0.0, config={"model": vit, "strategy": {"lr": 0.001}}, model="patch_transformer")
    write(tmp_path / "2", "adapter", 0, 0.7, 0.0, config={"model": mlp, "strategy": {"lr": 0.1}})
    write(tmp_path / "3", "full_ft", 0, 0.6, 0.0, config={"model": vit}, model="patch_transformer")
    runs, _ = load_runs([tmp_path])
    assert [line.split(" | ")[2] for line in table(runs).splitlines()[4:]] == [
        "adapter · mlp (strategy.lr=0.001)", "adapter · mlp (strategy.lr=0.1)", "adapter · patch_transformer",
        "full_ft · patch_transformer"]


def test_a_rerun_of_the_same_setup_and_seed_replaces_the_older_run(tmp_path):
    write(tmp_path / "a" / "0", "adapter", 0, 0.5, 0.0, started="2026-11-24T10:00:00")
    write(tmp_path / "b" / "0", "adapter", 0, 0.9, 0.0, started="2026-11-24T11:00:00")
    runs, missing = load_runs([tmp_path / "b", tmp_path / "a"])
    assert [r["metrics"]["acc"] for r in runs] == [0.9]
    assert missing == [f"{tmp_path / 'a' / '0'}: the same setup and seed as {tmp_path / 'b' / '0'}, which is newer and used"]


def test_wandb_report_offline_says_so_and_keeps_the_local_report(tmp_path, monkeypatch, capsys):
    write(tmp_path / "0", "adapter", 0, 0.9, 0.0, config={"logger": {"wandb": {"project": "p", "entity": None}}})
    (tmp_path / "0" / "wandb" / "offline-run-20261124_100000-abc123").mkdir(parents=True)
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(SystemExit, match=r"--wandb: W&B is offline \(WANDB_MODE=offline\): no W&B Report made"):
        main([str(tmp_path), "--out", str(tmp_path / "report"), "--wandb"])
    assert (tmp_path / "report" / "report.md").exists()


def test_wandb_report_without_wandb_runs_is_refused(tmp_path):
    write(tmp_path / "0", "adapter", 0, 0.9, 0.0)
    with pytest.raises(SystemExit, match="none of these runs logged to W&B"):
        main([str(tmp_path), "--wandb"])


def test_wandb_report_compares_exactly_the_sweeps_runs(tmp_path):
    from cl_adapters.outputs.wandb import report, run_ids

    for i in range(2):
        write(tmp_path / str(i), "adapter", i, 0.9, 0.0, config={"logger": {"wandb": {"project": "p", "entity": "me"}}})
        (tmp_path / str(i) / "wandb" / f"offline-run-20261124_10000{i}-id{i}").mkdir(parents=True)
    runs, _ = load_runs([tmp_path])
    ((where, ids),) = run_ids(runs).items()
    assert where == ("me", "p") and ids == ["id0", "id1"]
    plan = report("me", "p", ids, "sweep", table(runs))
    grid = plan.blocks[1]
    assert plan.blocks[0].text == table(runs)
    assert grid.runsets[0].filters == """Metric("ID") in ['id0', 'id1']"""
    assert grid.runsets[0].groupby == ["config.run_name"]
    assert [p.title for p in grid.panels] == ["ACC", "BWT", "forgetting", "ACC vs trainable parameters per task",
                                              "ACC as the stream goes on", "A_b: accuracy on all tasks seen so far"]
    assert grid.panels[-1].y == ["accuracy_curve"]


def test_wandb_report_when_wandb_is_unreachable_saves_nothing(tmp_path, monkeypatch):
    import wandb

    def no_login():
        raise RuntimeError("not logged in")

    write(tmp_path / "0", "adapter", 0, 0.9, 0.0, config={"logger": {"wandb": {"project": "p", "entity": None}}})
    (tmp_path / "0" / "wandb" / "run-20261124_100000-abc123").mkdir(parents=True)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(wandb, "Api", no_login)
    with pytest.raises(SystemExit, match=r"W&B is not reachable \(RuntimeError: not logged in\); no W&B Report made"):
        main([str(tmp_path), "--wandb"])


def nested(depth: int):
    return [nested(depth - 1)] if depth else 0


BAD = {  # defect -> (the good record changed: text or bytes, what the report says of the file)
    "truncated": (lambda r: json.dumps(r)[:100], "unreadable, not valid JSON (Unterminated string"),
    "binary": (lambda r: b"\xff\xfe\x00garbage", "unreadable, 'utf-8' codec can't decode"),
    "not an object": (lambda r: "[1, 2]", "unreadable, no run.status"),
    "no run key": (lambda r: json.dumps({k: v for k, v in r.items() if k != "run"}), "unreadable, no run.status"),
    "deep JSON": (lambda r: json.dumps(r)[:-1] + ', "extra": ' + "[" * 100_000 + "]" * 100_000 + "}",
                  "unreadable, nested too deeply to parse"),
    "deep config": (lambda r: json.dumps({**r, "config": {"seed": 0, "deep": nested(600)}}),
                    "left out, config must be an object nested at most 32 deep, got {"),
    "empty costs": (lambda r: json.dumps({**r, "costs": []}), "left out, costs must be a non-empty list of objects"),
    "infinite train_seconds": (lambda r: json.dumps({**r, "costs": [{**r["costs"][0], "train_seconds": float("inf")}]}),
                               "left out, costs must be a non-empty list of objects"),
    "ragged accuracy_matrix": (lambda r: json.dumps({**r, "accuracy_matrix": [[0.5], [0.6, 0.5]]}),
                               "left out, accuracy_matrix must be a square, non-empty list of rows of accuracies in "
                               "[0, 1], null only above the diagonal, got [[0.5], [0.6, 0.5]]"),
    "string accuracy_matrix": (lambda r: json.dumps({**r, "accuracy_matrix": "0.5"}),
                               "left out, accuracy_matrix must be a square, non-empty list"),
    "empty accuracy_matrix": (lambda r: json.dumps({**r, "accuracy_matrix": []}),
                              "left out, accuracy_matrix must be a square, non-empty list"),
    "accuracy above 1": (lambda r: json.dumps({**r, "accuracy_matrix": [[1.5, None], [0.6, 0.5]]}),
                         "left out, accuracy_matrix must be a square, non-empty list"),
    "unknown scenario": (lambda r: json.dumps({**r, "scenario": "open_world"}),
                         "left out, scenario must be one of task_il, class_il, domain_il, got 'open_world'"),
    "machine as a list": (lambda r: json.dumps({**r, "machine": ["Linux", 2]}),
                          "left out, machine must be an object with platform, cpus, torch_threads, device, or null, "
                          "got ['Linux', 2]"),
    "seed as a string": (lambda r: json.dumps({**r, "config": {"seed": "0"}}), "left out, config.seed must be an integer"),
    "A_B above 1": (lambda r: json.dumps({**r, "metrics": {**r["metrics"], "last_acc": 1.5}}),
                    "left out, metrics.last_acc must be an accuracy in [0, 1] or null, got 1.5"),
    "negative Ā": (lambda r: json.dumps({**r, "metrics": {**r["metrics"], "avg_incremental_acc": -0.2}}),
                   "left out, metrics.avg_incremental_acc must be an accuracy in [0, 1] or null, got -0.2"),
    "accuracy_curve above 1": (lambda r: json.dumps({**r, "accuracy_curve": [0.5, 2.0]}),
                               "left out, accuracy_curve must be a list of accuracies in [0, 1], got [0.5, 2.0]"),
    "short accuracy_curve": (lambda r: json.dumps({**r, "accuracy_curve": [0.5]}),
                             "left out, accuracy_curve must have one entry per row of accuracy_matrix (2), got 1"),
    "absurd acc": (lambda r: json.dumps({**r, "metrics": {**r["metrics"], "acc": 1e308}}),
                   "left out, metrics.acc must be an accuracy in [0, 1], got 1e+308"),
    "infinite acc": (lambda r: json.dumps({**r, "metrics": {**r["metrics"], "acc": float("inf")}}),
                     "left out, metrics.acc must be an accuracy in [0, 1], got inf"),
    "NaN bwt and a string forgetting": (
        lambda r: json.dumps({**r, "metrics": {**r["metrics"], "bwt": float("nan"), "forgetting": "0.1"}}),
        "left out, metrics.bwt must be a difference of accuracies in [-1, 1] or null, got nan; metrics.forgetting must be "
        "a difference of accuracies in [-1, 1] or null, got '0.1'"),
}


@pytest.mark.parametrize("defect", list(BAD))
def test_one_bad_results_file_is_listed_and_the_rest_reported(tmp_path, capsys, defect):
    """Whatever is wrong in one results.json (what the report reads of a complete run, checked against
    ``record.RECORD``), the report is written from the others and lists the file with the reason, naming the field.
    Non-finite or impossible numbers leave the run out too: averaged with the other seeds, they would make the
    row's mean and interval as wrong as they are."""
    write(tmp_path / "good", "adapter", 0, 0.9, 0.0)
    write(tmp_path / "bad", "full_ft", 0, 0.5, -0.1)
    bad = tmp_path / "bad" / "results.json"
    change, reason = BAD[defect]
    text = change(json.loads(bad.read_text()))
    bad.write_bytes(text) if isinstance(text, bytes) else bad.write_text(text)
    main([str(tmp_path), "--out", str(tmp_path / "report")])
    out, err = capsys.readouterr()
    assert "| digits | adapter | 0 | 0.9000 |" in out and "full_ft" not in out
    assert f"not included: {bad}: {reason}" in err
    assert f"- {bad}: {reason}" in (tmp_path / "report" / "report.md").read_text()


def test_an_unwritable_report_folder_is_one_line(tmp_path, capsys):
    write(tmp_path / "good", "adapter", 0, 0.9, 0.0)
    (tmp_path / "file").write_text("a file where the report folder should be")
    with pytest.raises(SystemExit, match=r"^error: cannot write .*file/report.md: .*file is not a directory"):
        main([str(tmp_path / "good"), "--out", str(tmp_path / "file")])
