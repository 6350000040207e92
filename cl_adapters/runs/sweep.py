"""Hydra multiruns: the joblib launcher's jobs, and the end of a sweep (its report and the jobs that did
not finish).

``SweepSummary`` is registered in ``cl_adapters/conf/config.yaml`` (``hydra.callbacks``), so every sweep
ends with ``<sweep dir>/report/`` and a summary line per failed job (exit status 1 if any); a failed job
does not stop the others (``cli.main`` records its error instead of exiting when it runs in a multirun),
nor does a job whose worker process dies (``launch``).
"""

from __future__ import annotations

import json
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra.experimental.callback import Callback
from omegaconf import open_dict

from cl_adapters.atomic import atomic_path
from cl_adapters.errors import UserError
from cl_adapters.outputs import report
from cl_adapters.outputs.results import write_json_atomic
from cl_adapters.runs.rundir import RunDir


def use_joblib_launcher() -> None:
    """``hydra/launcher=joblib`` is ``launch`` below (``hydra_plugins/cl_adapters_launcher``). Hydra's plugin
    scan runs the joblib plugin's own registration again, so the scan runs first, here."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins
    from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf  # Hydra's joblib options

    Plugins.instance()
    node = JobLibLauncherConf(_target_="hydra_plugins.cl_adapters_launcher.JoblibLauncher")  # named, not imported: it imports this
    ConfigStore.instance().store(group="hydra/launcher", name="joblib", node=node, provider="cl-adapters")


def launch(launcher, job_overrides, initial_job_idx: int) -> list[JobReturn]:
    """Hydra's joblib launch, except that each of the ``n_jobs`` lanes runs its jobs in a loky executor of its
    own with one worker: a worker that dies (killed, out of memory) ends its own job only, recorded
    "interrupted", and its lane goes on with a new worker (joblib's one executor kills every worker when
    one dies, and the sweep stops). Workers get CPUs/n_jobs threads, as from joblib; of the other joblib
    settings, which batch and memory-map joblib's tasks, none applies to one job per task."""
    from hydra_plugins.hydra_joblib_launcher._core import execute_job
    from hydra.core.singleton import Singleton
    from joblib import effective_n_jobs
    from joblib._parallel_backends import LokyBackend
    from joblib.externals.loky import BrokenProcessPool, ProcessPoolExecutor

    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    n_jobs = effective_n_jobs(launcher.joblib.get("n_jobs", -1))
    env, state = LokyBackend()._prepare_worker_env(n_jobs), Singleton.get_state()
    executors, lock, stopping = {}, threading.Lock(), threading.Event()

    def job(idx: int, overrides) -> JobReturn | None:
        lane = threading.get_ident()
        with lock:
            if stopping.is_set():
                return None
            if lane not in executors:
                executors[lane] = ProcessPoolExecutor(1, env=env)
            future = executors[lane].submit(execute_job, idx, overrides, launcher.hydra_context, launcher.config,
                                            launcher.task_function, state)
        try:
            return future.result()
        except BrokenProcessPool as e:
            with lock:  # one at a time: Hydra composes the job's config again
                executors.pop(lane).shutdown()
                return None if stopping.is_set() else _worker_died(launcher, idx, overrides, e)

    try:
        with ThreadPoolExecutor(max(1, min(n_jobs, len(job_overrides)))) as lanes:
            futures = [lanes.submit(job, initial_job_idx + i, o) for i, o in enumerate(job_overrides)]
            try:
                return [f.result() for f in futures]
            except BaseException:  # Ctrl-C, or a job that raised: every job stops now, as with joblib
                lanes.shutdown(wait=False, cancel_futures=True)
                with lock:
                    stopping.set()
                    for executor in executors.values():
                        executor.shutdown(wait=False, kill_workers=True)
                raise
    finally:
        for executor in list(executors.values()):
            executor.shutdown()


def _worker_died(launcher, idx: int, overrides, error: BaseException) -> JobReturn:
    """The job's record says it was interrupted and why (its results.json if the run had written one, and
    error.txt); the sweep gets a failed job's return (NaN, as ``cli.main`` returns) and goes on."""
    codes = re.search(r"exit codes of the workers are \{(.*?)\}", str(error))
    reason = (f"its worker process died (exit {codes[1] if codes else '?'}): killed, out of memory or crashed; "
              "the same command resumes it")
    job_dir = _job_dir(launcher, idx, overrides)
    try:
        _record_interrupted(job_dir, reason)
    except UserError as e:  # the job dir is unwritable, or another live process holds it
        reason += f" (not recorded: {e})"
    print(f"[job {idx}] error: {reason}", file=sys.stderr, flush=True)
    ret = JobReturn(overrides=list(overrides), working_dir=str(job_dir), status=JobStatus.COMPLETED)
    ret.return_value = float("nan")
    return ret


def _job_dir(launcher, idx: int, overrides) -> Path:
    """Where ``execute_job`` ran job ``idx``: its config composed again, as the worker did."""
    cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(cfg):
        cfg.hydra.job.id, cfg.hydra.job.num = f"{cfg.hydra.job.name}_{idx}", idx
    return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)


def _record_interrupted(job_dir: Path, reason: str) -> None:
    """error.txt, and a results.json left "running" (the run the dead worker was writing) made "interrupted"."""
    with RunDir(job_dir):  # the dead worker's lock is free; its unfinished writes are removed
        with atomic_path(job_dir / "error.txt") as tmp:
            tmp.write_text(reason + "\n")
        path = job_dir / "results.json"
        try:
            results = json.loads(path.read_text())
            running = results["run"]["status"] == "running"
        except (OSError, ValueError, TypeError, KeyError):  # none, or not a run's record: error.txt says it
            return
        if running:
            results["run"].update(status="interrupted", error=reason)
            write_json_atomic(path, results)


class SweepSummary(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        runs, missing = report.load_runs([sweep])
        print(f"sweep {sweep}: {len(runs)} job(s) complete, {len(missing)} not", file=sys.stderr)
        if runs:
            try:
                report.emit(runs, missing, sweep / "report")
            except UserError as e:  # the sweep dir became unwritable, disk full
                print(f"error: no report: {e}", file=sys.stderr)
                sys.exit(1)
        else:
            print("".join(f"  not included: {m}\n" for m in missing), end="", file=sys.stderr)
        if missing:
            sys.exit(1)  # every job ran and the report is written; the exit status tells a script some failed
