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


@pytest.mark.slow
def test_fusion_speed_benchmark_smoke(tmp_path):
    script = ROOT / "benchmarks" / "fusion_speed.py"
    subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)], check=True, timeout=1200)
    res = json.loads((tmp_path / "fusion_speed.json").read_text())["inference"]
    # the paper's fusion has as many parameters as AdapterHub's; the light one a few percent of that
    assert res["ours_full_N2"]["fusion_params_per_task"] == res["adapterhub_fuse_N2"]["fusion_params_per_task"]
    assert res["ours_light_N5"]["fusion_params_per_task"] < 0.05 * res["ours_full_N5"]["fusion_params_per_task"]
    assert res["bare"]["overhead_vs_bare"] == 0.0
