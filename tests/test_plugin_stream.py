"""The README's 'plug in your own stream' example, run exactly as written there."""

import os
import re
import subprocess
import sys
import json
from pathlib import Path

from conftest import ROOT


def _block_after(text: str, marker: str) -> str:
    m = re.search(r"```\w*\n(" + re.escape(marker) + r".*?)```", text, re.S)
    assert m, f"README lost its example block starting with {marker!r}"
    return m.group(1)


def test_readme_stream_example_runs(tmp_path):
    """From a folder outside the repo holding only the README's two files: the console script, no
    PYTHONPATH, no --config-dir."""
    readme = (ROOT / "README.md").read_text()
    (tmp_path / "my_streams.py").write_text(_block_after(readme, "# my_streams.py"))
    (tmp_path / "conf" / "stream").mkdir(parents=True)
    (tmp_path / "conf" / "stream" / "noisy_bits.yaml").write_text(_block_after(readme, "# conf/stream/noisy_bits.yaml"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = str(Path(sys.executable).parent / "cl-adapters")
    args = ["stream=noisy_bits", "strategy.epochs=1", "hydra.run.dir=out"]
    proc = subprocess.run([script, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(results["accuracy_matrix"]) == 3 and results["metrics"]["bwt"] == 0.0
