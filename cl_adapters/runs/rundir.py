"""A run directory belongs to one live process at a time: ``RunDir`` holds an exclusive lock on the
directory itself for the run's lifetime, and ``<run dir>/.lock`` says who holds it. The lock is the
kernel's (``flock``), so a process that is killed releases it and the next run takes it over; a second
live process is refused with who holds it, also when ``.lock`` was deleted (a lock on that file would
then be a lock on a new file). Holding the lock also makes it safe to delete the temporary files a killed
writer left behind. ``RunDir.reserve`` takes it early: the CLI, before Hydra writes ``.hydra/`` there.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
import uuid
from pathlib import Path

from cl_adapters.atomic import atomic_path, write_error
from cl_adapters.errors import UserError

LOCK = ".lock"
TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # what atomic.atomic_path names its temporary files
_reserved: dict[Path, int] = {}  # run dir (resolved) -> its locked descriptor, for the run this process starts there


class RunDirBusy(UserError):
    """Another live process is running in the directory: nothing of it may be touched."""


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def remove_temp_files(*folders: Path) -> None:
    """Delete atomic writes that never finished (a kill between write and rename) in ``folders``."""
    for folder in folders:
        if folder.is_dir():
            for path in folder.iterdir():
                if TEMP.match(path.name) and path.is_file():
                    path.unlink(missing_ok=True)


class RunDir:
    """``with RunDir(path):`` the run directory, locked; its leftover temporary files removed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def __enter__(self) -> RunDir:
        self._fd = _reserved.pop(self.path.resolve(), None)
        if self._fd is None:
            self._fd = _lock(self.path)
        remove_temp_files(self.path, self.path / "checkpoint")
        return self

    def __exit__(self, *exc) -> None:
        os.close(self._fd)  # releases the lock

    @staticmethod
    def reserve(path: str | Path) -> None:
        """Lock ``path`` now, for the run this process starts there next (its ``RunDir`` takes the lock over)."""
        key = Path(path).resolve()
        if key not in _reserved:
            _reserved[key] = _lock(Path(path))

    @staticmethod
    def is_busy(path: str | Path) -> bool:
        """Whether a live process holds ``path``'s lock (readers use it before cleaning up)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)


def _lock(path: Path) -> int:
    """The locked directory's descriptor; ``.lock`` written with who holds it."""
    lock = path / LOCK
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise write_error(lock, e) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with atomic_path(lock) as tmp:
            tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                       "since": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    except BlockingIOError:
        os.close(fd)
        raise RunDirBusy(f"{path} is in use by another run ({_holder(lock)}); wait for it to finish, "
                         "or use another run dir (hydra.run.dir=...)") from None
    except UserError:
        os.close(fd)
        raise
    return fd


def _holder(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text())
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its lock file is unreadable"
