"""Multirun sweeps through the CLI: every job runs even when one fails, and the sweep ends with a
report and a list of the failed jobs (joblib locally; submitit's local executor stands in for Slurm)."""

import csv
import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("launcher", ["joblib", pytest.param("submitit_local", marks=pytest.mark.slow)])
def test_sweep_survives_a_failed_job_and_writes_the_report(tmp_path, launcher):
    sweep = tmp_path / "sweep"  # run from tmp_path: the sweep and the reference cache land there
    cmd = [sys.executable, "-m", "cl_adapters", "-m", f"hydra/launcher={launcher}", "strategy.epochs=1",
           "strategy.optimizer.lr=-1,1e-3", "hydra.sweep.dir=sweep"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]  # all jobs ran, one failed
    failed, ok = sorted(p for p in sweep.iterdir() if p.name[0].isdigit())
    assert (failed / "error.txt").read_text().strip() == "strategy.optimizer: Invalid learning rate: -1"
    assert (ok / "results.json").exists()
    assert "not included:" in done.stderr and "Invalid learning rate: -1" in done.stderr
    rows = list(csv.DictReader(open(sweep / "report" / "report.csv")))
    assert [(r["stream"], r["run"], r["seeds"]) for r in rows] == [("split_digits", "adapter", "0")]
    assert "Not included" in (sweep / "report" / "report.md").read_text()


@pytest.mark.slow  # the fast suite's failed-job sweep: test_sweep_survives_a_failed_job_and_writes_the_report
def test_a_sweep_with_a_bad_value_records_the_failure_and_still_reports(tmp_path):
    """The trustworthy-runs acceptance: the good job completes; the bad one is failed with its reason in
    results.json and error.txt; the report exists; exit status 1; no traceback."""
    cmd = [sys.executable, "-m", "cl_adapters", "-m", "strategy=full_ft", "plugins=[replay]",
           "plugins.replay.mem_size=-5,100", "strategy.epochs=1", "hydra/launcher=joblib", "hydra.sweep.dir=sweep"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout, done.stderr[-2000:]
    bad, good = sorted(p for p in (tmp_path / "sweep").iterdir() if p.name[0].isdigit())
    reason = "plugins.replay.mem_size must be a positive integer, got -5"
    bad_run = json.loads((bad / "results.json").read_text())["run"]
    assert (bad_run["status"], bad_run["error"]) == ("failed", reason)
    assert (bad / "error.txt").read_text().strip() == reason
    assert json.loads((good / "results.json").read_text())["run"]["status"] == "complete"
    assert (tmp_path / "sweep" / "report" / "report.md").exists() and reason in done.stderr


def test_a_killed_joblib_sweep_stops_its_workers_runs(tmp_path):
    """Killing the sweep's process must not leave loky workers training: each run notices, stops and
    records itself "interrupted" (resumable with the same command)."""
    import os
    import signal
    import time

    cmd = [sys.executable, "-m", "cl_adapters", "-m", "hydra/launcher=joblib", "seed=0,1", "strategy.epochs=300",
           "hydra.sweep.dir=sweep", "logger=console"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = lambda: [json.loads(p.read_text()) for p in tmp_path.glob("sweep/*/results.json")]  # noqa: E731
    deadline = time.time() + 300
    while not (len(results()) == 2 and all(r["accuracy_matrix"][0][0] is not None for r in results())):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    while any(r["run"]["status"] == "running" for r in results()):
        assert time.time() < deadline + 60, [r["run"]["status"] for r in results()]
        time.sleep(0.5)
    assert [r["run"]["status"] for r in results()] == ["interrupted", "interrupted"]


KILLER = """import os, signal


class KillOnSeed1:  # a logger: called after each task's results.json is written
    def log_task(self, task, results):
        if results["config"]["seed"] == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    def log_summary(self, results):
        pass

    def log_failure(self, results):
        pass
"""


def test_a_killed_joblib_worker_ends_its_own_job_only(tmp_path):
    """A worker process that dies (SIGKILL: what the out-of-memory killer sends) ends its job, recorded
    "interrupted" with the reason; the job running beside it and the one queued after it complete, the
    report is written and the exit status is 1."""
    (tmp_path / "killer.py").write_text(KILLER)  # the folder you run from is importable
    cmd = [sys.executable, "-m", "cl_adapters", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1,2",
           "strategy.epochs=1", "logger=console", "+logger.killer._target_=killer.KillOnSeed1", "hydra.sweep.dir=sweep"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    runs = [json.loads(p.read_text())["run"] for p in sorted((tmp_path / "sweep").glob("*/results.json"))]
    reason = "its worker process died (exit SIGKILL(-9)): killed, out of memory or crashed; the same command resumes it"
    assert [r["status"] for r in runs] == ["complete", "interrupted", "complete"] and runs[1]["error"] == reason
    assert f"[job 1] error: {reason}" in done.stderr
    assert f"interrupted after 1 task(s): {reason}" in (tmp_path / "sweep" / "report" / "report.md").read_text()


@pytest.mark.slow
def test_a_sweeps_console_is_one_status_line_per_job(tmp_path):
    """Jobs in parallel do not interleave their output: each writes job.log; the console gets a line when a
    job starts and one when it ends, tagged with its number; W&B's banner is not on the console."""
    cmd = [sys.executable, "-m", "cl_adapters", "-m", "hydra/launcher=joblib", "strategy=adapter,full_ft", "seed=0,1",
           "strategy.epochs=1", "hydra.sweep.dir=sweep"]  # the default logger: console + W&B (offline)
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    jobs = [line for line in done.stderr.splitlines() if line.startswith("[job ")]
    assert sorted(line.split("]")[0] for line in jobs) == sorted(f"[job {n}" for n in range(4) for _ in range(2))
    assert sum(": running (log: sweep/" in line for line in jobs) == 4
    assert sum(" complete: ACC " in line for line in jobs) == 4
    assert "wandb" not in done.stderr.lower() and "task 1/5" not in done.stdout + done.stderr
    for log in (tmp_path / "sweep").glob("*/job.log"):
        assert "task 5/5 acc" in log.read_text() and "W&B run saved offline; to upload: wandb sync " in log.read_text()
    assert len(list((tmp_path / "sweep").glob("*/job.log"))) == 4
