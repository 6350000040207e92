"""The comparison report: groups runs by stream and strategy (+ fusion, plugins), averages over seeds,
lists what did not finish, writes Markdown, CSV and plots."""

import csv
import json

import pytest

from cl_adapters.report import load_runs, main, table


def write(path, strategy, seed, acc, bwt, plugins=(), status="complete", transfer=None, fusion=None, stream="digits"):
    metrics = {"acc": acc, "bwt": bwt, "forgetting": -bwt, "fwt": 0.0}
    if transfer is not None:
        metrics["transfer_vs_single"] = transfer
    results = {
        "run": {"strategy": strategy, "plugins": list(plugins), "status": status, "fusion": fusion, "stream": stream},
        "config": {"seed": seed},
        "metrics": metrics,
        "accuracy_matrix": [[acc, None], [acc - bwt, acc]] if status == "complete" else [[acc, None], [None, None]],
        "costs": [{"trainable_params": 100, "bytes_per_task": 400, "train_seconds": 1.0},
                  {"trainable_params": 10, "bytes_per_task": 40, "train_seconds": 2.0}],
    }
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
    assert len(lines) == 7
    assert lines[2].startswith("| digits | adapter | 0,1 | 0.8500 ± 0.0707 | 0.0000 ± 0.0000 |")
    assert "| 0.0200 ± 0.0141 |" in lines[2] and "| 100 / 10 | 220 | 3.0 |" in lines[2]
    assert lines[3].startswith("| digits | adapter_fusion[full] | 0 | 0.9200 |")
    assert lines[4].startswith("| digits | adapter_fusion[light] | 0 | 0.9100 |")
    assert lines[5].startswith("| digits | full_ft+ewc | 0 | 0.7000 | -0.1000 | 0.1000 | 0.0000 | - | - |")
    assert lines[6].startswith("| mnist | adapter | 0 | 0.5000 |")
    assert len(missing) == 2 and "3: running after 1 task(s)" in missing[0] and "7: no results.json" in missing[1]


def test_report_files(sweep, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("report")
    main([str(sweep), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == [
        "acc_vs_params.png", "accuracy_matrices.png", "report.csv", "report.md", "task_accuracy.png"]
    assert all((out / name).read_bytes()[:4] == b"\x89PNG" for name in ("acc_vs_params.png", "task_accuracy.png"))
    records = list(csv.DictReader(open(out / "report.csv")))
    assert [(r["stream"], r["run"]) for r in records][:2] == [("digits", "adapter"), ("digits", "adapter_fusion[full]")]
    assert float(records[0]["acc"]) == pytest.approx(0.85) and records[0]["seeds"] == "0 1"
    assert "Not included (unfinished or failed)" in (out / "report.md").read_text()
    assert "not included:" in capsys.readouterr().err


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no complete results.json"):
        main([str(tmp_path)])
