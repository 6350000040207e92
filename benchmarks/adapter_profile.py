"""Where an adapter's time goes on MiniLM: per-operator time, a configuration against its baseline.

    .venv/bin/python benchmarks/adapter_profile.py            # ~3 min on 2 CPU cores
    .venv/bin/python benchmarks/adapter_profile.py --quick    # a smoke run

The same batch as adapter_speed.py (32 x 128 tokens). Each pair is profiled with torch.profiler over the
same number of steps, after warm-up: inference of the bare model against Pfeiffer and Houlsby adapters,
and a training step of ours against AdapterHub's Houlsby. Per operator: milliseconds per step in each
and the difference, largest first: what an adapter adds, or what one implementation spends that the other
does not. Writes benchmarks/results/adapter_profile.{md,json}.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import torch  # noqa: E402
from adapter_speed import OUT, arguments, build, environment, environment_line, inferer, trainer, write  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

PAIRS = {"inference": [("bare", "ours_pfeiffer"), ("bare", "ours_houlsby")],
         "training": [("adapterhub_houlsby", "ours_houlsby"), ("adapterhub_pfeiffer", "ours_pfeiffer")]}
SHOWN = 8  # operators per pair


def operator_ms(step, steps: int, warmup: int) -> tuple[dict[str, float], float]:
    """Self CPU milliseconds per step of each operator, and the step's wall milliseconds under the profiler."""
    for _ in range(warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    per_op = Counter()
    for event in prof.key_averages():
        per_op[event.key] += event.self_cpu_time_total / 1000 / steps
    return dict(per_op), sum(per_op.values())


def main():
    args = arguments("adapter_profile")
    steps, warmup = (1, 1) if args.quick else (6, 2)
    results = {**environment("cl-adapters", "torch", "transformers", "adapters"),
               "setup": {"steps": steps, "warmup": warmup}, "pairs": {}}
    for kind, pairs in PAIRS.items():
        for base, other in pairs:
            measured = {}
            for name in (base, other):
                model = build(name)
                step = inferer(model) if kind == "inference" else trainer(model)[0]
                measured[name] = operator_ms(step, steps, warmup)
                print(f"{kind} {name}: {measured[name][1]:.1f} ms/step profiled", flush=True)
            (a, a_total), (b, b_total) = measured[base], measured[other]
            diff = {op: b.get(op, 0.0) - a.get(op, 0.0) for op in set(a) | set(b)}
            top = sorted(diff, key=lambda op: -abs(diff[op]))[:SHOWN]
            results["pairs"][f"{kind}: {other} vs {base}"] = {
                "total_ms": [a_total, b_total],
                "operators": [{"op": op, "base_ms": a.get(op, 0.0), "ms": b.get(op, 0.0), "diff_ms": diff[op]} for op in top]}
    write(results, markdown(results), Path(args.out) / "adapter_profile")


def markdown(res: dict) -> str:
    lines = ["# Where adapter time goes: MiniLM, batch 32 x 128, per-operator self CPU time (torch.profiler)", "",
             environment_line(res),
             f"{res['setup']['steps']} profiled steps per configuration after {res['setup']['warmup']} warm-up; "
             "ms per step; the operators whose time differs most between the two, largest first.", ""]
    for pair, r in res["pairs"].items():
        (a, b) = r["total_ms"]
        lines += [f"## {pair}: {b:.1f} vs {a:.1f} ms per step ({b / a - 1:+.1%})", "",
                  "| operator | base ms | ms | difference ms |", "| --- | --- | --- | --- |"]
        lines += [f"| {o['op']} | {o['base_ms']:.2f} | {o['ms']:.2f} | {o['diff_ms']:+.2f} |" for o in r["operators"]]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
