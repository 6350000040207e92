"""Comparison table from run directories: one row per strategy (+ fusion, plugins), mean ± std over seeds.

    python -m cl_adapters.report multirun/2026-11-24/06-28-12 [more dirs ...] > table.md
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

COLUMNS = {  # header -> metric key
    "ACC": "acc",
    "BWT": "bwt",
    "forgetting": "forgetting",
    "transfer vs single": "transfer_vs_single",
    "intransigence": "intransigence",
}


def load_runs(dirs: list[str | Path]) -> list[dict]:
    """Every complete results.json under ``dirs`` (references trained inside a run are skipped)."""
    runs = []
    for d in dirs:
        for path in sorted(Path(d).rglob("results.json")):
            results = json.loads(path.read_text())
            if "references" not in path.parent.parts and results["run"]["status"] == "complete":
                runs.append(results)
    return runs


def run_name(results: dict) -> str:
    """``strategy[fusion]+plugin+...``, e.g. ``adapter_fusion[light]``, ``full_ft+ewc``."""
    run = results["run"]
    fusion = f"[{run['fusion']}]" if run.get("fusion") else ""
    return "+".join([run["strategy"] + fusion, *run.get("plugins", [])])


def mean_std(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(runs: list[dict]) -> str:
    groups = defaultdict(list)
    for results in runs:
        groups[run_name(results)].append(results)
    header = ["run", "seeds", *COLUMNS, "trainable params (task 1 / last)", "bytes/task (last)", "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, group in sorted(groups.items()):
        group.sort(key=lambda r: r["config"]["seed"])
        costs = group[0]["costs"]
        cells = [
            name,
            ",".join(str(r["config"]["seed"]) for r in group),
            *(mean_std([r["metrics"].get(key) for r in group]) for key in COLUMNS.values()),
            f"{costs[0]['trainable_params']:,} / {costs[-1]['trainable_params']:,}",
            f"{costs[-1]['bytes_per_task']:,}",
            f"{statistics.mean(sum(c['train_seconds'] for c in r['costs']) for r in group):.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    dirs = (argv if argv is not None else sys.argv[1:]) or ["multirun"]
    runs = load_runs(dirs)
    if not runs:
        sys.exit(f"error: no complete results.json under {dirs}")
    print(table(runs))


if __name__ == "__main__":
    main()
