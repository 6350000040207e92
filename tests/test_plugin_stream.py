"""The docs' own-stream and own-experiment examples (docs/how-to/), run exactly as written there."""

import os
import re
import subprocess
import sys
import json
from pathlib import Path

from conftest import ROOT

STREAM_PAGE = ROOT / "docs" / "how-to" / "own-stream.md"
EXPERIMENT_PAGE = ROOT / "docs" / "how-to" / "own-experiment.md"


def _block_after(text: str, marker: str) -> str:
    """The code block whose first or second line starts with ``marker``."""
    m = re.search(r"```\w*\n((?:[^\n`]*\n)?" + re.escape(marker) + r".*?)```", text, re.S)
    assert m, f"the docs lost their example block starting with {marker!r}"
    return m.group(1)


def test_docs_stream_example_runs(tmp_path):
    """From a folder outside the repo holding only the page's two files: the console script, no
    PYTHONPATH, no --config-dir."""
    page = STREAM_PAGE.read_text()
    (tmp_path / "my_streams.py").write_text(_block_after(page, "# my_streams.py"))
    (tmp_path / "conf" / "stream").mkdir(parents=True)
    (tmp_path / "conf" / "stream" / "noisy_bits.yaml").write_text(_block_after(page, "# conf/stream/noisy_bits.yaml"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = str(Path(sys.executable).parent / "cl-adapters")
    args = ["stream=noisy_bits", "strategy.epochs=1", "hydra.run.dir=out"]
    proc = subprocess.run([script, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(results["accuracy_matrix"]) == 3 and results["metrics"]["bwt"] == 0.0


def test_docs_text_stream_recipe_runs(tmp_path):
    """The docs' text-stream recipe, verbatim, with the offline MiniLM."""
    page = STREAM_PAGE.read_text()
    (tmp_path / "my_text_streams.py").write_text(_block_after(page, "# my_text_streams.py"))
    (tmp_path / "conf" / "stream").mkdir(parents=True)
    (tmp_path / "conf" / "stream" / "reviews.yaml").write_text(_block_after(page, "# conf/stream/reviews.yaml"))
    command = re.search(r"\ncl-adapters (stream=reviews [^#\n]*)", page).group(1).split()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = str(Path(sys.executable).parent / "cl-adapters")
    proc = subprocess.run([script, *command, "hydra.run.dir=out", "logger=console"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["run"]["status"] == "complete" and len(results["accuracy_matrix"]) == 2
    assert results["config"]["stream"]["tokenizer"] is None  # the default encoder's, passed through


def test_docs_experiment_file_runs(tmp_path):
    pages = STREAM_PAGE.read_text() + EXPERIMENT_PAGE.read_text()
    (tmp_path / "my_streams.py").write_text(_block_after(pages, "# my_streams.py"))
    for group, name in (("stream", "noisy_bits"), ("experiment", "bits_vit")):
        (tmp_path / "conf" / group).mkdir(parents=True)
        (tmp_path / "conf" / group / f"{name}.yaml").write_text(_block_after(pages, f"# conf/{group}/{name}.yaml"))
    script = str(Path(sys.executable).parent / "cl-adapters")
    proc = subprocess.run([script, "experiment=bits_vit", "strategy.epochs=1", "hydra.run.dir=out", "logger=console"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / "out" / "results.json").read_text())["config"]
    assert config["model"]["_target_"] == "cl_adapters.models.PatchTransformer" and config["model"]["patch_size"] == 2
    assert config["stream"]["_target_"] == "my_streams.noisy_bits" and config["strategy"]["batch_size"] == 16
