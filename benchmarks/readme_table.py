"""A table from a suite's report.csv: the references first (single_task only gives S, so it has no row),
then the rows by ACC; mean ± 95% CI. docs/generate.py writes the README's headline table and the docs'
per-strategy tables with its cells, so that a number there is the report's number.

    python benchmarks/readme_table.py benchmarks/results/sentiment_domain_il/report.csv
    python benchmarks/readme_table.py benchmarks/results/split_mnist_class_il/report.csv --columns acc bwt til_cil_gap
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from cl_adapters.outputs.report import mean_ci_cell

HEADERS = {"acc": "ACC", "bwt": "BWT", "forgetting": "forgetting", "fwt_probe": "FWT (probe)",
           "acc_til": "ACC with labels", "til_cil_gap": "TIL-CIL gap", "task_id_acc": "task-ID acc",
           "params": "trainable params (task 1 / last)", "bytes_per_task": "bytes/task", "budget": "steps / samples"}
SIGNED = {"bwt", "fwt_probe", "til_cil_gap"}  # shown with their sign: their direction is the point


def cell(row: dict, key: str) -> str:
    if key == "params":
        return f"{int(row['trainable_params_first']):,} / {int(row['trainable_params_last']):,}"
    if key == "budget":
        return f"{int(row['optimizer_steps']):,} / {int(row['train_samples']):,}"
    if key == "bytes_per_task":
        return f"{round(float(row[key])):,}"
    if not row.get(key):
        return "-"
    text = mean_ci_cell(float(row[key]), float(row[f"{key}_ci95"] or 0))  # as the report writes it
    return "+" + text if key in SIGNED and not text.startswith("-") else text


def table(report: Path, columns: list[str]) -> str:
    with open(report, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["reference"] != "single_task"]
    scenarios = {r["scenario"] for r in rows}
    title = f"run (scenario {scenarios.pop()})" if len(scenarios) == 1 else "run"
    rows.sort(key=lambda r: (not r["reference"], -float(r["acc"])))
    lines = [f"| {title} | " + " | ".join(HEADERS[c] for c in columns) + " |", "| --- " * (len(columns) + 1) + "|"]
    for r in rows:
        name = f"{r['run']} (reference)" if r["reference"] else r["run"]
        lines.append(f"| {name} | " + " | ".join(cell(r, c) for c in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a suite's report.csv")
    parser.add_argument("--columns", nargs="+", choices=HEADERS, default=[
        "acc", "bwt", "acc_til", "task_id_acc", "params", "bytes_per_task", "budget"])
    args = parser.parse_args(argv)
    print(table(args.report, args.columns))


if __name__ == "__main__":
    main()
