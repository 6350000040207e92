import json

import pytest

from cl_adapters.atomic import atomic_path
from cl_adapters.outputs import write_json_atomic


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"acc": 0.5, "R": [[float("nan")]]})
    assert json.loads(path.read_text()) == {"acc": 0.5, "R": [[None]]}  # NaN -> null, valid JSON
    with pytest.raises(TypeError):
        write_json_atomic(path, {"acc": object()})  # not serialisable: fails mid-write
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed")
    assert json.loads(path.read_text())["acc"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary files left


def test_a_full_disk_mid_run_is_one_clear_error_and_keeps_the_last_results(make_cfg, tmp_path, monkeypatch):
    import errno

    from cl_adapters import atomic
    from cl_adapters.errors import UserError
    from cl_adapters.runs.run import run

    real_replace, writes = atomic.os.replace, []

    def fills_up(src, dst):
        writes.append(dst)
        if len([d for d in writes if str(d).endswith("results.json")]) > 3:  # the start, tasks 1 and 2
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", fills_up)
    with pytest.raises(UserError, match=r"cannot write .*results.json: No space left on device"):
        run(make_cfg("strategy.epochs=1"), tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["run"]["status"] == "running" and [r[0] is not None for r in saved["accuracy_matrix"]][:3] == [
        True, True, False]
    assert not list(tmp_path.rglob(".*.tmp"))  # no half-written files left behind


def test_an_unwritable_run_dir_is_one_clear_error(make_cfg, tmp_path):
    from cl_adapters.errors import UserError
    from cl_adapters.runs.run import run

    (tmp_path / "taken").write_text("a file where the run dir should be")
    with pytest.raises(UserError, match=r"cannot write .*taken/.lock: .*taken is not a directory"):  # the first write
        run(make_cfg("strategy.epochs=1"), tmp_path / "taken")


def test_a_full_disk_while_writing_a_checkpoint_is_recorded(make_cfg, tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    from cl_adapters.errors import UserError
    from cl_adapters.runs.resume import Checkpoints
    from cl_adapters.runs.run import run

    write_bytes = Path.write_bytes

    def fills_up(self, data):
        if self.name.startswith(".task-2.safetensors."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", fills_up)
    with pytest.raises(UserError, match=r"cannot write .*checkpoint/task-2.safetensors: No space left on device"):
        run(make_cfg("strategy.epochs=1"), tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["run"]["status"] == "failed" and "No space left on device" in saved["run"]["error"]
    assert [link.task for link in Checkpoints(tmp_path).chain()] == [0, 1]
    assert not list(tmp_path.rglob(".*.tmp"))
