"""A long stream: per-task training time and memory over 50 permuted-MNIST tasks.

    .venv/bin/python benchmarks/long_stream.py            # ~10 min on 2 CPU cores (3 runs of each config)
    .venv/bin/python benchmarks/long_stream.py --quick    # a smoke run (4 tasks, 1 run)

Permuted MNIST, 50 tasks of 2,000 training / 500 test samples, MLP 784-256-256, batch 64, 2 epochs per task,
task-IL. Configurations: per-task adapters, light AdapterFusion over all earlier adapters, over the top 3 of
all (``fusion.top_k=3``) and over the top 3 of the 6 nearest tasks (``fusion.candidates=6``), full
fine-tuning. Each runs in its own process, one after another, ``--repeats`` times with the order rotated
(per task the median of the runs: single runs vary by ~30% a task here); after each task it records the
task's training seconds, the model's parameter bytes and the process's resident memory (RSS now, not its
peak). The final model is scored on every task (ACC; BWT is 0 for the per-task methods).

This machine's speed drifts by tens of percent within seconds (a fixed loop alone slows by 40% over 15 s),
more than a long stream's overheads. So after each task, outside its timing, a control runs: a fixed
bare PyTorch workload (``CONTROL_STEPS`` Adam steps of the same MLP on one batch). A task's time divided by
its control's is in units of the machine's speed at that moment; late / early is reported both raw and
in these units (drift-corrected). Writes benchmarks/results/long_stream.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from adapter_speed import environment, environment_line  # noqa: E402

OUT = Path(__file__).parent / "results"
CONFIGS = {
    "adapter": ["strategy=adapter"],
    "fusion_all": ["strategy=adapter_fusion", "fusion=light"],
    "fusion_top3": ["strategy=adapter_fusion", "fusion=light", "fusion.top_k=3"],
    "fusion_top3_near6": ["strategy=adapter_fusion", "fusion=light", "fusion.top_k=3", "fusion.candidates=6"],
    "full_ft": ["strategy=full_ft"],
}


CONTROL_STEPS = 30


def control_seconds() -> float:
    """A fixed workload, the same every call: the machine's speed now. The stream's random numbers are
    left as they were (its next task trains as it would without the control)."""
    import torch
    from torch import nn

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
        optimizer = torch.optim.Adam(model.parameters())
        x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
        t0 = time.perf_counter()
        for _ in range(CONTROL_STEPS):
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
        return time.perf_counter() - t0


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(name: str, tasks: int, train: int, test: int) -> dict:
    """One configuration through the stream, in this process."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from cl_adapters import CONFIG_DIR
    from cl_adapters.metrics import AccuracyPlugin

    overrides = ["stream=permuted_mnist", f"stream.n_tasks={tasks}", f"stream.train_per_task={train}",
                 f"stream.test_per_task={test}", "strategy.epochs=2", "strategy.batch_size=64", *CONFIGS[name]]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    torch.manual_seed(0)
    scenario = instantiate(cfg.stream)
    backbone = instantiate(cfg.model, input_shape=tuple(scenario.train_stream[0].dataset[0][0].shape))
    accuracy = AccuracyPlugin()
    strategy = instantiate(cfg.strategy, backbone=backbone, plugins=[], monitors=[accuracy])
    model, seconds, control, param_bytes, rss = strategy.model, [], [], [], []
    for i, experience in enumerate(scenario.train_stream):
        t0 = time.perf_counter()
        strategy.train(experience)
        seconds.append(time.perf_counter() - t0)
        param_bytes.append(sum(p.numel() * p.element_size() for p in model.parameters()))
        rss.append(rss_bytes())
        control.append(control_seconds())
        print(f"{name} task {i + 1}/{tasks}: {seconds[-1]:.2f}s, RSS {rss[-1] / 2**20:.0f} MiB", file=sys.stderr, flush=True)
    strategy.eval(scenario.test_stream)
    return {"overrides": overrides, "train_seconds": seconds, "control_seconds": control, "param_bytes": param_bytes, "rss_bytes": rss,
            "final_accuracy": [accuracy.last[j] for j in range(tasks)]}


def summary(row: dict, window: int) -> dict:
    s, relative = row["train_seconds"], row["train_vs_control"]
    early, late = statistics.median(s[1 : 1 + window]), statistics.median(s[-window:])
    corrected = statistics.median(relative[-window:]) / statistics.median(relative[1 : 1 + window])
    later = range(len(s) // 5, len(s))  # the last four fifths: a bounded cost has no slope there
    slope = statistics.linear_regression(list(later), [s[i] for i in later]).slope if len(later) > 1 else 0.0
    grows = [b - a for a, b in zip(row["param_bytes"], row["param_bytes"][1:])]
    return {"task2_s": s[1], "last_s": s[-1], "early_median_s": early, "late_median_s": late, "late_vs_early": late / early,
            "late_vs_early_corrected": corrected,
            "slope_ms_per_task": 1000 * slope,
            "param_mib_first": row["param_bytes"][0] / 2**20, "param_mib_last": row["param_bytes"][-1] / 2**20,
            "param_kib_per_task": statistics.median(grows) / 1024 if grows else 0.0,
            "rss_mib_first": row["rss_bytes"][0] / 2**20, "rss_mib_last": row["rss_bytes"][-1] / 2**20,
            "acc": statistics.fmean(row["final_accuracy"])}


def plot(rows: dict, path: Path) -> None:
    from cl_adapters.outputs.plots import pyplot, save_figure

    fig, (time_ax, memory_ax) = pyplot().subplots(1, 2, figsize=(11, 4), layout="constrained")
    for i, (name, row) in enumerate(rows.items()):
        tasks, color = range(1, len(row["train_seconds"]) + 1), f"C{i}"  # one colour per configuration
        time_ax.plot(tasks, row["train_seconds"], color=color, label=name)
        memory_ax.plot(tasks, [b / 2**20 for b in row["rss_bytes"]], color=color, label=f"{name} (RSS)")
        memory_ax.plot(tasks, [b / 2**20 for b in row["param_bytes"]], color=color, linestyle=":", label=f"{name} (parameters)")
    time_ax.set(xlabel="task", ylabel="training seconds", title="training time per task")
    memory_ax.set(xlabel="after task", ylabel="MiB", yscale="log", title="memory")
    time_ax.legend(fontsize=7)
    memory_ax.legend(fontsize=6, ncol=2)
    save_figure(fig, path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="4 tasks of 200 samples (a smoke test)")
    parser.add_argument("--out", default=str(OUT), help="folder for long_stream.{md,json,png}")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each configuration (per-task medians)")
    parser.add_argument("--config", choices=sorted(CONFIGS), help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    tasks, train, test = (4, 200, 100) if args.quick else (50, 2000, 500)
    if args.config:
        print(json.dumps(measure(args.config, tasks, train, test)))
        return
    repeats = 1 if args.quick else args.repeats
    runs = {name: [] for name in CONFIGS}
    for r in range(repeats):  # one process each, one after another (RSS and timings of that config alone),
        names = list(CONFIGS)  # the order rotated each round
        for name in names[r % len(names):] + names[: r % len(names)]:
            child = subprocess.run([sys.executable, __file__, "--config", name, *(["--quick"] if args.quick else [])],
                                   check=True, stdout=subprocess.PIPE, text=True)
            runs[name].append(json.loads(child.stdout.strip().splitlines()[-1]))
    rows = {name: {**made[0], "train_seconds": _per_task_median([m["train_seconds"] for m in made]),
                   "train_vs_control": _per_task_median([[s / c for s, c in zip(m["train_seconds"], m["control_seconds"])]
                                                         for m in made]),
                   "train_seconds_runs": [m["train_seconds"] for m in made],
                   "control_seconds_runs": [m["control_seconds"] for m in made]} for name, made in runs.items()}
    window = 1 if args.quick else 5
    results = {**environment("cl-adapters", "torch", "avalanche-lib"),
               "setup": {"tasks": tasks, "train_per_task": train, "test_per_task": test, "window": window,
                         "repeats": repeats},
               "rows": rows, "summary": {name: summary(row, window) for name, row in rows.items()}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "long_stream.json").write_text(json.dumps(results, indent=2))
    (out / "long_stream.md").write_text(markdown(results))
    plot(rows, out / "long_stream.png")
    print(markdown(results))


def _per_task_median(runs: list[list[float]]) -> list[float]:
    return [statistics.median(task) for task in zip(*runs)]


def markdown(res: dict) -> str:
    s, w = res["setup"], res["setup"]["window"]
    lines = [f"# A long stream: {s['tasks']} permuted-MNIST tasks ({s['train_per_task']:,} train / {s['test_per_task']:,} "
             "test samples each, MLP 784-256-256, batch 64, 2 epochs, task-IL)", "", environment_line(res),
             f"Each configuration in its own process, one after another, {s.get('repeats', 1)} times (configs rotated); "
             f"per task the median of the runs. Early / late: median training seconds of tasks 2-{1 + w} / the last {w}; "
             "slope: least-squares growth of a task's seconds over the last four fifths of the stream; RSS is the "
             "process's resident memory after the task (not its peak). Drift-corrected: late / early of each task's "
             f"time over that of a fixed control workload run right after it ({CONTROL_STEPS} Adam steps of a bare "
             "MLP; module docstring). Curves: long_stream.png.", "",
             "| config | task 2 s | last task s | early median s | late median s | late / early | late / early, "
             "drift-corrected | slope ms/task | parameters MiB (first -> last) | + KiB per task | RSS MiB (first -> last) "
             "| ACC (final) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in res["summary"].items():
        lines.append(f"| {name} | {r['task2_s']:.2f} | {r['last_s']:.2f} | {r['early_median_s']:.2f} | {r['late_median_s']:.2f} "
                     f"| {r['late_vs_early']:.2f}x | {r['late_vs_early_corrected']:.2f}x | {r['slope_ms_per_task']:+.2f} "
                     f"| {r['param_mib_first']:.1f} -> {r['param_mib_last']:.1f} "
                     f"| {r['param_kib_per_task']:.0f} | {r['rss_mib_first']:.0f} -> {r['rss_mib_last']:.0f} | {r['acc']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
