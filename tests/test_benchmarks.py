import json
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_adapter_speed_benchmark_smoke(tmp_path):
    script = ROOT / "benchmarks" / "adapter_speed.py"
    subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)], check=True, timeout=1200)
    res = json.loads((tmp_path / "adapter_speed.json").read_text())
    assert res["train"]["ours_pfeiffer"]["trainable_params"] == res["train"]["adapterhub_pfeiffer"]["trainable_params"]
    assert res["train"]["full_ft"]["vs_full_ft"] == 1.0 and res["inference"]["bare"]["overhead_vs_bare"] == 0.0
