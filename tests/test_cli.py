"""User mistakes at the command line: one readable line naming the culprit, non-zero exit."""

import json
import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "cl_adapters"]


def cli(*args, cwd):
    env = {**os.environ, "HYDRA_FULL_ERROR": ""}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


@pytest.mark.parametrize(
    "args,culprit",
    [
        (["adapter.r=0"], "adapter.r must be a positive integer, got 0"),
        (["strategy.optimizer.lr=-0.1"], "strategy.optimizer: Invalid learning rate: -0.1"),
        (["strategy=nope"], "error: strategy=nope: no such option (the strategy options: adapter, adapter_fusion, bitfit, "
                            "full_ft, joint, lora, lora_per_task, ncm, single_task)"),
        (["stream=nope"], "error: stream=nope: no such option (the stream options: cifar100, cub200, imagenet_a, imagenet_r, objectnet, omnibenchmark, permuted_mnist, "),
        (["adapter.rr=3"], "error: adapter.rr: no such key (the keys there: placement, r, activation, dropout, scaling, "
                           "targets; to add a key: +adapter.rr=...)"),
        (["seed=[1"], "error: no viable alternative at input '[1'"),
        (["stream.n_tasks=3"], "stream.n_tasks=3 must divide the 10 classes evenly"),
        (["=5"], "error: =5: an override needs a key (key=value, e.g. seed=1)"),
        (["stream=5"], "error: stream=5: stream is a config group, its value an option name (stream=<name>; see --help)"),
        (["device=cuda:99"], "device=cuda:99: this machine has "),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, args, culprit):
    proc = cli(*args, "hydra.run.dir=.", "logger=console", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert culprit in proc.stderr.strip().splitlines()[-1]
    results = tmp_path / "results.json"  # none if Hydra refused the config before the run started
    if results.exists():  # the run refused it: recorded, nothing trained
        run = json.loads(results.read_text())["run"]
        assert run["status"] == "failed" and culprit in run["error"]
        assert (tmp_path / "error.txt").read_text().strip() == run["error"]
        assert "accuracy_matrix" not in json.loads(results.read_text())


def test_cfg_job_prints_the_composed_config(tmp_path):
    proc = cli("--cfg", "job", "strategy=full_ft", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "train_backbone: all" in proc.stdout and "_target_: cl_adapters.streams.split_digits" in proc.stdout


def test_an_unexpected_error_is_one_line_with_the_traceback_in_error_txt(tmp_path):
    from conftest import ROOT

    env = {**os.environ, "HYDRA_FULL_ERROR": "", "PYTHONPATH": str(ROOT / "tests")}
    cmd = [*CLI, "stream._target_=test_bad_input.bad_stream", "+stream.kind=crash", "hydra.run.dir=.", "logger=wandb"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"error: RuntimeError: boom (traceback in {tmp_path / 'error.txt'})"
    details = (tmp_path / "error.txt").read_text()
    assert details.startswith("RuntimeError: boom\n") and "Traceback (most recent call last)" in details and "bad_stream" in details
    run = json.loads((tmp_path / "results.json").read_text())["run"]
    assert run["status"] == "failed" and run["error"] == "RuntimeError: boom"


def test_a_run_dir_hydra_cannot_create_is_one_line(tmp_path):
    (tmp_path / "taken").write_text("a file where a folder should be")
    proc = cli("hydra.run.dir=taken/run", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: cannot write taken/run: Not a directory (the run or sweep dir)"]


def test_fusion_settings_for_a_strategy_without_fusion_are_a_one_line_warning(tmp_path):
    """Not refused: a sweep over strategies gives its fusion=... to all of them (the sentiment suite)."""
    proc = cli("strategy=adapter", "fusion=light", "fusion.top_k=3", "strategy.epochs=1", "stream.n_tasks=2",
               "stream.class_order=[0,1,2,3]", "probe_samples=0", "checkpoint=false", "hydra.run.dir=.", "logger=console",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: fusion=light fusion.top_k=3 does nothing: strategy=adapter has no fusion "
                        "(strategy=adapter_fusion has)"]
