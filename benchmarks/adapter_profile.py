"""Where an adapter's time goes on MiniLM: per-operator time, a configuration against its baseline.

    .venv/bin/python benchmarks/adapter_profile.py            # ~3 min on 2 CPU cores
    .venv/bin/python benchmarks/adapter_profile.py --quick    # a smoke run

The same batch as adapter_speed.py (32 x 128 tokens). Each pair is profiled with torch.profiler, the two
in alternation: inference of the bare model against Pfeiffer and Houlsby adapters, and a training step of
ours against AdapterHub's (Houlsby, Pfeiffer). Operators are told apart by their input shapes, so what
runs in only one of the two (an adapter's own GEMMs, its activation, its adds) is measured by itself,
free of the backbone's run-to-run noise. Writes benchmarks/results/adapter_profile.{md,json}.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from adapter_speed import OUT, arguments, build, environment, environment_line, inferer, trainer, write  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

PAIRS = {"inference": [("bare", "ours_pfeiffer"), ("bare", "ours_houlsby")],
         "training": [("adapterhub_houlsby", "ours_houlsby"), ("adapterhub_pfeiffer", "ours_pfeiffer")]}
SHOWN = 8  # operators per pair


def operator_ms(step, steps: int) -> dict[str, float]:
    """Self CPU milliseconds per step of each operator at each input shape."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    per_op = Counter()
    for event in prof.key_averages(group_by_input_shape=True):
        per_op[f"{event.key} {event.input_shapes}"] += event.self_cpu_time_total / 1000 / steps
    return dict(per_op)


def compare(steps: dict, rounds: int, per_round: int) -> dict:
    """The two configurations profiled in alternation; an operator at a shape only one of them runs is that
    one's own work (an adapter's GEMMs are shaped by its bottleneck), the rest is shared."""
    base, other = steps
    runs = {base: Counter(), other: Counter()}
    for r in range(rounds):
        for name in ((base, other) if r % 2 == 0 else (other, base)):
            runs[name].update({op: ms / rounds for op, ms in operator_ms(steps[name], per_round).items()})
    a, b = runs[base], runs[other]
    own, theirs = {op: b[op] for op in b if op not in a}, {op: a[op] for op in a if op not in b}
    return {"total_ms": [sum(a.values()), sum(b.values())], "own_ms": sum(own.values()), "base_own_ms": sum(theirs.values()),
            "operators": largest(own), "base_operators": largest(theirs)}


def largest(ms: dict[str, float]) -> list[dict]:
    return [{"op": op, "ms": ms[op]} for op in sorted(ms, key=ms.get, reverse=True)[:SHOWN]]


def main():
    args = arguments("adapter_profile")
    rounds, per_round, warmup = (2, 1, 1) if args.quick else (6, 2, 2)
    results = {**environment("cl-adapters", "torch", "transformers", "adapters"),
               "setup": {"rounds": rounds, "steps_per_round": per_round, "warmup": warmup}, "pairs": {}}
    for kind, pairs in PAIRS.items():
        for base, other in pairs:
            steps = {name: (inferer if kind == "inference" else lambda m: trainer(m)[0])(build(name)) for name in (base, other)}
            for step in steps.values():
                for _ in range(warmup):
                    step()
            results["pairs"][f"{kind}: {other} vs {base}"] = compare(steps, rounds, per_round)
            print(f"{kind}: {other} vs {base} profiled", flush=True)
    write(results, markdown(results), Path(args.out) / "adapter_profile")


def markdown(res: dict) -> str:
    s = res["setup"]
    lines = ["# Where adapter time goes: MiniLM, batch 32 x 128, per-operator self CPU time (torch.profiler)", "",
             environment_line(res),
             f"The two configurations of a pair profiled in alternation, {s['rounds']} rounds of {s['steps_per_round']} "
             f"steps each after {s['warmup']} warm-up; ms per step. An operator at input shapes that only one of the two "
             "runs is that one's own work (an adapter's GEMMs are shaped by its bottleneck); the totals include the "
             "shared backbone, whose operators vary by ~10% run to run on this machine.", ""]
    for pair, r in res["pairs"].items():
        (a, b), (other, base) = r["total_ms"], pair.split(": ")[1].split(" vs ")
        lines += [f"## {pair}", "",
                  f"Totals {b:.1f} vs {a:.1f} ms per step. Only in {other}: {r['own_ms']:.1f} ms ({r['own_ms'] / a:.1%} of "
                  f"{base}'s step); only in {base}: {r['base_own_ms']:.1f} ms.", "",
                  f"| only in {other}: operator [input shapes] | ms |", "| --- | --- |"]
        lines += [f"| {o['op']} | {o['ms']:.2f} |" for o in r["operators"]]
        if r["base_operators"]:
            lines += ["", f"| only in {base}: operator [input shapes] | ms |", "| --- | --- |"]
            lines += [f"| {o['op']} | {o['ms']:.2f} |" for o in r["base_operators"]]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
