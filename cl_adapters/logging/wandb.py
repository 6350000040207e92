"""Weights & Biases: one W&B run per Hydra job, offline by default (no account or network; ``wandb sync``
later), on the current wandb API. W&B is a mirror of results.json: if it cannot start or fails mid-run,
the run goes on with its local outputs after one warning."""

from __future__ import annotations

import sys

from cl_adapters.logging.plots import accuracy_matrix_figure


class WandbLogger:
    """``group`` defaults to the Hydra sweep directory (one group per multirun), ``job_type`` to the
    strategy, ``dir`` to the job's output directory. Per task (step = task index): the metrics so far,
    the accuracies of the accuracy matrix's row and the task's costs; at the end: the accuracy matrix
    as a table and a heatmap, and the final metrics and costs in the run summary."""

    def __init__(self, project: str = "cl-adapters", entity: str | None = None, mode: str = "offline",
                 group: str | None = None, job_type: str | None = None, name: str | None = None,
                 dir: str | None = None, tags: list[str] | None = None):
        self.settings = dict(project=project, entity=entity, mode=mode, group=group, job_type=job_type, name=name,
                             dir=dir, tags=list(tags) if tags else None)
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

        from cl_adapters.report import run_name

        s = dict(self.settings)
        if HydraConfig.initialized():
            hydra = HydraConfig.get()
            s["dir"] = s["dir"] or hydra.runtime.output_dir
            if s["group"] is None and hydra.mode.name == "MULTIRUN":
                s["group"] = hydra.sweep.dir
        s["job_type"] = s["job_type"] or results["run"]["strategy"]
        s["name"] = s["name"] or f"{run_name(results)}-seed{results['config']['seed']}"
        self.run = wandb.init(**s, config=results["config"], reinit="create_new")

    def log_task(self, task: int, results: dict) -> None:
        if self.run is None:
            self._guard("start", lambda: self._start(results))

        def log():
            row = results["accuracy_matrix"][task]
            data = {**results["metrics"], **{f"accuracy/task_{j}": a for j, a in enumerate(row[: task + 1])},
                    **{f"cost/{k}": v for k, v in results["costs"][task].items() if k != "experience"}}
            self.run.log(data, step=task)

        if self.run is not None:
            self._guard("logging", log)

    def log_summary(self, results: dict) -> None:
        def finish():
            import wandb

            R = results["accuracy_matrix"]
            columns = ["after task", *(f"task {j}" for j in range(len(R)))]
            figure = accuracy_matrix_figure(R, title=self.run.name)
            self.run.log({"accuracy_matrix": wandb.Table(columns=columns, data=[[i, *row] for i, row in enumerate(R)]),
                          "accuracy_matrix_heatmap": wandb.Image(figure)})
            costs = results["costs"]
            self.run.summary.update({**results["metrics"], **results["throughput"],
                                     "trainable_params_per_task": sum(c["trainable_params"] for c in costs) / len(costs),
                                     "bytes_per_task": sum(c["bytes_per_task"] for c in costs) / len(costs),
                                     "train_seconds": sum(c["train_seconds"] for c in costs)})
            self.run.finish()

        if self.run is not None:
            self._guard("summary", finish)
