"""Hyper-parameters chosen on validation data, never on test: per method of a suite, a grid over the
learning rate and the method's own hyper-parameters, every point run with ``eval_stream=valid`` (a held-out
share of the training data, ``stream.val_fraction``) on the tuning seeds, as Hydra joblib multiruns. The
point with the best mean final ACC becomes the method's experiment config, with the whole search next to it.

    python benchmarks/tune.py split_mnist     # -> cl_adapters/conf/experiment/split_mnist_tuned/<method>.yaml
                                              #    benchmarks/results/tuning/split_mnist/search.md
    python benchmarks/suite.py split_mnist_tuned      # then: the tuned methods on test, 5 seeds
    python benchmarks/tune.py split_digits    # the other streams: split_digits, permuted_mnist

The references (joint, single_task) of every tuned method use the tuned joint's optimizer, so all rows
share one J and one S. Replay's memory is a budget, not tuned (more memory only helps): 100 per class.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cl_adapters.outputs.report import load_runs  # noqa: E402

LRS = [3e-4, 1e-3, 3e-3]
TUNING_SEEDS = "seed=10,11"  # not the reported seeds (0-4)
VALIDATION = ["stream.val_fraction=0.1", "eval_stream=valid", "probe_samples=0", "checkpoint=false", "logger=console"]
METHODS = {  # method -> (strategy, plugins, {hyper-parameter: grid}) besides the learning rate
    "none": ("full_ft", [], {}),
    "ewc": ("full_ft", ["ewc"], {"plugins.ewc.ewc_lambda": [1e5, 1e6, 1e7, 1e8]}),
    "ewc_online": ("full_ft", ["ewc_online"], {"plugins.ewc_online.ewc_lambda": [1e5, 1e6, 1e7, 1e8]}),
    "si": ("full_ft", ["si"], {"plugins.si.si_lambda": [2.0, 20.0, 200.0, 2000.0]}),
    "lwf": ("full_ft", ["lwf"], {"plugins.lwf.alpha": [0.5, 1.0, 2.0], "plugins.lwf.temperature": [1.0, 2.0]}),
    "replay": ("full_ft", ["replay"], {}),
    "joint": ("joint", [], {}),
    "adapter": ("adapter", [], {}),
    "lora_per_task": ("lora_per_task", [], {}),
    "adapter_fusion": ("adapter_fusion", [], {}),
}
SUITES = {  # suite -> (base experiment, name)
    "split_digits": ("split_digits", "split digits (task-incremental)"),
    "split_mnist": ("split_mnist", "split MNIST (task-incremental)"),
    "permuted_mnist": ("permuted_mnist_quick", "permuted MNIST, 10 tasks of 5,000 (task-incremental)"),
}
LR = "strategy.optimizer.lr"


def search(suite: str, method: str, out: Path) -> Path:
    """One Hydra multirun over the method's grid x tuning seeds; returns its sweep directory."""
    strategy, plugins, grid = METHODS[method]
    sweep = out / method
    overrides = ["hydra/launcher=joblib", TUNING_SEEDS, f"experiment={SUITES[suite][0]}", f"strategy={strategy}",
                 *([f"plugins=[{','.join(plugins)}]"] if plugins else []), *VALIDATION,
                 f"{LR}={','.join(map(str, LRS))}", *(f"{k}={','.join(map(str, v))}" for k, v in grid.items()),
                 f"hydra.sweep.dir={sweep}"]
    print("+ cl-adapters -m", " ".join(overrides), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "cl_adapters", "-m", *overrides], cwd=ROOT)  # a failed job is listed below
    return sweep


def scores(method: str, sweep: Path) -> dict[tuple, list[float]]:
    """Grid point (lr, then the method's values in METHODS order) -> validation ACC of each tuning seed."""
    keys = [LR, *METHODS[method][2]]
    runs, missing = load_runs([sweep])
    for m in missing:
        print(f"not included: {m}", file=sys.stderr)
    found: dict[tuple, list[float]] = {}
    for results in runs:
        config = OmegaConf.create(results["config"])
        found.setdefault(tuple(OmegaConf.select(config, k) for k in keys), []).append(results["metrics"]["acc"])
    return found


def best(found: dict[tuple, list[float]]) -> tuple:
    """The point with the highest mean validation ACC over the seeds (ties: the first in grid order)."""
    return max(found, key=lambda point: statistics.mean(found[point]))


def experiment_config(suite: str, method: str, point: tuple, joint_lr: float, strategy: str | None = None) -> str:
    """The tuned method as an experiment config (``experiment=<suite>_tuned/<method>``)."""
    _, plugins, grid = METHODS[method]
    strategy = strategy or METHODS[method][0]
    values = OmegaConf.create({})
    for key, value in zip([LR, *grid], point):
        OmegaConf.update(values, key, value, force_add=True)
    OmegaConf.update(values, "references.optimizer", {"_target_": "torch.optim.AdamW", "_partial_": True,
                                                      "lr": joint_lr, "weight_decay": 0.0}, force_add=True)
    chosen = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip([LR, *grid], point))
    defaults = [f"/experiment/{SUITES[suite][0]}", f"override /strategy: {strategy}",
                *([f"override /plugins: [{', '.join(plugins)}]"] if plugins else []), "_self_"]
    return (f"# @package _global_\n# {method} on {SUITES[suite][1]}: {chosen}, chosen on validation data by\n"
            f"# `python benchmarks/tune.py {suite}` ({', '.join(VALIDATION[:2])}, {TUNING_SEEDS}; never the test set).\n"
            f"# The grid and every score: benchmarks/results/tuning/{suite}/search.md. References: the tuned joint's lr.\n"
            "defaults:\n" + "".join(f"  - {d}\n" for d in defaults) + OmegaConf.to_yaml(values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path, help="the sweeps' directory (default: multirun/tuning/<suite>)")
    args = parser.parse_args(argv)
    out, start = args.out or ROOT / "multirun" / "tuning" / args.suite, time.time()
    found = {m: scores(m, search(args.suite, m, out)) for m in args.methods}
    if "joint" not in found:
        found["joint"] = scores("joint", out / "joint")  # an earlier search's
    joint_lr = best(found["joint"])[0]
    configs = ROOT / "cl_adapters" / "conf" / "experiment" / f"{args.suite}_tuned"
    configs.mkdir(exist_ok=True)
    lines = [f"# Hyper-parameter search: {SUITES[args.suite][1]}", "",
             f"`python benchmarks/tune.py {args.suite}` ({(time.time() - start) / 60:.1f} min): validation ACC (mean over "
             f"{TUNING_SEEDS}) at each grid point, with {', '.join(VALIDATION[:2])}; the chosen point (**bold**) is "
             f"`cl_adapters/conf/experiment/{args.suite}_tuned/<method>.yaml`.", ""]
    for method, points in found.items():
        if not points:
            print(f"error: no complete run for {method}", file=sys.stderr)
            return 1
        chosen = best(points)
        (configs / f"{method}.yaml").write_text(experiment_config(args.suite, method, chosen, joint_lr))
        keys = [LR, *METHODS[method][2]]
        lines += [f"## {method}", "", "| " + " | ".join(k.rsplit(".", 1)[-1] for k in keys) + " | validation ACC | seeds |",
                  "|" + " --- |" * (len(keys) + 2)]
        for point in sorted(points):
            mark = "**" if point == chosen else ""
            lines.append("| " + " | ".join(f"{mark}{v:g}{mark}" for v in point)
                         + f" | {mark}{statistics.mean(points[point]):.4f}{mark} | {len(points[point])} |")
        lines.append("")
    single_task = experiment_config(args.suite, "joint", best(found["joint"]), joint_lr, strategy="single_task")
    (configs / "single_task.yaml").write_text(single_task.replace("# joint on", "# single_task (the joint's lr) on"))
    report = ROOT / "benchmarks" / "results" / "tuning" / args.suite / "search.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines))
    print(f"search: {report}\nconfigs: {configs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
