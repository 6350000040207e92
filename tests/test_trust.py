"""What a run writes is safe to load and cannot be mixed up: stored configs instantiate only allowlisted
constructors, a run dir is locked to one live process, the checkpoint chain rejects links of another run
or attempt, stray and temporary files are handled, and load_run serves any run with a good checkpoint."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch

from cl_adapters.runs import allowlist
from cl_adapters.errors import UserError
from cl_adapters.runs.inference import load_run, predict
from cl_adapters.models.checkpoint import digest
from cl_adapters.runs.resume import Checkpoints
from cl_adapters.runs.rundir import RunDir, RunDirBusy
from cl_adapters.runs.run import run

QUICK = ("strategy.epochs=1", "stream.n_tasks=3", "stream.class_order=[0,1,2,3,4,5]")


def rewrite(path: Path, edit=lambda metadata: None, drop: str | None = None) -> None:
    """What a tamperer who knows the format does: edit a file's metadata or drop a tensor, and recompute its digest."""
    with safetensors.safe_open(str(path), framework="pt") as f:
        metadata, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    metadata.pop("digest")
    edit(metadata)
    tensors.pop(drop, None)
    metadata["digest"] = digest(tensors, metadata)
    path.write_bytes(safetensors.torch.save(tensors, metadata=metadata))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 3-task adapter run (kept pristine: tests copy it)."""
    from hydra import compose, initialize_config_dir

    from cl_adapters import CONFIG_DIR

    out = tmp_path_factory.mktemp("finished") / "run"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["logger=console", f"references.dir={out.parent}/refs", *QUICK])
    run(cfg, out)
    return out


@pytest.fixture
def copy_of(finished, tmp_path):
    def _copy(name="run"):
        return Path(shutil.copytree(finished, tmp_path / name))
    return _copy


@pytest.mark.parametrize("where", ["model", "strategy.model.adapter", "strategy.optimizer"])
@pytest.mark.parametrize("target", ["builtins.open", "torch.load", "numpy.load", "joblib.load", "os.system"])
def test_a_stored_config_naming_a_foreign_target_runs_nothing(copy_of, tmp_path, where, target):
    run_dir, victim = copy_of(), tmp_path / "written-by-the-checkpoint"

    def plant(metadata):
        config = json.loads(metadata["config"])
        node = config
        for key in where.split("."):
            node = node[key]
        node.clear()
        node.update({"_target_": target, "file": str(victim), "mode": "w", "f": str(victim), "command": f"touch {victim}"})
        metadata["config"] = json.dumps(config)

    rewrite(run_dir / "checkpoint" / "task-0.safetensors", plant)
    with pytest.raises(UserError) as error:
        load_run(run_dir)
    message = str(error.value)
    assert f"{where}._target_='{target}'" in message and "task-0.safetensors" in message and "\n" not in message
    assert not victim.exists()


def test_an_interpolation_in_a_stored_config_is_refused(copy_of):
    run_dir = copy_of()
    rewrite(run_dir / "checkpoint" / "task-0.safetensors",
            lambda m: m.update(config=m["config"].replace('"hidden"', '"hidden_": "${oc.env:HOME}", "hidden"')))
    with pytest.raises(UserError, match=r"model.hidden_=.*is an interpolation"):
        load_run(run_dir)


def test_the_allowlist_covers_every_shipped_config_and_nothing_else():
    from cl_adapters import CONFIG_DIR

    shipped = {line.split(":", 1)[1].strip() for p in Path(CONFIG_DIR).rglob("*.yaml")
               for line in p.read_text().splitlines() if line.strip().startswith("_target_:")}
    shipped -= {"cl_adapters.runs.sweep.SweepSummary", "cl_adapters.runs.cli.RunDirLock"}  # Hydra's callbacks, never stored
    assert all(allowlist.allowed(t) for t in shipped) and shipped == allowlist.shipped_targets()
    assert allowlist.allowed("avalanche.training.plugins.EWCPlugin")  # runs stored before our EWC still load
    assert allowlist.allowed("torch.optim.SGD") and not allowlist.allowed("torch.optim.lr_scheduler.LambdaLR")
    assert not allowlist.allowed("torch.optim.Optimizer.__init__") and not allowlist.allowed("torch.load")
    # adapter methods by what they are: a config dataclass with attach() in cl_adapters.adapters, nothing else there
    assert allowlist.allowed("cl_adapters.adapters.lora.LoraConfig")
    assert not allowlist.allowed("cl_adapters.adapters.base.copy_state")
    assert not allowlist.allowed("cl_adapters.adapters.route.Route") and not allowlist.allowed("cl_adapters.adapters.nope.X")
    assert not allowlist.allowed("cl_adapters.adaptersX.AdapterConfig")
    assert allowlist.allowed("my_streams.noisy_bits", ["my_streams.*"]) and not allowlist.allowed("my_streams.x", ["other.*"])


def test_a_component_registered_by_its_yaml_is_loadable_with_nothing_else_edited(tmp_path):
    (tmp_path / "router").mkdir()
    (tmp_path / "router" / "mine.yaml").write_text("# @package strategy.model.router\n_target_: cl_adapters.routers.mine.Mine\n")
    (tmp_path / "config.yaml").write_text("hydra:\n  callbacks:\n    x:\n      _target_: builtins.exec\n")
    assert allowlist.shipped_targets(str(tmp_path)) == {"cl_adapters.routers.mine.Mine"}  # Hydra's settings never load


def test_a_second_process_into_a_live_run_dir_is_refused(make_cfg, tmp_path):
    with RunDir(tmp_path):  # a live run holds the dir (this process: flock locks are per open file)
        with pytest.raises(RunDirBusy, match=rf"is in use by another run \(pid {os.getpid()} on .*, since "):
            run(make_cfg(*QUICK), tmp_path)
        cmd = [sys.executable, "-m", "cl_adapters", *QUICK, "seed=1", f"hydra.run.dir={tmp_path}", "logger=console"]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "is in use by another run" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "error.txt").exists()  # nothing touched
    assert not (tmp_path / ".hydra").exists()  # refused before Hydra writes its files


def test_a_live_run_dir_stays_its_own_with_its_lock_file_deleted(tmp_path):
    """Two real processes: a live run (held in its stream), its .lock deleted, a second run into its dir is
    refused, and everything of the live run (Hydra's .hydra/ files too) stays byte for byte."""
    (tmp_path / "held.py").write_text("import pathlib, time\n\ndef stream(ready, **_):\n"
                                      "    pathlib.Path(ready).touch()\n    time.sleep(600)\n")
    cli = [sys.executable, "-m", "cl_adapters", "hydra.run.dir=run", "logger=console"]
    live = subprocess.Popen([*cli, "stream._target_=held.stream", f"+stream.ready={tmp_path / 'ready'}"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if (tmp_path / "ready").exists() or live.poll() is not None:
                break
            time.sleep(0.5)
        assert (tmp_path / "ready").exists() and RunDir.is_busy(tmp_path / "run")
        (tmp_path / "run" / ".lock").unlink()
        files = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
        assert {p.relative_to(tmp_path / "run").as_posix() for p in files} >= {".hydra/config.yaml", ".hydra/overrides.yaml"}
        proc = subprocess.run([*cli, *QUICK, "seed=1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {Path('run')} is in use by another run (")
        assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == files
    finally:
        live.kill()
        live.wait()


def test_a_file_at_checkpoint_stops_a_rerun_before_it_replaces_the_results(copy_of, finished, make_cfg):
    run_dir = copy_of()
    shutil.rmtree(run_dir / "checkpoint")
    (run_dir / "checkpoint").write_text("a file where the checkpoint folder should be")
    before = json.loads((run_dir / "results.json").read_text())
    with pytest.raises(UserError) as error:
        run(make_cfg(*QUICK, f"references.dir={finished.parent}/refs"), run_dir)
    assert str(error.value) == (f"{run_dir / 'checkpoint'} is not a folder: move it away (the run's checkpoints go "
                                "there), or run with checkpoint=false")
    after = json.loads((run_dir / "results.json").read_text())
    attempt = after["run"].pop("last_attempt")
    assert after == before and attempt["status"] == "failed" and attempt["error"] == str(error.value)


def test_the_lock_of_a_killed_process_is_taken_over(make_cfg, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from cl_adapters.runs.rundir import RunDir; "
                               "held = RunDir(sys.argv[1]).__enter__(); print('locked', flush=True); time.sleep(600)", str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked" and RunDir.is_busy(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert not RunDir.is_busy(tmp_path)
    assert run(make_cfg(*QUICK), tmp_path)["run"]["status"] == "complete"


def test_a_middle_link_from_another_run_is_detected_on_resume_and_load(make_cfg, tmp_path, capsys):
    a = run(make_cfg(*QUICK), tmp_path / "a")
    run(make_cfg(*QUICK), tmp_path / "b")  # the same config, another run (id)
    shutil.copy(tmp_path / "b" / "checkpoint" / "task-1.safetensors", tmp_path / "a" / "checkpoint")
    model = load_run(tmp_path / "a")
    assert model.trained_tasks == [0]
    err = capsys.readouterr().err
    assert "task-1.safetensors is unusable: it belongs to run " in err and "not the later files (tasks [2])" in err
    resumed = run(make_cfg(*QUICK), tmp_path / "a")  # trains tasks 2 and 3 again, in its own chain
    assert resumed["run"]["resumed_after_task"] == [0] and resumed["run"]["id"] == a["run"]["id"]
    assert resumed["accuracy_matrix"] == a["accuracy_matrix"] and resumed["metrics"]["bwt"] == 0
    links = Checkpoints(tmp_path / "a").chain()
    assert len(links) == 3 and {link.run_id for link in links} == {a["run"]["id"]}


def test_an_edited_link_breaks_the_chain_after_it(copy_of, capsys):
    run_dir = copy_of()
    rewrite(run_dir / "checkpoint" / "task-0.safetensors", lambda m: m.update(run_id=m["run_id"]))  # re-digested
    assert len(Checkpoints(run_dir).chain()) == 3  # the same contents: the same digest
    rewrite(run_dir / "checkpoint" / "task-0.safetensors", lambda m: m.update(record=m["record"].replace("[1, 8, 8]", "[1, 8,8]")))
    assert len(Checkpoints(run_dir).chain()) == 1
    assert "task-1.safetensors is unusable: it does not follow task-0.safetensors" in capsys.readouterr().err


def test_a_corrupt_newest_link_leaves_the_ones_before_it_usable(copy_of, finished, capsys):
    run_dir = copy_of()
    newest = run_dir / "checkpoint" / "task-2.safetensors"
    data = bytearray(newest.read_bytes())
    data[-100] ^= 0xFF
    newest.write_bytes(bytes(data))
    model = load_run(run_dir)
    assert model.trained_tasks == [0, 1] and "do not match its digest" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"task\(s\) \[2\] were not trained in this model \(it holds tasks \[0, 1\]\)"):
        predict(model, torch.rand(2, 1, 8, 8), 2)
    whole = load_run(finished)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(predict(model, x, 1), predict(whole, x, 1))  # same weights, same shapes


def test_load_run_serves_a_run_that_stopped_mid_stream(make_cfg, tmp_path, monkeypatch):
    from cl_adapters.strategies import ContinualStrategy

    train = ContinualStrategy.train

    def fails_on_task_3(self, experience, **kwargs):
        if experience.current_experience == 2:
            raise RuntimeError("out of memory (simulated)")
        return train(self, experience, **kwargs)

    monkeypatch.setattr(ContinualStrategy, "train", fails_on_task_3)
    with pytest.raises(RuntimeError):
        run(make_cfg(*QUICK), tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["run"]["status"] == "failed" and results["run"]["error"] == "RuntimeError: out of memory (simulated)"
    assert load_run(tmp_path).trained_tasks == [0, 1]


def test_stray_and_temporary_files_are_ignored_or_cleaned(copy_of, finished, make_cfg):
    run_dir = copy_of()
    ckpt = run_dir / "checkpoint"
    strays = ["task-1 copy.json", "task-foo.json", "task-1 copy.safetensors", "notes.txt", "task-01.safetensors.bak"]
    for name in strays:
        (ckpt / name).write_text("not a checkpoint")
    temps = [ckpt / ".task-3.safetensors.abcd_123.tmp", run_dir / ".results.json.x1y2z3w4.tmp"]
    for path in temps:
        path.write_bytes(b"half a file")
    assert len(Checkpoints(run_dir).chain()) == 3
    resumed = run(make_cfg(*QUICK, f"references.dir={finished.parent}/refs"), run_dir)
    assert resumed["run"]["resumed_after_task"] == [2]
    assert all((ckpt / name).exists() for name in strays) and not any(p.exists() for p in temps)
    temps[0].write_bytes(b"half a file")
    load_run(run_dir)  # nobody holds the dir: the reader cleans up too
    assert not temps[0].exists()
