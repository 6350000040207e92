"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one. A
write the system refuses (disk full, read-only or missing folder) is one UserError naming the file."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cl_adapters.errors import UserError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o666 & ~UMASK)  # what open() would give, not mkstemp's owner-only 0600
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise write_error(path, e) from e
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (an empty folder, or an
    earlier one the caller has checked may go) in two renames, so a failure halfway leaves ``path`` as it was."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        os.chmod(tmp, 0o777 & ~UMASK)
        yield tmp
        old = tmp.with_name(f"{tmp.name}.old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        raise write_error(path, e) from e
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def write_error(path: Path, error: OSError) -> UserError:
    """A refused write as one line naming the file (and a file standing where a folder should be)."""
    broken = next((p for p in path.parents if p.is_symlink() and not p.exists()), None)
    folder = next((p for p in path.parents if p.exists()), None)
    why = (f"{broken} is a link to nothing" if broken else f"{folder} is not a directory" if folder and not folder.is_dir()
           else error.strerror or str(error))
    return UserError(f"cannot write {path}: {why} (what was written before is intact)")


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: done once, at import (no threads yet)
    os.umask(mask)
    return mask


UMASK = _umask()
