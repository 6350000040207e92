"""A run directory belongs to one live process at a time: ``RunDir`` holds an exclusive lock on
``<run dir>/.lock`` for the run's lifetime. The lock is the kernel's (``flock``), so a process that is
killed releases it and the next run takes it over; a second live process is refused with who holds it.
Holding the lock also makes it safe to delete the temporary files a killed writer left behind.
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

from cl_adapters.atomic import write_error
from cl_adapters.errors import UserError

LOCK = ".lock"
TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # what atomic.atomic_path names its temporary files


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
        self._file = None

    def __enter__(self) -> RunDir:
        lock = self.path / LOCK
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._file = open(lock, "a+")
        except OSError as e:
            raise write_error(lock, e) from e
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(lock)
            self._file.close()
            raise RunDirBusy(f"{self.path} is in use by another run ({holder}); wait for it to finish, "
                             "or use another run dir (hydra.run.dir=...)") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "since": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        self._file.flush()
        remove_temp_files(self.path, self.path / "checkpoint")
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()

    @staticmethod
    def is_busy(path: str | Path) -> bool:
        """Whether a live process holds ``path``'s lock (readers use it before cleaning up)."""
        lock = Path(path) / LOCK
        if not lock.exists():
            return False
        with open(lock) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _holder(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text())
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its lock file is unreadable"
