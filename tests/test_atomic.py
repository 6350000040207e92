import json

import pytest

from cl_adapters.atomic import atomic_path
from cl_adapters.logging import write_json_atomic


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
