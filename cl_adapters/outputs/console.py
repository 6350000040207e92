"""The console logger: one line per task while running, a summary table at the end."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cl_adapters.metrics import cost_summary
from cl_adapters.metrics.spec import BY_KEY
from cl_adapters.outputs.logger import Logger


class ConsoleLogger(Logger):
    def __init__(self, console: Console | None = None):
        self.console = console or Console(highlight=False, markup=False)

    def log_task(self, task: int, results: dict) -> None:
        row = results["accuracy_matrix"][task]
        cost = results["costs"][task]
        accs = " ".join("  -  " if a is None else f"{a:.3f}" for a in row)
        self.console.print(
            f"task {task + 1}/{len(row)} acc [{accs}] A_b {results['accuracy_curve'][task]:.3f} "
            f"{cost['train_seconds']:.1f}s {cost['train_samples_per_s']:.0f}/s {cost['trainable_params']:,} params"
        )

    def log_summary(self, results: dict) -> None:
        R = results["accuracy_matrix"]
        T = len(R)
        matrix = Table(title="accuracy matrix R[i, j]: task j after training task i")
        matrix.add_column("after")
        for j in range(T):
            matrix.add_column(f"task {j + 1}", justify="right")
        for i, row in enumerate(R):
            matrix.add_row(f"task {i + 1}", *("-" if a is None else f"{a:.4f}" for a in row))
        metrics = Table(title=f"{results['run']['strategy']} on {results['run']['stream']}")
        metrics.add_column("metric")
        metrics.add_column("value", justify="right")
        metrics.add_column("definition")
        for name, value in results["metrics"].items():
            metrics.add_row(name, BY_KEY[name].format(value), BY_KEY[name].definition)
        costs = results["costs"]
        summary = cost_summary(costs)
        metrics.add_row("trainable params/task", f"{summary['trainable_params_per_task']:,.0f}", "mean over tasks")
        metrics.add_row("bytes stored/task", f"{summary['bytes_per_task']:,.0f}", "params trained (+ means fitted) per task")
        metrics.add_row("train time", f"{summary['train_seconds']:.1f}s", "all tasks")
        metrics.add_row("train samples/s", f"{results['throughput']['train_samples_per_s']:.0f}", "all tasks")
        metrics.add_row("eval samples/s", f"{results['throughput']['eval_samples_per_s']:.0f}", "all evals")
        metrics.add_row("peak RSS", f"{max(c['peak_rss_bytes'] for c in costs) / 2**20:.0f} MiB", "process")
        self.console.print(matrix)
        if curve := results["accuracy_curve"]:  # empty: resumed from a chain recorded before the curve was
            self.console.print("accuracy curve A_b (all tasks seen after task b, sample-weighted): "
                               + " ".join(f"{a:.4f}" for a in curve))
        self.console.print(metrics)
