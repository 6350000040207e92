"""Comparison report from run directories: per stream, one row per strategy (+ fusion, plugins) with
mean ± std over seeds, as Markdown and CSV, plus plots. Runs of different streams are never averaged
together; unfinished or failed jobs are listed, not dropped silently.

    cl-adapters-report multirun/2026-11-24/06-28-12 [more dirs ...] [--out DIR]

Writes ``report.md``, ``report.csv``, ``accuracy_matrices.png`` (mean R per row), ``task_accuracy.png``
(accuracy on each task as the stream goes on) and ``acc_vs_params.png`` to ``--out`` (default: the
first directory's ``report/``), and prints the table (to stdout; everything else to stderr).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from cl_adapters.atomic import atomic_path
from cl_adapters.logging.plots import heatmap, pyplot, save_figure

COLUMNS = {  # header -> metric key
    "ACC": "acc",
    "BWT": "bwt",
    "forgetting": "forgetting",
    "FWT": "fwt",
    "transfer vs single": "transfer_vs_single",
    "intransigence": "intransigence",
}


def load_runs(dirs: list[str | Path]) -> tuple[list[dict], list[str]]:
    """(complete results, what is missing): every results.json under ``dirs`` (references trained inside
    a run are skipped); a run that did not complete, or a Hydra job folder without results, is listed."""
    runs, missing = [], []
    for d in dirs:
        for job in sorted({p.parent for p in Path(d).rglob(".hydra")} | {p.parent for p in Path(d).rglob("results.json")}):
            if "references" in job.parts:
                continue
            path, error = job / "results.json", job / "error.txt"
            why = f": {error.read_text().strip()}" if error.exists() else ""
            if not path.exists():
                missing.append(f"{job}: no results.json (failed before its first task{why or ' or still starting'})")
                continue
            results = json.loads(path.read_text())
            if results["run"]["status"] != "complete":
                done = sum(row[0] is not None for row in results.get("accuracy_matrix", []))
                missing.append(f"{job}: {results['run']['status']} after {done} task(s){why}")
            else:
                runs.append(results)
    return runs, missing


def run_name(results: dict) -> str:
    """``strategy[fusion]+plugin+...``, e.g. ``adapter_fusion[light]``, ``full_ft+ewc``."""
    run = results["run"]
    fusion = f"[{run['fusion']}]" if run.get("fusion") else ""
    return "+".join([run["strategy"] + fusion, *run.get("plugins", [])])


def grouped(runs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(stream, run name) -> its runs sorted by seed, in sorted order."""
    groups = defaultdict(list)
    for results in runs:
        groups[(results["run"]["stream"], run_name(results))].append(results)
    return {key: sorted(group, key=lambda r: r["config"]["seed"]) for key, group in sorted(groups.items())}


def mean_std(values: list) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def rows(runs: list[dict]) -> list[dict]:
    """One flat record per (stream, run name): the CSV rows, and what the table shows."""
    out = []
    for (stream, name), group in grouped(runs).items():
        row = {"stream": stream, "run": name, "seeds": " ".join(str(r["config"]["seed"]) for r in group)}
        for key in COLUMNS.values():
            row[key], row[f"{key}_std"] = mean_std([r["metrics"].get(key) for r in group])
        per_task = [[c["trainable_params"] for c in r["costs"]] for r in group]
        row["trainable_params_first"], row["trainable_params_last"] = per_task[0][0], per_task[0][-1]
        row["trainable_params_per_task"] = statistics.mean(statistics.mean(p) for p in per_task)
        row["bytes_per_task"] = statistics.mean(statistics.mean(c["bytes_per_task"] for c in r["costs"]) for r in group)
        row["train_seconds"] = statistics.mean(sum(c["train_seconds"] for c in r["costs"]) for r in group)
        out.append(row)
    return out


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    mean = round(mean, 4) + 0.0  # no "-0.0000"
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def table(runs: list[dict]) -> str:
    header = ["stream", "run", "seeds", *COLUMNS, "trainable params (task 1 / last)", "bytes/task", "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows(runs):
        cells = [row["stream"], row["run"], row["seeds"].replace(" ", ","),
                 *(_cell(row[key], row[f"{key}_std"]) for key in COLUMNS.values()),
                 f"{row['trainable_params_first']:,} / {row['trainable_params_last']:,}",
                 f"{row['bytes_per_task']:,.0f}", f"{row['train_seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: list[dict], out: Path) -> list[Path]:
    """The three report figures (see the module docstring)."""
    plt = pyplot()
    groups = grouped(runs)
    mean_R = {key: np.mean([np.array(r["accuracy_matrix"], dtype=float) for r in group], axis=0)
              for key, group in groups.items()}
    labels = {key: f"{key[0]}: {key[1]}" for key in groups}
    n = len(groups)
    written = []

    fig, axes = plt.subplots(1, n, figsize=(0.5 + 3.2 * n, 3.4), squeeze=False, layout="constrained")
    for ax, (key, R) in zip(axes[0], mean_R.items()):
        image = heatmap(ax, R, annotate=len(R) <= 10, fontsize=6)
        ax.set_title(labels[key], fontsize=8)
        ax.set_xlabel("task j")
        ax.set_ylabel("after task i")
    fig.colorbar(image, ax=axes[0].tolist(), label="mean accuracy R[i, j]")
    written.append(save_figure(fig, out / "accuracy_matrices.png"))

    fig, axes = plt.subplots(1, n, figsize=(0.5 + 3.2 * n, 3.2), squeeze=False, sharey=True, layout="constrained")
    for ax, (key, R) in zip(axes[0], mean_R.items()):
        steps = np.arange(len(R))
        for j in range(R.shape[1]):
            ax.plot(steps[j:], R[j:, j], marker="o", markersize=3, label=f"task {j}")
        ax.set_xticks(steps)
        ax.set_title(labels[key], fontsize=8)
        ax.set_xlabel("after training task i")
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=6, loc="lower left")
    written.append(save_figure(fig, out / "task_accuracy.png"))

    fig, ax = plt.subplots(figsize=(5, 3.6), layout="constrained")
    for row in rows(runs):
        ax.errorbar(row["trainable_params_per_task"], row["acc"], yerr=row["acc_std"] or 0, marker="o", capsize=3,
                    label=f"{row['stream']}: {row['run']}")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters per task (mean)")
    ax.set_ylabel("ACC (mean ± std over seeds)")
    ax.legend(fontsize=6)
    written.append(save_figure(fig, out / "acc_vs_params.png"))
    return written


def write(runs: list[dict], missing: list[str], out: Path) -> list[Path]:
    text = table(runs)
    if missing:
        text += "\n\nNot included (unfinished or failed):\n" + "\n".join(f"- {m}" for m in missing)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(text + "\n")
    records = rows(runs)
    with atomic_path(out / "report.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return [out / "report.md", out / "report.csv", *plot(runs, out)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cl-adapters-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="*", default=["multirun"], help="multirun or run directories")
    parser.add_argument("--out", help="where to write the report (default: <first dir>/report)")
    args = parser.parse_args(argv)
    runs, missing = load_runs(args.dirs)
    if not runs:
        sys.exit(f"error: no complete results.json under {args.dirs}" + "".join(f"\n  {m}" for m in missing))
    written = write(runs, missing, Path(args.out or Path(args.dirs[0]) / "report"))
    print(table(runs))
    for m in missing:
        print(f"not included: {m}", file=sys.stderr)
    print(f"report: {', '.join(str(p) for p in written)}", file=sys.stderr)  # stdout: the table alone


if __name__ == "__main__":
    main()
