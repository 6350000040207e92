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


@pytest.mark.slow
def test_serving_speed_benchmark_smoke(tmp_path):
    script = ROOT / "benchmarks" / "serving_speed.py"
    subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)], check=True, timeout=1200)
    res = json.loads((tmp_path / "serving_speed.json").read_text())
    assert res["max_logit_difference_merged_vs_routed"] < 1e-4  # the merged model gives the routed LoRA's outputs
    assert set(res["inference"]) == {"bare", "lora_routed", "bare_hf", "lora_merged"}
    assert res["inference"]["bare"]["overhead_vs_bare"] == res["inference"]["bare_hf"]["overhead_vs_bare"] == 0.0


@pytest.mark.slow
def test_many_adapters_speed_benchmark_smoke(tmp_path):
    script = ROOT / "benchmarks" / "many_adapters_speed.py"
    subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)], check=True, timeout=1200)
    rows = json.loads((tmp_path / "many_adapters_speed.json").read_text())["rows"]
    assert rows["ours_lora_1"]["adapter_bytes"] == rows["peft_lora_1"]["adapter_bytes"] == 4 * 6 * 2 * 2 * 384 * 8
    assert rows["bare"]["vs_bare"] == 1.0 and rows["bare"]["adapter_bytes"] == 0


@pytest.mark.slow
def test_quantize_speed_benchmark_smoke(tmp_path):
    script = ROOT / "benchmarks" / "quantize_speed.py"
    subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)], check=True, timeout=1800)
    rows = json.loads((tmp_path / "quantize_speed.json").read_text())["rows"]
    for method in ("pfeiffer", "lora"):  # the quantized bases hold fewer bytes; fp32 is its own baseline
        assert rows[f"{method}_nf4"]["param_bytes"] < rows[f"{method}_int8"]["param_bytes"] < rows[f"{method}_fp32"]["param_bytes"]
        assert rows[f"{method}_fp32"]["train_vs_fp32"] == rows[f"{method}_fp32"]["infer_vs_fp32"] == 1.0


@pytest.mark.slow
def test_loop_speed_benchmark_smoke(tmp_path):
    script = ROOT / "benchmarks" / "loop_speed.py"
    subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)], check=True, timeout=1800)
    rows = json.loads((tmp_path / "loop_speed.json").read_text())["rows"]
    assert set(rows) == {"platform", "platform_avalanche_loader", "bare_tensors", "bare_dataloader"}
    assert rows["bare_tensors"]["vs_bare_tensors"] == rows["bare_dataloader"]["vs_bare_dataloader"] == 1.0


@pytest.mark.slow
def test_long_stream_benchmark_smoke(tmp_path):
    script = ROOT / "benchmarks" / "long_stream.py"
    subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)], check=True, timeout=1800)
    rows = json.loads((tmp_path / "long_stream.json").read_text())["rows"]
    for row in rows.values():  # 4 tasks each; parameters only grow; each task's time in control units
        assert len(row["train_seconds"]) == len(row["rss_bytes"]) == len(row["final_accuracy"]) == 4
        assert row["train_vs_control"] == [s / c for s, c in zip(row["train_seconds"], row["control_seconds"])]
        assert row["param_bytes"] == sorted(row["param_bytes"])
    assert (tmp_path / "long_stream.png").read_bytes()[:4] == b"\x89PNG"


def test_long_stream_control_leaves_the_streams_random_numbers_as_they_were():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from long_stream import control_seconds

    torch.manual_seed(3)
    before = torch.get_rng_state()
    assert control_seconds() > 0
    assert torch.equal(torch.get_rng_state(), before)


def test_speed_targets_table_reads_the_benchmarks_and_marks_each_target(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from speed_targets import markdown, rows

    train = {f"{who}_{kind}": {"vs_full_ft": v} for kind, (ours, hub) in {"pfeiffer": (1.5, 1.4), "houlsby": (1.3, 1.3)}.items()
             for who, v in (("ours", ours), ("adapterhub", hub))}
    infer = {"ours_pfeiffer": {"overhead_vs_bare": 0.02}, "ours_houlsby": {"overhead_vs_bare": 0.05}}
    long = {n: {"late_vs_early_corrected": v, "late_vs_early": 2 * v, "slope_ms_per_task": 0.5}
            for n, v in {"adapter": 1.05, "fusion_top3_near6": 1.3, "fusion_top3": 1.5, "fusion_all": 3.0, "full_ft": 1.0}.items()}
    pairs = {f"inference: ours_{k} vs bare": {"own_ms": 2.0, "total_ms": [100.0, 105.0]} for k in ("pfeiffer", "houlsby")}
    pairs |= {f"training: ours_{k} vs adapterhub_{k}": {"own_ms": 1.0, "base_own_ms": 4.0, "total_ms": [200.0, 100.0]}
              for k in ("pfeiffer", "houlsby")}
    for name, data in {"loop_speed": {"rows": {"platform": {"vs_bare_tensors": 0.95, "vs_bare_dataloader": 0.99}}},
                       "adapter_speed": {"train": train, "inference": infer}, "long_stream": {"summary": long},
                       "adapter_profile": {"pairs": pairs}}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    met = [m for *_, m in rows(tmp_path)]
    assert met == [True, False, True, True, True, False, False, False] + [None] * 4 + [True, False, None, None, None]
    table = markdown(rows(tmp_path))
    assert "| MiniLM inference overhead of one adapter, Houlsby | +5.0% | <= +3% | no |" in table
    assert "share of the bare model's step | +2.0% |" in table and "| 1.0% / 2.0% |" in table  # ours of ours, theirs of theirs
    assert "| 1.05x (raw 2.10x; slope +0.50 ms/task) | <= 1.10x | yes |" in table  # the target on the corrected ratio


@pytest.mark.parametrize("suite", ["split_digits", "split_mnist", "permuted_mnist", "sentiment", "split_mnist_class_il",
                                   "sentiment_domain_il", "sentiment_toolbox", "sentiment_dropout", "split_digits_quantized",
                                   "permuted_mnist_domain_il", "split_mnist_tuned",
                                   "split_digits_tuned", "permuted_mnist_tuned",
                                   "van_de_ven_split_mnist", "van_de_ven_split_mnist_class_il"])
def test_every_job_of_a_suite_composes(make_cfg, suite, tmp_path):
    """Each suite's sweeps expand into jobs whose configs compose, seeds 0-4 each (0-2 where a run takes
    minutes); references first."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from suite import SEEDS, WITHOUT_REFERENCES, sweeps

    protocols = []
    for overrides in sweeps(suite, [], tmp_path):
        overrides = [o for o in overrides if not o.startswith("hydra")]
        (jobs,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)
        seeds = [int(o.split("=")[1]) for job in jobs for o in job if o.startswith("seed=")]
        n = SEEDS.get(suite, 5)
        assert sorted(seeds) == sorted(list(range(n)) * (len(jobs) // n))
        cfgs = [make_cfg(*job) for job in jobs if "seed=0" in job]  # the seed changes no config group
        protocols.append({c.strategy.protocol for c in cfgs})
    if suite in WITHOUT_REFERENCES:
        assert all(p == {"sequential"} for p in protocols)
    else:
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


def test_tuning_picks_the_best_validation_point_and_writes_a_config_that_composes(make_cfg, tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from tune import best, experiment_config

    assert best({(0.001, 1e5): [0.90, 0.92], (0.003, 1e5): [0.95, 0.85], (0.001, 1e6): [0.93, 0.93]}) == (0.001, 1e6)
    text = experiment_config("split_mnist", "ewc", (0.003, 1e6), joint_lr=0.001)
    folder = tmp_path / "experiment" / "split_mnist_tuned"
    folder.mkdir(parents=True)
    (folder / "ewc_test.yaml").write_text(text)
    cfg = make_cfg(f"hydra.searchpath=[file://{tmp_path}]", "experiment=split_mnist_tuned/ewc_test")
    assert cfg.strategy.optimizer.lr == 0.003 and cfg.plugins.ewc.ewc_lambda == 1e6 and cfg.strategy.epochs == 1
    assert cfg.references.optimizer.lr == 0.001 and cfg.strategy.model.train_backbone == "all"  # full_ft
    assert "chosen on validation data" in text and "never the test set" in text


def test_a_suite_refuses_an_unknown_sweep_and_names_its_sweeps(capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import suite

    with pytest.raises(SystemExit):
        suite.main(["van_de_ven_split_mnist", "--only", "ewc_nope"])
    assert "--only ewc_nope: van_de_ven_split_mnist has the sweeps references, methods, ewc, ewc_online" in capsys.readouterr().err


def test_a_readme_table_puts_references_first_drops_single_task_and_signs_what_has_a_direction(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from readme_table import table

    head = ["scenario", "run", "reference", "acc", "acc_ci95", "bwt", "bwt_ci95", "task_id_acc", "task_id_acc_ci95",
            "trainable_params_first", "trainable_params_last", "bytes_per_task", "optimizer_steps", "train_samples"]
    rows = [["domain_il", "single_task", "single_task", "0.99", "0.01", "0", "0", "", "", "10", "10", "40", "5", "50"],
            ["domain_il", "ncm", "", "0.60", "0.02", "-0.1", "0.03", "", "", "10", "0", "40.4", "0", "50"],
            ["domain_il", "adapter@learned", "", "0.70", "0.01", "0.002", "0.001", "0.95", "0.004", "1200", "300",
             "1500.6", "15", "1500"],
            ["domain_il", "joint", "joint", "0.65", "0.05", "0", "0", "", "", "10", "10", "40", "30", "3000"]]
    (tmp_path / "report.csv").write_text("\n".join(",".join(r) for r in [head, *rows]))
    assert table(tmp_path / "report.csv", ["acc", "bwt", "task_id_acc", "params", "bytes_per_task"]).splitlines() == [
        "| run (scenario domain_il) | ACC | BWT | task-ID acc | trainable params (task 1 / last) | bytes/task |",
        "| --- | --- | --- | --- | --- | --- |",
        "| joint (reference) | 0.6500 ± 0.0500 | +0.0000 ± 0.0000 | - | 10 / 10 | 40 |",
        "| adapter@learned | 0.7000 ± 0.0100 | +0.0020 ± 0.0010 | 0.9500 ± 0.0040 | 1,200 / 300 | 1,501 |",
        "| ncm | 0.6000 ± 0.0200 | -0.1000 ± 0.0300 | - | 10 / 0 | 40 |"]


@pytest.mark.slow
def test_adapter_profile_benchmark_smoke(tmp_path):
    script = ROOT / "benchmarks" / "adapter_profile.py"
    subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)], check=True, timeout=1200)
    pairs = json.loads((tmp_path / "adapter_profile.json").read_text())["pairs"]
    assert set(pairs) == {"inference: ours_pfeiffer vs bare", "inference: ours_houlsby vs bare",
                          "training: ours_houlsby vs adapterhub_houlsby", "training: ours_pfeiffer vs adapterhub_pfeiffer"}
    bare = pairs["inference: ours_houlsby vs bare"]
    assert bare["base_own_ms"] == 0.0 and bare["own_ms"] > 0  # the bare model runs nothing the adapted one does not
    assert any("silu" in o["op"] for o in bare["operators"])  # Houlsby's activation, only in the adapted model


@pytest.mark.slow
def test_image_path_benchmark_smoke(tmp_path):
    script = ROOT / "benchmarks" / "image_path.py"
    subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)], check=True, timeout=1800)
    res = json.loads((tmp_path / "image_path.json").read_text())["datasets"]
    assert set(res) == {"cifar100", "image_folder"}
    for name, rows in res.items():
        one_thread = {"data_train_1thread", "data_eval_1thread"} if name == "cifar100" else set()
        assert set(rows) == {"data_train", "data_eval", "train", "eval"} | one_thread
        for row in rows.values():
            best = max(c["images_per_s"] for name, c in row["configs"].items() if name != "platform")
            assert row["platform_vs_pilot"] == pytest.approx(row["configs"]["platform"]["images_per_s"] / best)
