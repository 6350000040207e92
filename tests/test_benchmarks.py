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
    for kind in ("pfeiffer", "compacter"):
        assert res["train"][f"ours_{kind}"]["trainable_params"] == res["train"][f"adapterhub_{kind}"]["trainable_params"]
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



@pytest.mark.parametrize("suite", ["split_digits", "split_mnist", "permuted_mnist", "sentiment", "split_mnist_class_il",
                                   "sentiment_domain_il", "permuted_mnist_domain_il"])
def test_every_job_of_a_suite_composes(make_cfg, suite, tmp_path):
    """Each suite's sweeps expand into jobs whose configs compose, seeds 0-2 each; references first."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from suite import sweeps

    protocols = []
    for overrides in sweeps(suite, [], tmp_path):
        overrides = [o for o in overrides if not o.startswith("hydra")]
        (jobs,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)
        cfgs = [make_cfg(*job) for job in jobs]
        assert sorted(c.seed for c in cfgs) == sorted([0, 1, 2] * (len(cfgs) // 3))
        protocols.append({c.strategy.protocol for c in cfgs})
    assert "joint" in protocols[0] <= {"single_task", "joint"} and all(p == {"sequential"} for p in protocols[1:])


@pytest.mark.slow
def test_router_cost_benchmark_smoke(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "router_cost.py"), "--quick", "--out", str(tmp_path)],
                   check=True, timeout=1200)
    res = json.loads((tmp_path / "router_cost.json").read_text())
    row = res["setups"]["mlp N=2"]
    assert row["oracle"]["vs_oracle"] == 1.0 and row["oracle"]["router_bytes_per_task"] == 0
    assert row["prototype"]["router_bytes_per_task"] == 2 * 256 * 4 + 2 * 8  # two class means + their ids
    assert row["learned"]["router_bytes_per_task"] == 64 * 256 * 4  # the 64 features it was fitted on
