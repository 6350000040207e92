"""Per-task checkpoints and resume: a run killed mid-stream and resumed ends with the accuracy matrix of a
run that was never stopped, bit for bit; a corrupt newest checkpoint falls back to the one before."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cl_adapters.errors import UserError
from cl_adapters.runs.resume import Checkpoints
from cl_adapters.runs.run import run

FOUR_TASKS = ["stream.n_tasks=4", "stream.class_order=[0,1,2,3,4,5,6,7]", "strategy.epochs=8"]


def cli(run_dir, *overrides):
    cmd = [sys.executable, "-m", "cl_adapters", *FOUR_TASKS, f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.Popen(cmd, cwd=run_dir.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def measured(results: dict) -> dict:
    """What a resumed run must reproduce bit for bit: R, the accuracy curve A_b and the eval sizes that weight
    it, the class order, and the metrics (ACC, BWT, Ā, A_B, ...)."""
    return {k: results[k] for k in ("accuracy_matrix", "accuracy_curve", "eval_samples_per_task", "class_order",
                                    "metrics")}


def saved(run_dir):
    return measured(json.loads((run_dir / "results.json").read_text()))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    out, _ = cli(run_dir).communicate(timeout=600)
    assert "results:" in out, out[-2000:]
    return saved(run_dir)


def killed_after_two_tasks(run_dir):
    proc = cli(run_dir)
    while not (run_dir / "checkpoint" / "task-1.safetensors").exists():  # renamed into place when complete
        assert proc.poll() is None, proc.stdout.read()[-2000:]
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "checkpoint" / "task-2.safetensors").exists()  # killed while training task 3
    results = json.loads((run_dir / "results.json").read_text())
    assert results["run"]["status"] == "running" and results["accuracy_matrix"][2][0] is None
    assert len(results["accuracy_curve"]) == 2 and results["metrics"]["last_acc"] == results["accuracy_curve"][1]


def test_a_killed_run_resumes_to_the_same_matrix(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    killed_after_two_tasks(run_dir)
    out, _ = cli(run_dir).communicate(timeout=600)  # the same command in the same run dir resumes
    assert "resumed from" in out and "after task 2/4" in out, out[-2000:]
    assert saved(run_dir) == uninterrupted
    results = json.loads((run_dir / "results.json").read_text())
    assert results["run"]["status"] == "complete" and results["run"]["resumed_after_task"] == [1]


def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    killed_after_two_tasks(run_dir)
    newest = run_dir / "checkpoint" / "task-1.safetensors"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    out, _ = cli(run_dir).communicate(timeout=600)
    assert "task-1.safetensors is unusable: its contents do not match its digest" in out, out[-2000:]
    assert "after task 1/4" in out
    assert saved(run_dir) == uninterrupted


def test_resuming_with_another_config_is_refused(make_cfg, tmp_path):
    first = run(make_cfg("strategy.epochs=1"), tmp_path)
    with pytest.raises(UserError, match=r"another config \(strategy.epochs: 1 -> 2\)"):
        run(make_cfg("strategy.epochs=2"), tmp_path)
    kept = json.loads((tmp_path / "results.json").read_text())  # the finished run's file, the refusal added
    assert kept["run"]["status"] == "complete" and kept["accuracy_matrix"] == first["accuracy_matrix"]
    assert kept["run"]["last_attempt"]["status"] == "failed" and "another config" in kept["run"]["last_attempt"]["error"]
    run(make_cfg("strategy.epochs=2", "resume=false"), tmp_path)  # starting over is allowed
    assert Checkpoints(tmp_path).chain()[0].config["strategy"]["epochs"] == 2


def test_an_option_added_since_with_a_null_default_still_resumes(make_cfg, tmp_path, capsys):
    """A config key a newer version adds with a null default (``model.quantize`` once) keeps the old
    behaviour: a run written without it resumes, and its references keep their cache key."""
    from omegaconf import open_dict

    from cl_adapters.runs.references import key_fields, reference_key

    older = make_cfg("strategy.epochs=1")
    with open_dict(older):
        del older.strategy.iterations  # as if written before the option existed
    first = run(older, tmp_path)
    again = run(make_cfg("strategy.epochs=1"), tmp_path)
    assert "resumed from" in capsys.readouterr().out and measured(again) == measured(first)  # all restored
    newer = make_cfg("strategy.epochs=1")
    with open_dict(newer):
        newer.model.some_new_option = None
    assert reference_key(key_fields(newer, "joint")) == reference_key(key_fields(make_cfg("strategy.epochs=1"), "joint"))


def test_checkpoints_hold_only_what_each_task_changed(make_cfg, tmp_path):
    from safetensors import safe_open

    run(make_cfg("strategy.epochs=1"), tmp_path)  # adapters on a backbone trained on task 1, then frozen
    names = []
    for t in range(5):
        with safe_open(str(tmp_path / "checkpoint" / f"task-{t}.safetensors"), framework="pt") as f:
            names.append({n for n in f.keys() if not n.startswith("rng.")})
    assert any(n.startswith("shared.backbone.") and ".adapters." not in n for n in names[0])
    for t in range(1, 5):  # the frozen backbone is not stored again: only the task's head and adapter
        assert {n.split(".", 1)[0] for n in names[t]} == {"head", "adapter"}, sorted(names[t])[:5]


def test_a_preempted_slurm_job_is_requeued_and_resumes(tmp_path, uninterrupted):
    """submitit's local executor stands in for Slurm: its preemption signal makes the launcher requeue
    the job (hydra-submitit's checkpoint hook), which reruns in the same job dir and resumes."""
    import psutil

    cmd = [sys.executable, "-m", "cl_adapters", "-m", "hydra/launcher=submitit_local", *FOUR_TASKS,
           "hydra.sweep.dir=sweep"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while not list(tmp_path.glob("sweep/0_*/checkpoint/task-1.safetensors")):
        assert proc.poll() is None, proc.stdout.read()[-2000:]
        time.sleep(0.005)
    (job,) = [p for p in psutil.Process(proc.pid).children(recursive=True) if "submitit.core._submit" in " ".join(p.cmdline())]
    job.send_signal(signal.SIGUSR2)  # what Slurm sends before pre-empting or timing out a job
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-2000:]
    (run_dir,) = tmp_path.glob("sweep/0_*")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["run"]["status"] == "complete" and results["run"]["resumed_after_task"] in ([1], [2])
    assert saved(run_dir) == uninterrupted
    assert "preempted" in "".join(p.read_text() for p in tmp_path.glob("sweep/.submitit/*/*_log.err"))


def test_a_nan_loss_mid_stream_keeps_the_finished_tasks(make_cfg, tmp_path, monkeypatch):
    import torch

    from cl_adapters.strategies import ContinualStrategy

    criterion = ContinualStrategy.criterion

    def nan_on_task_3(self):
        loss = criterion(self)
        return loss * torch.nan if self.is_training and self.experience.current_experience == 2 else loss

    monkeypatch.setattr(ContinualStrategy, "criterion", nan_on_task_3)
    with pytest.raises(UserError, match=r"training loss is nan in task 3 \(experience 2\), epoch 1/1, batch 2"):
        run(make_cfg("strategy.epochs=1"), tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["run"]["status"] == "failed" and [row[0] is not None for row in saved["accuracy_matrix"]] == [
        True, True, False, False, False]
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["task-0.safetensors", "task-1.safetensors"]


@pytest.mark.parametrize("overrides", [("strategy=full_ft", f"plugins=[{p}]") for p in ("ewc", "ewc_online", "si", "lwf", "replay")]
                         + [("strategy=joint",), ("strategy=single_task",)])
def test_plugins_and_references_resume_to_the_same_matrix(whole_and_resumed, overrides):
    """EWC's (and online EWC's) importances, SI's anchor, importances and path integral, LwF's previous model
    and classes, the replay buffer, the joint reference's data so far: restored on resume."""
    whole, resumed = whole_and_resumed(*overrides, "strategy.epochs=2")
    assert measured(resumed) == measured(whole)


def test_a_plugin_whose_state_is_not_checkpointed_refuses_to_resume(make_cfg, tmp_path):
    overrides = ("strategy=full_ft", "+plugins.mas._target_=avalanche.training.plugins.MASPlugin", "strategy.epochs=1")
    run(make_cfg(*overrides), tmp_path)
    with pytest.raises(UserError, match="MASPlugin: its state is not checkpointed, so this run cannot resume"):
        run(make_cfg(*overrides), tmp_path)
    run(make_cfg(*overrides, "resume=false"), tmp_path)
