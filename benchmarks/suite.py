"""Benchmark suites: every strategy x seeds (0-4 where a run takes seconds, 0-2 where minutes) on one
stream, as Hydra multiruns with the joblib launcher, then the comparison report in
``benchmarks/results/<suite>/`` (report.md, report.csv, plots).

    python benchmarks/suite.py split_mnist              # also: split_digits, permuted_mnist, sentiment,
                                                        # split_mnist_class_il, sentiment_domain_il,
                                                        # sentiment_toolbox, sentiment_dropout,
                                                        # split_digits_quantized,
                                                        # permuted_mnist_domain_il, <split_digits|split_mnist|
                                                        # permuted_mnist>_tuned,
                                                        # van_de_ven_split_mnist(_class_il)
    python benchmarks/suite.py split_mnist hydra.launcher.n_jobs=1 strategy.epochs=2   # extra overrides
    python benchmarks/suite.py van_de_ven_split_mnist --only ewc   # one sweep again; the report covers all

The references (single_task, joint) run first, so every strategy finds them cached (transfer,
intransigence). A failed job does not stop the suite: the report lists it and the exit status is 1.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from tune import SUITES as TUNABLE  # the streams benchmarks/tune.py tunes

ROOT = Path(__file__).resolve().parent.parent
SEEDS = {"sentiment": 3, "sentiment_domain_il": 3, "sentiment_toolbox": 3, "sentiment_dropout": 3,  # minutes per run
         "van_de_ven_split_mnist": 3,
         "van_de_ven_split_mnist_class_il": 3}
REFERENCES = ("references", ["strategy=single_task,joint"])
WITHOUT_REFERENCES = {"sentiment_toolbox", "sentiment_dropout"}  # compares variants of the same methods: no references
PEFT = ("strategies", ["strategy=adapter,adapter_fusion,lora,lora_per_task,bitfit,full_ft"])
LIGHT_FUSION = ("fusion_light", ["strategy=adapter_fusion", "fusion=light"])
PLUGINS = ("plugins", ["strategy=full_ft,lora", "plugins=[ewc],[replay],[lwf]"])
ALL = (REFERENCES, PEFT, LIGHT_FUSION, PLUGINS)
CLASS_IL = ["experiment=split_mnist", "scenario=class_il"]
ROUTERS = "router=oracle,entropy,prototype,prototype_mahalanobis,prototype_adapted,learned"
PMNIST_DIL = ["experiment=permuted_mnist_quick", "scenario=domain_il"]
UNLABELLED_ROUTERS = "router=entropy,prototype,prototype_mahalanobis,prototype_adapted,learned"  # oracle = every run's acc_til
SENTIMENT_SMALL = ["stream.train_per_task=400", "stream.test_per_task=200", "strategy.epochs=1"]
SENTIMENT_DIL = ["scenario=domain_il", *SENTIMENT_SMALL]
VDV = "experiment=van_de_ven_split_mnist"
VDV_TIL, VDV_CIL = [VDV, "strategy=full_ft"], [VDV, "scenario=class_il", "strategy=full_ft"]


def vdv_ewc(base: list[str], ewc_lambda: float) -> list[tuple[str, list[str]]]:
    """EWC and online EWC with the Fisher of van de Ven's code (per sample, over the predicted labels), on
    1,000 training samples per task (theirs: all ~12,000; per-sample gradients over 10 classes take minutes)."""
    return [(name, [*base, f"plugins=[{name}]", f"plugins.{name}.fisher=per_sample", f"plugins.{name}.fisher_samples=1000",
                    f"plugins.{name}.ewc_lambda={ewc_lambda:g}"]) for name in ("ewc", "ewc_online")]


TUNED_METHODS = ["none", "ewc", "ewc_online", "si", "lwf", "replay", "adapter", "lora_per_task", "adapter_fusion"]


def tuned(suite: str) -> list[tuple[str, list[str]]]:
    """benchmarks/tune.py's choices for the suite (validation data), and the fusion-budget control: the adapter
    with twice its experiment's epochs, the steps of fusion with ``fusion.budget=extra``."""
    folder, base = f"{suite}_tuned", TUNABLE[suite][0]
    epochs = OmegaConf.load(ROOT / "cl_adapters" / "conf" / "experiment" / f"{base}.yaml").strategy.epochs
    return [("references", [f"experiment={folder}/joint,{folder}/single_task"]),
            ("methods", ["experiment=" + ",".join(f"{folder}/{m}" for m in TUNED_METHODS)]),
            ("fusion_extra", [f"experiment={folder}/adapter_fusion", "fusion.budget=extra"]),
            ("adapter_epoch_control", [f"experiment={folder}/adapter", f"strategy.epochs={2 * epochs}"])]


SUITES = {  # suite -> [(sweep name, overrides)], run in this order
    "split_digits": [(name, ["experiment=split_digits", *o]) for name, o in ALL],
    "split_mnist": [(name, ["experiment=split_mnist", *o]) for name, o in ALL],
    "permuted_mnist": [(name, ["experiment=permuted_mnist_quick", *o]) for name, o in ALL],
    "split_mnist_class_il": [  # no task label at test: per-task adapters and LoRAs need a router
        ("references", [*CLASS_IL, "strategy=single_task,joint"]),
        ("shared", [*CLASS_IL, "strategy=full_ft,lora,bitfit,ncm"]),
        ("plugins", [*CLASS_IL, "strategy=full_ft,lora", "plugins=[ewc],[replay],[lwf]"]),
        ("routed", [*CLASS_IL, "strategy=adapter,lora_per_task,adapter_fusion", ROUTERS]),
    ],
    "sentiment_domain_il": [  # MiniLM, 400 train / 200 test texts per domain, 1 epoch
        ("references", ["experiment=sentiment", *SENTIMENT_DIL, "strategy=joint"]),
        ("shared", ["experiment=sentiment", *SENTIMENT_DIL, "strategy=lora,ncm"]),
        ("full_ft", ["experiment=sentiment_full_ft", *SENTIMENT_DIL]),
        ("routed", ["experiment=sentiment", *SENTIMENT_DIL, "strategy=adapter,lora_per_task", UNLABELLED_ROUTERS]),
    ],
    "sentiment_toolbox": [  # MiniLM task-IL, 400 train / 200 test texts per domain, 1 epoch: fp32 vs NF4 vs int8 base,
        ("quantized", ["experiment=sentiment", *SENTIMENT_SMALL, "strategy=adapter,lora_per_task,adapter_fusion",
                       "model.quantize=null,nf4,int8"]),  # ... and adapters combined with LoRA / prefixes
        ("combined", ["experiment=sentiment", *SENTIMENT_SMALL, "strategy=adapter", "adapter=mam,lora_pfeiffer"]),
    ],
    "sentiment_dropout": [  # MiniLM task-IL, small: the frozen encoder with its dropout (0.1) or without (a method choice)
        ("dropout", ["experiment=sentiment", *SENTIMENT_SMALL, "strategy=adapter", "model.dropout=null,0.0"]),
    ],
    "split_digits_quantized": [  # the MLP trained on task 1 in fp32, then frozen as stored: fp32, NF4 or int8
        ("references", ["experiment=split_digits", "strategy=single_task,joint"]),  # fp32: shared by every base
        ("quantized", ["experiment=split_digits", "strategy=adapter,lora_per_task,adapter_fusion",
                       "model.quantize=null,nf4,int8"]),
    ],
    "permuted_mnist_domain_il": [
        ("references", [*PMNIST_DIL, "strategy=single_task,joint"]),
        ("shared", [*PMNIST_DIL, "strategy=full_ft,lora,ncm"]),
        ("plugins", [*PMNIST_DIL, "strategy=full_ft,lora", "plugins=[replay]"]),
        ("routed", [*PMNIST_DIL, "strategy=adapter,lora_per_task", ROUTERS]),
    ],
    **{f"{suite}_tuned": tuned(suite) for suite in TUNABLE},
    "van_de_ven_split_mnist": [  # their protocol (experiment config) and hyper-parameters (their param_values.py)
        ("references", [VDV, "strategy=joint"]),
        ("methods", [*VDV_TIL, "plugins=[],[si],[lwf],[replay]"]),
        *vdv_ewc(VDV_TIL, 5e4),  # their lambda 1e5 on the same Fisher, without their 1/2
        ("ewc_minibatch", [*VDV_TIL, "plugins=[ewc]", "plugins.ewc.ewc_lambda=6.4e6"]),  # Avalanche's importance
    ],
    "van_de_ven_split_mnist_class_il": [
        ("references", [VDV, "scenario=class_il", "strategy=joint"]),
        ("methods", [*VDV_CIL, "plugins=[],[lwf],[replay]"]),
        *vdv_ewc(VDV_CIL, 5e8),  # their class-IL lambda 1e9
        ("si", [*VDV_CIL, "plugins=[si]", "plugins.si.si_lambda=1e4"]),  # their class-IL c 5000
    ],
    "sentiment": [  # MiniLM on CPU: hours (full fine-tuning wants its own learning rate)
        ("references", ["experiment=sentiment", "strategy=single_task,joint"]),
        ("strategies", ["experiment=sentiment", "strategy=adapter,adapter_fusion,lora,lora_per_task", "fusion=light"]),
        ("full_ft", ["experiment=sentiment_full_ft"]),
    ],
}


def sweeps(suite: str, extra: list[str], out: Path) -> list[list[str]]:
    """The Hydra overrides of each of the suite's multiruns."""
    seeds = "seed=" + ",".join(str(seed) for seed in range(SEEDS.get(suite, 5)))
    return [["hydra/launcher=joblib", seeds, *overrides, *extra, f"hydra.sweep.dir={out / name}"]
            for name, overrides in SUITES[suite]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every sweep")
    parser.add_argument("--out", type=Path, help="the sweeps' directory (default: multirun/suites/<suite>)")
    parser.add_argument("--report", type=Path, help="the report's directory (default: benchmarks/results/<suite>)")
    parser.add_argument("--only", action="append", metavar="SWEEP",
                        help="run only this sweep (repeatable; e.g. after a change to it); the report covers them all")
    args = parser.parse_intermixed_args(argv)  # overrides before or after --only
    names = [name for name, _ in SUITES[args.suite]]
    if unknown := set(args.only or ()) - set(names):
        parser.error(f"--only {', '.join(sorted(unknown))}: {args.suite} has the sweeps {', '.join(names)}")
    out = args.out or ROOT / "multirun" / "suites" / args.suite
    start, failed = time.time(), 0
    for name, overrides in zip(names, sweeps(args.suite, args.overrides, out)):
        if args.only and name not in args.only:
            continue
        print("+ cl-adapters -m", " ".join(overrides), file=sys.stderr, flush=True)
        failed |= subprocess.run([sys.executable, "-m", "cl_adapters", "-m", *overrides], cwd=ROOT).returncode != 0  # a failed job: listed in the report, suite goes on
    minutes = (time.time() - start) / 60
    command = " ".join(["python benchmarks/suite.py", args.suite, *args.overrides, *(f"--only {n}" for n in args.only or ())])
    report = args.report or ROOT / "benchmarks" / "results" / args.suite
    title = f"{args.suite}: `{command}` ({minutes:.1f} min wall clock, jobs in parallel)"
    done = subprocess.run([sys.executable, "-m", "cl_adapters.outputs.report", *(str(out / name) for name, _ in SUITES[args.suite]),
                           "--out", str(report), "--title", title], cwd=ROOT)
    return 1 if failed or done.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
