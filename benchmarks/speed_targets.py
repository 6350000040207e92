"""The speed-at-scale targets, measured: one table from the loop, adapter, profile and long-stream benchmarks.

    .venv/bin/python benchmarks/speed_targets.py --run    # runs the four (~35 min on 2 cores), then the table
    .venv/bin/python benchmarks/speed_targets.py          # the table from their committed results

Each row is a ratio taken within one benchmark's run (configurations in rotation in one process, or one
process per configuration for the long stream), never across runs. Writes benchmarks/results/speed_targets.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
BENCHMARKS = ("loop_speed", "adapter_speed", "adapter_profile", "long_stream")


def rows(results: Path) -> list[tuple[str, str, str, bool | None]]:
    """(measure, now, target, met) per target."""
    loop = json.loads((results / "loop_speed.json").read_text())["rows"]["platform"]
    speed = json.loads((results / "adapter_speed.json").read_text())
    train, infer = speed["train"], speed["inference"]
    long = json.loads((results / "long_stream.json").read_text())["summary"]
    out = [
        ("split MNIST task 2 loop vs a bare loop over in-memory tensors", f"{loop['vs_bare_tensors']:.2f}x", ">= 0.90x",
         loop["vs_bare_tensors"] >= 0.90),
        ("split MNIST task 2 loop vs a bare loop over a plain DataLoader", f"{loop['vs_bare_dataloader']:.2f}x", ">= 1.0x",
         loop["vs_bare_dataloader"] >= 1.0),
    ]
    for kind, target in (("pfeiffer", 1.40), ("houlsby", 1.35)):
        ours, hub = train[f"ours_{kind}"]["vs_full_ft"], train[f"adapterhub_{kind}"]["vs_full_ft"]
        out.append((f"MiniLM training step vs full fine-tuning, {kind.title()} r=24", f"{ours:.2f}x (AdapterHub {hub:.2f}x)",
                    f">= {target:.2f}x", ours >= target))
        out.append((f"same, ours vs AdapterHub, {kind.title()}", f"{ours / hub:.2f}x", ">= 1.05x", ours / hub >= 1.05))
        overhead = infer[f"ours_{kind}"]["overhead_vs_bare"]
        out.append((f"MiniLM inference overhead of one adapter, {kind.title()}", f"{overhead:+.1%}", "<= +3%", overhead <= 0.03))
    profile = json.loads((results / "adapter_profile.json").read_text())["pairs"]
    for kind in ("pfeiffer", "houlsby"):  # no target of its own: where the end-to-end overhead above comes from
        own = profile[f"inference: ours_{kind} vs bare"]
        out.append((f"(profile) inference, {kind.title()}: the adapter's own operators, share of the bare model's step",
                    f"{own['own_ms'] / own['total_ms'][0]:+.1%}", "-", None))
        pair = profile[f"training: ours_{kind} vs adapterhub_{kind}"]
        out.append((f"(profile) training, {kind.title()}: operators only ours / only AdapterHub's run, share of its step",
                    f"{pair['own_ms'] / pair['total_ms'][1]:.1%} / {pair['base_own_ms'] / pair['total_ms'][0]:.1%}", "-", None))
    for name, target in (("adapter", 1.10), ("fusion_top3_near6", 1.25), ("fusion_top3", None), ("fusion_all", None),
                         ("full_ft", None)):
        ratio, raw = long[name]["late_vs_early_corrected"], long[name]["late_vs_early"]  # no target where it grows with N (fusion over all)
        out.append((f"{name}: per-task training time, last 5 of 50 tasks vs tasks 2-6 (medians), drift-corrected",
                    f"{ratio:.2f}x (raw {raw:.2f}x; slope {long[name]['slope_ms_per_task']:+.2f} ms/task)",
                    "-" if target is None else f"<= {target:.2f}x", None if target is None else ratio <= target))
    return out


def markdown(table: list[tuple[str, str, str, bool | None]]) -> str:
    lines = ["# Speed at scale: targets and where they stand", "",
             "From benchmarks/results/{loop_speed,adapter_speed,adapter_profile,long_stream}.json (machine, versions and "
             "dates there); the (profile) rows, from adapter_profile.md, show what the adapters' own operators cost. "
             "Long stream: each task's time over that of a fixed control workload run right after it (the machine's "
             "speed drifts by tens of percent within seconds; long_stream.py); raw: the seconds themselves.", "",
             "| measure | now | target | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {m} | {now} | {target} | {'-' if met is None else 'yes' if met else 'no'} |" for m, now, target, met in table]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", action="store_true", help="run the four benchmarks first (one after another)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="their results folder and this table's")
    args = parser.parse_args()
    if args.run:
        for name in BENCHMARKS:
            subprocess.run([sys.executable, str(HERE / f"{name}.py"), "--out", str(args.out)], check=True)
    text = markdown(rows(args.out))
    (args.out / "speed_targets.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
