"""Weights & Biases: one W&B run per Hydra job, offline by default (no account or network; ``wandb sync``
later), on the current wandb API. W&B is a mirror of results.json: if it cannot start or fails mid-run,
the run goes on with its local outputs after one warning. ``report`` builds a W&B Report of a sweep's runs
(``cl-adapters-report --wandb``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cl_adapters.outputs.logger import Logger
from cl_adapters.outputs.plots import accuracy_matrix_figure
from cl_adapters.outputs.results import run_name
from cl_adapters.metrics.costs import cost_summary


class WandbLogger(Logger):
    """``group`` defaults to the Hydra sweep directory (one group per multirun), ``job_type`` to the
    strategy, ``dir`` to the job's output directory. Per task (step = task index): the metrics so far,
    the accuracies of the accuracy matrix's row, the accuracy curve's A_b (``accuracy_curve``) and the
    task's costs; at the end: the accuracy matrix as a table and a heatmap, the curve as a table, and the
    final metrics (Ā and A_B among them) and costs in the run summary."""

    def __init__(self, project: str = "cl-adapters", entity: str | None = None, mode: str = "offline",
                 group: str | None = None, job_type: str | None = None, name: str | None = None,
                 dir: str | None = None, tags: list[str] | None = None, verbose: bool = False):
        self.settings = dict(project=project, entity=entity, mode=mode, group=group, job_type=job_type, name=name,
                             dir=dir, tags=list(tags) if tags else None)
        self.verbose = verbose  # W&B's own banner and summary on the console
        self.run = None
        self.failed = False

    def _guard(self, what: str, fn) -> None:
        if self.failed:
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - W&B must never take the run down with it
            self.failed = True
            print(f"warning: W&B {what} failed ({type(e).__name__}: {e}); W&B logging is off for this run, "
                  "results.json and the console have everything", file=sys.stderr)

    def _start(self, results: dict) -> None:
        import wandb
        from hydra.core.hydra_config import HydraConfig

        s = dict(self.settings)
        if HydraConfig.initialized():
            hydra = HydraConfig.get()
            s["dir"] = s["dir"] or hydra.runtime.output_dir
            if s["group"] is None and hydra.mode.name == "MULTIRUN":
                s["group"] = hydra.sweep.dir
        s["job_type"] = s["job_type"] or results["run"]["strategy"]
        s["name"] = s["name"] or f"{run_name(results)}-seed{results['config']['seed']}"
        run = {k: results["run"][k] for k in ("stream", "model", "strategy", "adapter", "fusion", "plugins")}
        config = {**results["config"], "run": run, "run_name": run_name(results)}  # run_name: what reports group by
        self.run = wandb.init(**s, config=config, reinit="create_new", settings=wandb.Settings(silent=not self.verbose))

    def _ensure_started(self, results: dict) -> None:
        """The W&B run starts with the first thing to log (the config is in ``results`` by then)."""
        if self.run is None and "config" in results:
            self._guard("start", lambda: self._start(results))

    def log_task(self, task: int, results: dict) -> None:
        self._ensure_started(results)

        def log():
            row, routed = results["accuracy_matrix"][task], results.get("task_id_matrix")
            data = {**results["metrics"], "accuracy_curve": results["accuracy_curve"][task],
                    **{f"accuracy/task_{j}": a for j, a in enumerate(row[: task + 1])},
                    **{f"cost/{k}": v for k, v in results["costs"][task].items() if k != "experience"},
                    **({f"task_id/task_{j}": q for j, q in enumerate(routed[task][: task + 1])} if routed else {})}
            self.run.log(data, step=task)

        if self.run is not None:
            self._guard("logging", log)

    def log_summary(self, results: dict) -> None:
        def finish():
            import wandb

            R = results["accuracy_matrix"]
            columns = ["after task", *(f"task {j}" for j in range(len(R)))]
            figure = accuracy_matrix_figure(R, title=self.run.name)
            curve = [[b, a] for b, a in enumerate(results["accuracy_curve"])]
            self.run.log({"accuracy_matrix": wandb.Table(columns=columns, data=[[i, *row] for i, row in enumerate(R)]),
                          "accuracy_matrix_heatmap": wandb.Image(figure),
                          "accuracy_curve_table": wandb.Table(columns=["after task", "A_b"], data=curve)})
            if confusion := results.get("task_id_confusion"):  # true task (rows) x routed task
                self.run.log({"task_id_confusion": wandb.Table(
                    columns=["true task", *(f"routed to {j}" for j in range(len(confusion)))],
                    data=[[i, *row] for i, row in enumerate(confusion)])})
            self.run.summary.update({**results["metrics"], **results["throughput"], **cost_summary(results["costs"])})
            where = Path(self.run.dir).parent
            self.run.finish()
            if self.settings["mode"] == "offline":
                print(f"W&B run saved offline; to upload: wandb sync {where}")

        if self.run is not None:
            self._guard("summary", finish)

    def log_failure(self, results: dict) -> None:
        """A run that stopped on an error: what it logged stays, the W&B run (started now if the run
        failed before its first task) is marked failed with the error in its summary."""
        self._ensure_started(results)

        def finish():
            self.run.summary.update({"status": results["run"]["status"], "error": results["run"].get("error")})
            self.run.finish(exit_code=1)

        if self.run is not None:
            self._guard("finish", finish)


def run_ids(runs: list[dict]) -> dict[tuple[str | None, str], list[str]]:
    """(entity, project) -> the W&B run ids of the runs (read from the ``wandb/`` folders of their jobs)."""
    found = {}
    for results in runs:
        settings = results["config"].get("logger", {}).get("wandb")
        if settings:
            folder = Path(settings.get("dir") or results["dir"]) / "wandb"
            ids = sorted(p.name.rsplit("-", 1)[1] for p in folder.glob("*run-*-*") if p.is_dir())
            found.setdefault((settings.get("entity"), settings["project"]), []).extend(ids)
    return found


def report(entity: str, project: str, ids: list[str], title: str, table: str):
    """A W&B Report comparing the runs ``ids``: the local table, then bar charts of ACC, BWT and forgetting,
    ACC against trainable parameters, ACC and the accuracy curve A_b as the stream goes on, all grouped by
    run name (mean ± std over seeds)."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    runset = wr.Runset(entity=entity, project=project, name="runs", filters=[expr.Metric("ID").isin(ids)],
                       groupby=["config.run_name"])
    grouped = dict(groupby_aggfunc="mean", groupby_rangefunc="stddev")
    panels = [wr.BarPlot(title=name, metrics=[key], **grouped)
              for name, key in (("ACC", "acc"), ("BWT", "bwt"), ("forgetting", "forgetting"))]
    panels += [wr.ScatterPlot(title="ACC vs trainable parameters per task", x=wr.SummaryMetric("trainable_params_per_task"),
                              y=wr.SummaryMetric("acc"), log_x=True),
               wr.LinePlot(title="ACC as the stream goes on", x="Step", y=["acc"], **grouped),
               wr.LinePlot(title="A_b: accuracy on all tasks seen so far", x="Step", y=["accuracy_curve"], **grouped)]
    return wr.Report(entity=entity, project=project, title=title, description=f"{len(ids)} cl-adapters runs",
                     blocks=[wr.MarkdownBlock(text=table), wr.PanelGrid(runsets=[runset], panels=panels)])


def publish_report(runs: list[dict], title: str, table: str) -> list[str]:
    """Save a W&B Report per (entity, project) of ``runs``; returns the URLs. Refuses, before saving anything,
    when W&B is offline or not logged in, or when some runs were never uploaded (``wandb sync``)."""
    found = run_ids(runs)
    if not found:
        raise RuntimeError("none of these runs logged to W&B (run them with logger=wandb)")
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        raise RuntimeError(f"W&B is offline (WANDB_MODE={os.environ['WANDB_MODE']}): no W&B Report made. Upload the runs "
                           "with `wandb sync <job dir>/wandb/offline-run-*`, then rerun with WANDB_MODE=online")
    import wandb

    def reach(call):
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - not logged in, no network, server errors
            raise RuntimeError(f"W&B is not reachable ({type(e).__name__}: {e}); no W&B Report made") from e

    api = reach(wandb.Api)
    plans = []
    for (entity, project), ids in found.items():
        entity = entity or api.default_entity
        online = reach(lambda: {r.id for r in api.runs(f"{entity}/{project}", filters={"name": {"$in": ids}})})
        if set(ids) - online:
            raise RuntimeError(f"{len(set(ids) - online)} of {len(ids)} runs are not on W&B in {entity}/{project} "
                               "(offline runs: `wandb sync <job dir>/wandb/offline-run-*` first); no W&B Report made")
        plans.append(report(entity, project, ids, title, table))
    return [reach(plan.save).url for plan in plans]
