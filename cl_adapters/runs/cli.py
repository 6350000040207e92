"""The ``cl-adapters`` command: the Hydra app around ``run.run``, and what a person sees of it.

    cl-adapters stream=split_mnist strategy=full_ft        # one run
    cl-adapters -m strategy=adapter,full_ft seed=0,1,2     # a sweep

Every failure is one line on the console (the details in the run dir's error.txt); a sweep's jobs
write their output to ``<job dir>/job.log`` and the console gets one line per job as it starts and ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException, HydraException, MissingConfigException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from cl_adapters import CONFIG_DIR
from cl_adapters.atomic import atomic_path
from cl_adapters.errors import UserError, one_line
from cl_adapters.runs.run import run
from cl_adapters.runs.rundir import RunDir, RunDirBusy
from cl_adapters.runs.sweep import use_joblib_launcher

NO_USER_CONF = "provider=hydra.searchpath in main"  # Hydra's warning that ./conf does not exist


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    job = HydraConfig.get()
    if os.getcwd() not in sys.path:  # the folder you run from is importable: its modules can be _target_s
        sys.path.append(os.getcwd())
    out_dir, multirun = Path(job.runtime.output_dir), job.mode == RunMode.MULTIRUN
    tag = f"[job {job.job.num}] " if multirun else ""
    if multirun:
        _stop_with_the_sweep()
        print(f"{tag}{job.job.override_dirname or '(defaults)'}: running (log: {os.path.relpath(out_dir / 'job.log')})",
              file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        with _output_to(out_dir / "job.log" if multirun else None):
            results = run(cfg, out_dir)
    except Exception as e:  # noqa: BLE001 - every failure takes this one path (KeyboardInterrupt stops)
        return _failed(e, out_dir, multirun, tag)
    if multirun:
        m = results["metrics"]
        print(f"{tag}complete: ACC {m['acc']:.4f}, BWT {m['bwt']:+.4f} ({time.perf_counter() - start:.0f}s)",
              file=sys.stderr, flush=True)
    return results["metrics"]["acc"]  # lets sweepers (e.g. optuna) optimise ACC


@contextlib.contextmanager
def _output_to(log: Path | None):
    """A sweep job's prints (progress, tables, warnings) go to its own log, not the shared console."""
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", buffering=1) as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        yield


def _stop_with_the_sweep() -> None:
    """In a joblib (loky) worker: a sweep that is killed leaves its workers training on; each watches its
    parent and, once it is gone, interrupts its run (recorded as "interrupted", resumable)."""
    global _watching
    if _watching or not multiprocessing.current_process().name.startswith("LokyProcess"):
        return
    _watching, parent = True, os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        print("the sweep that started this job is gone: stopping", file=sys.stderr)
        # KeyboardInterrupt in the main thread (loky workers ignore SIGINT): results.json says "interrupted"
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.main_thread().ident),
                                                   ctypes.py_object(KeyboardInterrupt))
        time.sleep(60)
        os._exit(1)  # the run did not stop in time (stuck in native code)

    threading.Thread(target=watch, daemon=True, name="stop-with-the-sweep").start()


_watching = False


def _failed(error: Exception, out_dir: Path, multirun: bool, tag: str = "") -> float:
    """One line on the console; ``error.txt`` in the run dir (with the traceback when the error is not a
    user mistake). A single run exits (2: a user mistake, 1: anything else); a sweep goes on and lists it."""
    line, where = one_line(error), ""
    if not isinstance(error, RunDirBusy):  # that dir is another run's: touch nothing
        user = isinstance(error, UserError)
        details = f"{line}\n" if user else f"{line}\n\n{''.join(traceback.format_exception(error))}"
        try:
            with atomic_path(out_dir / "error.txt") as tmp:
                tmp.write_text(details)
            where = "" if user else f" (traceback in {out_dir / 'error.txt'})"
        except UserError:
            where = "" if user else " (could not write error.txt)"
    print(f"{tag}error: {line}{where}", file=sys.stderr)
    if multirun:
        return float("nan")
    sys.exit(2 if isinstance(error, UserError) else 1)


class RunDirLock(Callback):
    """Hydra writes ``.hydra/`` into the run dir (a sweep: ``multirun.yaml`` into its dir) before ``main``
    runs; this callback (``conf/config.yaml``) takes the dir's lock first, so a run refused there (another
    live run's dir) leaves it untouched."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _reserve(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _reserve(config.hydra.sweep.dir)


def _reserve(path: str) -> None:
    try:
        RunDir.reserve(path)
    except RunDirBusy as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)  # not an exception: Hydra turns a callback's exceptions into warnings
    except UserError:
        pass  # a dir that cannot be created: Hydra's own attempt says so


def cli() -> None:  # the console script
    """The ``cl-adapters`` command: ``main``, with what fails in Hydra itself (an option or key that does
    not exist, an override it cannot parse, a run dir it cannot create) as one line naming the culprit,
    exit code 2 (HYDRA_FULL_ERROR=1 shows Hydra's own report instead)."""
    # ./conf is optional: no warning where it does not exist (here, and in a sweep's worker processes)
    warnings.filterwarnings("ignore", message=NO_USER_CONF)
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), f"ignore:{NO_USER_CONF}"]))
    use_joblib_launcher()
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return main()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors to us instead of printing them
    try:
        _check_overrides(sys.argv[1:])
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except CompactHydraException as e:
        print(f"error: {_hydra_error(e)}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # Hydra creates the run dir and writes .hydra/ before the run starts
        print(f"error: cannot write {e.filename}: {e.strerror or e} (the run or sweep dir)", file=sys.stderr)
        sys.exit(2)


def _check_overrides(args: list[str]) -> None:
    """What Hydra fails on with a bare ValueError that names nothing: an override without a key (``=5``) and
    a config group given something other than an option name (``stream=5``)."""
    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            override = parser.parse_override(arg)
        except HydraException:  # Hydra says what it cannot parse
            continue
        key, value = override.key_or_group, override.value()
        if not key:
            raise UserError(f"{arg}: an override needs a key (key=value, e.g. seed=1)")
        group = any((Path(root) / key).is_dir() for root in (CONFIG_DIR, "conf"))
        if group and not override.is_sweep_override() and not isinstance(value, (str, list, dict, type(None))):
            raise UserError(f"{arg}: {key} is a config group, its value an option name ({key}=<name>; see --help)")


def _hydra_error(e: CompactHydraException) -> str:
    """Hydra's composition errors in one line, with the valid options or keys where Hydra knows them."""
    if isinstance(e, MissingConfigException) and e.options is not None and "/" in (e.missing_cfg_file or ""):
        group, _, name = e.missing_cfg_file.rpartition("/")
        return f"{group}={name}: no such option (the {group} options: {', '.join(e.options)})"
    cause = e.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        parent = getattr(cause, "parent_node", None)
        keys = [str(k) for k in parent.keys() if not str(k).startswith("_")] if hasattr(parent, "keys") else []
        return (f"{cause.full_key}: no such key (the keys there: {', '.join(keys)}; "
                f"to add a key: +{cause.full_key}=...)")
    return " ".join(str(e).split())
