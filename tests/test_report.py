"""The comparison table: groups runs by strategy + plugins and averages over seeds."""

import json

import pytest

from cl_adapters.report import load_runs, main, table


def write(path, strategy, seed, acc, bwt, plugins=(), status="complete", transfer=None, fusion=None):
    metrics = {"acc": acc, "bwt": bwt, "forgetting": -bwt}
    if transfer is not None:
        metrics["transfer_vs_single"] = transfer
    results = {
        "run": {"strategy": strategy, "plugins": list(plugins), "status": status, "fusion": fusion},
        "config": {"seed": seed},
        "metrics": metrics,
        "costs": [{"trainable_params": 100, "bytes_per_task": 400, "train_seconds": 1.0},
                  {"trainable_params": 10, "bytes_per_task": 40, "train_seconds": 2.0}],
    }
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(results))


def test_table_groups_seeds_and_plugins(tmp_path):
    write(tmp_path / "0", "adapter", 0, 0.90, 0.0, transfer=0.01)
    write(tmp_path / "1", "adapter", 1, 0.80, 0.0, transfer=0.03)
    write(tmp_path / "2", "full_ft", 0, 0.70, -0.1, plugins=["ewc"])
    write(tmp_path / "3", "full_ft", 1, 0.10, -0.9, status="running")  # unfinished: left out
    write(tmp_path / "2" / "references" / "joint", "joint", 0, 0.99, 0.0)  # trained inside a run: left out
    write(tmp_path / "4", "adapter_fusion", 0, 0.91, 0.0, fusion="light")
    write(tmp_path / "5", "adapter_fusion", 0, 0.92, 0.0, fusion="full")
    lines = table(load_runs([tmp_path])).splitlines()
    assert len(lines) == 6
    assert lines[2].startswith("| adapter | 0,1 | 0.8500 ± 0.0707 | 0.0000 ± 0.0000 |")
    assert "| 0.0200 ± 0.0141 |" in lines[2] and "| 100 / 10 | 40 | 3.0 |" in lines[2]
    assert lines[3].startswith("| adapter_fusion[full] | 0 | 0.9200 |")
    assert lines[4].startswith("| adapter_fusion[light] | 0 | 0.9100 |")
    assert lines[5].startswith("| full_ft+ewc | 0 | 0.7000 | -0.1000 | 0.1000 | - | - |")


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no complete results.json"):
        main([str(tmp_path)])
