"""The W&B logger, offline: what a run writes is read back from W&B's own run file."""

import json
import struct

import pytest

from cl_adapters.outputs import WandbLogger
from cl_adapters.runs.run import run

BLOCK, FULL, FIRST, LAST = 32768, 1, 2, 4


def wandb_records(path):
    """The records of an offline ``run-*.wandb`` file (a LevelDB-style log of W&B protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length, kind) == (0, 0):  # block padding
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (FULL, FIRST) else buf + chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record


def run_file(directory):
    """The offline run file, once complete: ``finish()`` returns before W&B's service has closed the file
    (the close is only announced), so the service is shut down first (it restarts on the next run)."""
    import wandb

    wandb.teardown()
    (path,) = directory.glob("wandb/offline-run-*/run-*.wandb")
    return path


def read_run(directory):
    path = run_file(directory)
    history, summary, run = {}, {}, None
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind in ("history", "summary"):
            items = record.history.item if kind == "history" else record.summary.update
            values = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in items}
            if kind == "history":
                history[values["_step"]] = values
            else:
                summary.update(values)
    return run, history, summary


def test_offline_run_logs_each_task_and_the_summary(make_cfg, tmp_path):
    cfg = make_cfg("logger=wandb", f"logger.wandb.dir={tmp_path}", "logger.wandb.group=sweep-1", "strategy.epochs=1")
    assert list(cfg.logger) == ["console", "wandb"]
    results = run(cfg, tmp_path)
    info, history, summary = read_run(tmp_path)
    strategy = results["run"]["strategy"]  # the config-group choice ("?" outside the Hydra CLI)
    assert info.run_group == "sweep-1" and info.job_type == strategy and info.display_name == f"{strategy}-seed0"
    config = {u.key: json.loads(u.value_json) for u in info.config.update}
    assert config["strategy"]["epochs"] == 1 and config["seed"] == 0 and config["run_name"] == strategy
    R = results["accuracy_matrix"]
    assert sorted(history)[:5] == [0, 1, 2, 3, 4]
    for i in range(5):
        assert [history[i][f"accuracy/task_{j}"] for j in range(i + 1)] == pytest.approx(R[i][: i + 1])
        assert history[i]["cost/trainable_params"] == results["costs"][i]["trainable_params"]
        assert history[i]["accuracy_curve"] == pytest.approx(results["accuracy_curve"][i])
    assert summary["acc"] == pytest.approx(results["metrics"]["acc"]) and summary["bwt"] == 0.0
    for key in ("avg_incremental_acc", "last_acc"):
        assert summary[key] == pytest.approx(results["metrics"][key])
    assert summary["accuracy_curve_table/_type"] == "table-file"
    assert summary["accuracy_matrix/_type"] == "table-file" and summary["accuracy_matrix_heatmap/_type"] == "image-file"


def test_wandb_failure_warns_once_and_the_run_goes_on(make_cfg, tmp_path, monkeypatch, capsys):
    import wandb

    def broken(**kwargs):
        raise RuntimeError("no W&B today")

    monkeypatch.setattr(wandb, "init", broken)
    results = run(make_cfg("logger=wandb", "strategy.epochs=1"), tmp_path)
    assert results["run"]["status"] == "complete" and (tmp_path / "results.json").exists()
    err = capsys.readouterr().err
    assert err.count("warning: W&B start failed (RuntimeError: no W&B today)") == 1


def test_a_failure_mid_run_stops_only_wandb(capsys):
    class Broken:
        name = "x"

        def log(self, *args, **kwargs):
            raise OSError("disk full")

    logger = WandbLogger()
    logger.run = Broken()
    results = {"accuracy_matrix": [[0.5]], "accuracy_curve": [0.5], "metrics": {"acc": 0.5}, "costs": [{"trainable_params": 1}]}
    logger.log_task(0, results)
    logger.log_task(0, results)
    assert logger.failed and capsys.readouterr().err.count("W&B logging failed (OSError: disk full)") == 1


def test_a_run_that_fails_is_marked_failed_on_wandb(make_cfg, tmp_path):
    results = run(make_cfg("strategy.epochs=1"), tmp_path / "run")
    logger = WandbLogger(dir=str(tmp_path))
    logger.log_task(0, results)
    logger.log_failure(results)
    (exit_record,) = [r.exit for r in wandb_records(run_file(tmp_path)) if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 1


def test_a_run_that_fails_before_its_first_task_is_on_wandb_as_failed(make_cfg, tmp_path):
    """Not a user mistake, and before anything was logged: the W&B run still exists, failed, with the error."""
    from cl_adapters.errors import UserError

    with pytest.raises(UserError):
        run(make_cfg("logger=wandb", f"logger.wandb.dir={tmp_path}", "strategy=full_ft", "plugins=[replay]",
                     "plugins.replay.mem_size=-5"), tmp_path)
    records = list(wandb_records(run_file(tmp_path)))
    (exit_record,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    summary = {i.key: json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "summary"
               for i in r.summary.update}
    assert exit_record.exit_code == 1 and summary["status"] == "failed"
    assert summary["error"] == "plugins.replay.mem_size must be a positive integer, got -5"
