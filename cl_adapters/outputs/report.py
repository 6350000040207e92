"""Comparison report from run directories: per scenario and stream, one row per strategy (+ fusion,
router, plugins) with the mean and its 95% confidence interval over seeds (Student's t), the rows whose
ACC is within the noise of each other (Welch's t-test), and the budget each used; the references (joint,
single_task) in their own table, single_task only through its diagonal S. Markdown and CSV, plus plots.
Runs of different scenarios or streams are never averaged together (each scenario gets its own table);
unfinished or failed jobs are listed, not dropped silently.

    cl-adapters-report multirun/2026-11-24/06-28-12 [more dirs ...] [--out DIR]

Writes ``report.md``, ``report.csv``, ``accuracy_matrices.png`` (mean R per row), ``task_accuracy.png``
(accuracy on each task as the stream goes on), ``accuracy_curve.png`` (mean A_b per row, where runs
recorded it) and ``acc_vs_params.png`` to ``--out`` (default: the first directory's ``report/``), and
prints the table (to stdout; everything else to stderr).
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
from cl_adapters.errors import UserError
from cl_adapters.outputs.plots import report_figures
from cl_adapters.outputs.record import read_results
from cl_adapters.outputs.results import flatten, run_name, strategy_name, without_nulls
from cl_adapters.outputs.wandb import publish_report
from cl_adapters.metrics.costs import cost_summary
from cl_adapters.metrics.spec import DEFINITIONS, METRICS
from cl_adapters.metrics.seeds import NOISE, mean_ci, within_noise
from cl_adapters.strategies.continual import REFERENCES
from cl_adapters.streams.base import SCENARIOS

# config that does not change what a run measures, nor does any *.seed or *.device (top-level adapter
# and fusion: the ones a run uses are under strategy.model)
UNMEASURED = {"logger", "adapter", "fusion", "checkpoint", "resume", "references.dir", "references.compute"}
CHOICE_GROUPS = {  # config groups a row label may name -> where their settings are in the resolved config
    "model": ("model.",),
    "adapter": ("strategy.model.adapter.",),
}
COLUMNS = {m.column: m.key for m in METRICS}  # header -> metric key
OPTIONAL = {m.key for m in METRICS if m.optional}  # shown only when some run has them
REFERENCE_GIVES = {"joint": "J: task j after joint training on tasks 0..j",
                   "single_task": "S: task j after training on it alone"}
SCENARIO_TITLES = {
    "task_il": "task-incremental: the task label is given at test",
    "class_il": "class-incremental: no task label at test, labels over all classes of the stream",
    "domain_il": "domain-incremental: no task label at test, one label space for every task",
}


def load_runs(dirs: list[str | Path]) -> tuple[list[dict], list[str]]:
    """(complete results, what is left out): every results.json under ``dirs`` (references trained inside
    a run are skipped). A run that did not complete, a Hydra job folder without results, and the older of
    two runs of the same setup and seed are listed instead."""
    found, missing = {}, []
    for d in dirs:
        for job in sorted({p.parent for name in (".hydra", "results.json", "error.txt") for p in Path(d).rglob(name)}):
            if job.parent.name == "references" and (job.parent.parent / "results.json").exists():
                continue  # a reference trained inside a run (references.compute=true)
            path, error = job / "results.json", job / "error.txt"
            why = f": {error.read_text().strip()}" if error.exists() else ""
            if not path.exists():
                missing.append(f"{job}: no results.json (failed before its first task{why or ' or still starting'})")
                continue
            try:
                results = read_results(path)
            except ValueError as e:
                missing.append(f"{path}: {e}")
                continue
            results["dir"] = str(job)
            if results["run"]["status"] != "complete":
                matrix = results.get("accuracy_matrix")
                rows_done = [row for row in matrix if isinstance(row, list) and row] if isinstance(matrix, list) else []
                done = sum(row[0] is not None for row in rows_done)
                missing.append(f"{job}: {results['run']['status']} after {done} task(s){why}")
                continue
            if late := [p for p, path in (results.get("references_missing") or {}).items() if Path(path).exists()]:
                missing.append(f"{job}: incomplete, ran before its {' and '.join(late)} reference was cached (a sweep "
                               "running it beside its references); run it again for transfer/intransigence")
                continue
            key = (results["run"]["stream"], run_name(results), fingerprint(results), results["config"]["seed"])
            older, newer = sorted([results, found.get(key, results)], key=lambda r: r["run"].get("started", ""))
            if older is not newer:
                missing.append(f"{older['dir']}: the same setup and seed as {newer['dir']}, which is newer and used")
            found[key] = newer
    return list(found.values()), missing


def setup(results: dict) -> dict[str, str]:
    """What must match for runs to be averaged: the resolved config as flat ``a.b.c -> value`` leaves,
    without seeds, device, loggers and the reference cache's location, plus the metric definitions; a null
    leaf is the same as none (``without_nulls``: runs from before a null-default option was added), and a
    metric defined since a run was recorded is one it has no value for (its definition is taken as today's)."""
    definitions = results.get("metric_definitions")
    if isinstance(definitions, dict):
        definitions = {**DEFINITIONS, **definitions}
    flat = flatten(without_nulls({**results["config"], "metric_definitions": definitions}))
    return {k: json.dumps(v) for k, v in flat.items() if k.rsplit(".", 1)[-1] not in ("seed", "device")
            and k not in UNMEASURED and k.split(".")[0] not in UNMEASURED}


def fingerprint(results: dict) -> str:
    return json.dumps(setup(results), sort_keys=True)


def scenario(results: dict) -> str:
    return results.get("scenario", "task_il")


def grouped(runs: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """(scenario, stream, row label) -> its runs sorted by seed, scenarios in SCENARIOS order. Runs are
    averaged only when their setups match; labels: see ``_labels`` (e.g. ``adapter · mlp
    (strategy.optimizer.lr=0.01)``)."""
    groups = defaultdict(list)
    for results in runs:
        groups[(scenario(results), results["run"]["stream"], strategy_name(results), fingerprint(results))].append(results)
    names = defaultdict(list)
    for where, stream, name, key in groups:
        names[(where, stream, name)].append(key)
    shown_groups = {}  # per stream: the config groups whose choice differs between its runs (e.g. the model)
    for where, stream in {(w, s) for w, s, _ in names}:
        choices = [_choices(r) for r in runs if r["run"]["stream"] == stream and scenario(r) == where]
        shown_groups[where, stream] = [g for g in CHOICE_GROUPS if len({c[g] for c in choices if c[g] != "None"}) > 1]
    out = {}
    for (where, stream, name), keys in names.items():
        example = {key: groups[(where, stream, name, key)][0] for key in keys}
        for key, label in zip(keys, _labels(name, keys, example, shown_groups[where, stream])):
            out[(where, stream, label)] = sorted(groups[(where, stream, name, key)], key=lambda r: r["config"]["seed"])
    return dict(sorted(out.items(), key=lambda item: (SCENARIOS.index(item[0][0]), item[0][1:])))


def _choices(results: dict) -> dict[str, str]:
    return {g: str(results["run"].get(g)) for g in CHOICE_GROUPS}


def _labels(name: str, keys: list[str], example: dict[str, dict], shown_groups: list[str]) -> list[str]:
    """Row labels: the run name, the config-group choices that differ in the stream (``adapter ·
    patch_transformer``), then the settings that still tell apart setups of the same name and choices
    (at most three, outside those groups)."""
    choices = {key: _choices(example[key]) for key in keys}
    hidden = tuple(p for g in shown_groups for p in CHOICE_GROUPS[g])
    setups = {key: json.loads(key) for key in keys}
    labels = []
    for key in keys:
        same = [k for k in keys if all(choices[k][g] == choices[key][g] for g in shown_groups)]
        differ = sorted({leaf for k in same for leaf in setups[k] if not leaf.startswith(hidden)
                         and len({setups[j].get(leaf) for j in same}) > 1})
        shown = ", ".join(f"{leaf}={json.loads(setups[key].get(leaf, 'null'))}" for leaf in differ[:3])
        label = " · ".join([name, *(choices[key][g] for g in shown_groups if choices[key][g] != "None")])
        labels.append(f"{label} ({shown}{', ...' if len(differ) > 3 else ''})" if shown else label)
    return labels


def is_reference(results: dict) -> bool:
    return results["run"]["strategy"] in REFERENCES


def rows(runs: list[dict]) -> list[dict]:
    """One flat record per (scenario, stream, run name): the CSV rows, and what the tables show. Keys with a
    leading underscore (the seeds' values) are for the tables only."""
    out = []
    for (where, stream, name), group in grouped(runs).items():
        row = {"scenario": where, "stream": stream, "run": name, "seeds": " ".join(str(r["config"]["seed"]) for r in group),
               "reference": group[0]["run"]["strategy"] if is_reference(group[0]) else ""}
        for key in COLUMNS.values():
            values = [r["metrics"].get(key) for r in group]
            row[key], row[f"{key}_ci95"] = mean_ci(values)
            row[f"{key}_std"] = statistics.stdev(values) if None not in values and len(values) > 1 else None
            row[f"_{key}_na"] = all(key in (r.get("not_applicable") or {}) for r in group)
        row["_acc"] = [r["metrics"]["acc"] for r in group]
        row["_no_reference"] = sorted({p for r in group for p in r.get("references_missing") or {}})
        diagonals = [np.diag(np.array(r["accuracy_matrix"], dtype=float)) for r in group]
        row["_diagonal"] = [mean_ci([float(d[j]) for d in diagonals]) for j in range(len(diagonals[0]))]
        row["diagonal"], row["diagonal_ci95"] = mean_ci([float(d.mean()) for d in diagonals])
        costs = group[0]["costs"]
        row["trainable_params_first"], row["trainable_params_last"] = costs[0]["trainable_params"], costs[-1]["trainable_params"]
        summaries = [cost_summary(r["costs"]) for r in group]
        row.update({key: statistics.mean(s[key] for s in summaries) for key in summaries[0]})
        out.append(row)
    return out


def mean_ci_cell(mean: float | None, ci: float | None, not_applicable: bool = False) -> str:
    """``mean ± ci`` to 4 decimals (no "-0.0000"), "-" without a value, "n/a" where it does not apply."""
    if not_applicable:
        return "n/a"
    if mean is None:
        return "-"
    mean = round(mean, 4) + 0.0  # no "-0.0000"
    return f"{mean:.4f}" if ci is None else f"{mean:.4f} ± {ci:.4f}"


def _budget(row: dict) -> str:
    if not row["optimizer_steps"]:  # recorded before budgets were
        return "-"
    return f"{row['optimizer_steps']:,.0f} / {row['train_samples']:,.0f} / {row['train_flops'] / 1e12:.3g}"


def table(runs: list[dict]) -> str:
    """Per scenario (under a line naming it), the strategies' table, then the references' table."""
    records = rows(runs)
    parts = []
    for where in dict.fromkeys(r["scenario"] for r in records):
        mine = [r for r in records if r["scenario"] == where]
        strategies, references = [r for r in mine if not r["reference"]], [r for r in mine if r["reference"]]
        parts.append(f"**{where}** ({SCENARIO_TITLES[where]})")
        if strategies:
            parts.append(_table(strategies))
        if references:
            parts.append("References (not continual learners: what transfer vs single and intransigence compare "
                         "against; single_task only through its diagonal S)\n\n" + _reference_table(references))
    return "\n\n".join(parts)


def _table(records: list[dict]) -> str:
    columns = {h: k for h, k in COLUMNS.items() if k not in OPTIONAL or any(r[k] is not None for r in records)}
    header = ["#", "stream", "run", "seeds", "ACC", "ACC within noise of", *list(columns)[1:],
              "trainable params (task 1 / last)", "bytes/task", "steps / samples / TFLOP", "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for i, row in enumerate(records, 1):
        ties = [str(j) for j, other in enumerate(records, 1) if other is not row and other["stream"] == row["stream"]
                and within_noise(row["_acc"], other["_acc"])]
        cells = [str(i), row["stream"], row["run"], row["seeds"].replace(" ", ","),
                 *(mean_ci_cell(row[key], row[f"{key}_ci95"], row[f"_{key}_na"]) for key in columns.values())]
        cells.insert(5, ", ".join(ties) or "-")
        cells += [f"{row['trainable_params_first']:,} / {row['trainable_params_last']:,}",
                  f"{row['bytes_per_task']:,.0f}", _budget(row), f"{row['train_seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    unreferenced = [str(i) for i, row in enumerate(records, 1) if row["_no_reference"]]
    if unreferenced:
        lines.append(f"\nRows {', '.join(unreferenced)}: no single_task/joint reference was cached for their stream, "
                     "model, budget and seed, so no transfer vs single / intransigence (train the references with the "
                     "same settings first, or references.compute=true).")
    return "\n".join(lines)


def _reference_table(records: list[dict]) -> str:
    header = ["stream", "reference", "seeds", "gives", "mean over tasks", "per task", "ACC (final model)",
              "steps / samples / TFLOP", "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in records:
        joint = row["reference"] == "joint"
        cells = [row["stream"], row["run"], row["seeds"].replace(" ", ","), REFERENCE_GIVES[row["reference"]],
                 mean_ci_cell(row["diagonal"], row["diagonal_ci95"]), " ".join(f"{m:.4f}" for m, _ in row["_diagonal"]),
                 mean_ci_cell(row["acc"], row["acc_ci95"]) if joint else "n/a (its heads are reset at every task)",
                 _budget(row), f"{row['train_seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: list[dict], out: Path) -> list[Path]:
    """The report figures (see the module docstring); single_task is left out (its S is in the table)."""
    groups = {key: group for key, group in grouped(runs).items() if group[0]["run"]["strategy"] != "single_task"}
    mean_R = {key: np.mean([np.array(r["accuracy_matrix"], dtype=float) for r in group], axis=0)
              for key, group in groups.items()}
    curves = {key: np.mean([r["accuracy_curve"] for r in group], axis=0)
              for key, group in groups.items() if all(r.get("accuracy_curve") for r in group)}
    return report_figures(mean_R, [r for r in rows(runs) if not r["reference"]], out, curves)


def provenance(runs: list[dict]) -> str:
    """Where the numbers come from: the versions and machines of the runs (distinct values joined by /)."""
    def distinct(values) -> str:
        return " / ".join(sorted({str(v) for v in values}))

    versions = ", ".join(f"{p} {distinct(r.get('versions', {}).get(p) for r in runs)}" for p in runs[0].get("versions", {}))
    machines = distinct(f"{m['platform']}, {m['cpus']} CPUs{', ' + m['cpu_capability'] if m.get('cpu_capability') else ''}, "
                        f"{m['torch_threads']} torch thread(s), {m['device']}" for m in (r.get("machine") for r in runs) if m)
    return (f"{len(runs)} runs; mean ± 95% confidence interval over seeds (Student's t); \"ACC within noise of\": the "
            f"rows whose ACC Welch's t-test cannot tell apart (p >= {NOISE}); FWT (GEM) n/a with a fresh head per task; "
            "steps / samples / TFLOP and train s: all tasks.  \n"
            f"Versions: {versions}.  \nMachine: {machines or '?'}.")


def write(runs: list[dict], missing: list[str], out: Path, title: str | None = None) -> list[Path]:
    text = (f"# {title}\n\n" if title else "") + provenance(runs) + "\n\n" + table(runs)
    if missing:
        text += "\n\nNot included:\n" + "\n".join(f"- {m}" for m in missing)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(text + "\n")
    records = rows(runs)
    with atomic_path(out / "report.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in records[0] if not k.startswith("_")], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    return [out / "report.md", out / "report.csv", *plot(runs, out)]


def emit(runs: list[dict], missing: list[str], out: Path, title: str | None = None) -> list[Path]:
    """Write the report to ``out``; print the table (stdout, alone) and what is left out (stderr)."""
    written = write(runs, missing, out, title)
    print(table(runs))
    for m in missing:
        print(f"not included: {m}", file=sys.stderr)
    print(f"report: {', '.join(str(p) for p in written)}", file=sys.stderr)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cl-adapters-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="*", default=["multirun"], help="multirun or run directories")
    parser.add_argument("--out", help="where to write the report (default: <first dir>/report)")
    parser.add_argument("--title", help="a heading for report.md (and the W&B Report)")
    parser.add_argument("--wandb", action="store_true", help="also save a W&B Report of these runs (online W&B only)")
    args = parser.parse_args(argv)
    runs, missing = load_runs(args.dirs)
    if not runs:
        sys.exit(f"error: no complete results.json under {args.dirs}" + "".join(f"\n  {m}" for m in missing))
    try:
        emit(runs, missing, Path(args.out or Path(args.dirs[0]) / "report"), args.title)
    except UserError as e:  # --out unwritable, disk full
        sys.exit(f"error: {e}")
    if args.wandb:
        try:
            urls = publish_report(runs, args.title or f"cl-adapters: {', '.join(args.dirs)}",
                                  provenance(runs) + "\n\n" + table(runs))
        except RuntimeError as e:
            sys.exit(f"error: --wandb: {e}")
        print(f"W&B report: {' '.join(urls)}", file=sys.stderr)


if __name__ == "__main__":
    main()
