"""What a run measures, and when: the untrained model, the probe before each task, and after each task R
(the eval stream), R_til (the same model given task labels, class- and domain-IL), the router's task-ID
matrix Q, and the metrics summarised from them. The run trains; this object owns the matrices, so the run
reads as build -> for each task (train, measure, record) -> summary.

The order of the evaluations is part of the results: each draws from the global RNG (a DataLoader's base
seed), so the same seed gives the same accuracy matrix only if they run as they always have (``evaluate``
keeps the draws of the tasks it skips; the task-label pass forks the RNG).
"""

from __future__ import annotations

import numpy as np
import torch

from cl_adapters.metrics import LinearProbe, accuracy_curve, summarize
from cl_adapters.outputs import plot_task_id_confusion
from cl_adapters.outputs.results import json_safe


class Evaluator:
    """R, R_til, Q and the probe of one run over ``T`` tasks, filled after each task (``after_task``)."""

    def __init__(self, cfg, strategy, accuracy, train_stream, eval_stream, references: dict, reference_run: bool):
        self.strategy, self.model, self.accuracy, self.eval_stream = strategy, strategy.model, accuracy, eval_stream
        self.T = T = len(train_stream)
        self.S, self.J = (references[p]["diagonal"] if p in references else None for p in ("single_task", "joint"))
        self.without_labels = cfg.scenario != "task_il"
        self.gem = not self.model.head_per_task  # GEM's FWT reads a head before its task trains: a shared head's
        self.needs_unseen = unseen_tasks_needed(cfg, self.model)
        self.R, self.R_til, self.Q = (np.full((T, T), np.nan) for _ in range(3))
        # The untrained model (GEM's FWT baseline, chance level with fresh heads). Always measured: its eval
        # creates every task's head now, and so fixes the order in which heads draw their initial weights.
        self.b = self.evaluate()
        self.sizes = [accuracy.samples[j] for j in range(T)]  # each task's eval samples: its weight in A_b
        self.probe = None
        if cfg.probe_samples and not reference_run and T > 1:
            self.probe = LinearProbe(train_stream, eval_stream, cfg.probe_samples, cfg.seed, cfg.strategy.eval_batch_size,
                                     strategy.device, strategy.num_workers)
            self.probe.initial[1:] = [self.probe.measure(self.model, j) for j in range(1, T)]
        self.probe_samples = cfg.probe_samples

    def first_results(self) -> dict:
        """The entries results.json holds before any task has trained."""
        results = {"accuracy_matrix": json_safe(self.R.tolist()), "untrained_accuracy": self.b,
                   "eval_samples_per_task": self.sizes, "accuracy_curve": [], "costs": [], "metrics": {}}
        if not self.gem:
            results["not_applicable"] = {"fwt": "a fresh head per task: R[j-1, j] would read task j through its "
                                                "untrained head (tasks not trained yet are not evaluated)"}
        if self.probe is not None and len(self.probe.skipped) == self.T - 1:
            results.setdefault("not_applicable", {})["fwt_probe"] = (
                "no task after the first has two classes to fit a linear probe on (probe.skipped)")
        return results

    def restore(self, measured: dict, done: int) -> None:
        """A checkpoint's first ``done`` rows of every matrix, and the probe's measurements before them."""
        self.R[:done] = np.array(measured["accuracy_matrix"][:done], dtype=float)
        self.sizes = measured["eval_samples_per_task"]
        if self.probe is not None:
            self.probe.before[:done] = measured["probe"]["before_task"][:done]
        for key, matrix in (("accuracy_matrix_til", self.R_til), ("task_id_matrix", self.Q)):
            if measured.get(key):
                matrix[:done] = np.array(measured[key][:done], dtype=float)

    def evaluate(self, seen: int | None = None) -> list[float | None]:
        """Accuracy on the first ``seen`` tasks (None for the rest). The unseen tasks' evaluations are skipped
        but their one RNG draw each (a DataLoader's base seed) is taken, so training draws what it drew when
        every task was evaluated: same seed, same accuracy matrix."""
        seen = self.T if seen is None else seen
        self.model.task_id_counts.clear()
        self.strategy.eval(self.eval_stream if seen == self.T else self.eval_stream[:seen])
        for _ in range(self.T - seen):
            torch.empty((), dtype=torch.int64).random_()
        return [self.accuracy.last[j] if j < seen else None for j in range(self.T)]

    def with_task_labels(self) -> list[float]:
        """Every task's accuracy given its task label (RNG untouched: the run trains as it would without it)."""
        with self.model.given_task_labels(), torch.random.fork_rng():
            self.strategy.eval(self.eval_stream)
        return [self.accuracy.last[j] for j in range(self.T)]

    def before_task(self, i: int) -> None:
        if self.probe is not None and i > 0:
            self.probe.before[i] = self.probe.measure(self.model, i)

    def after_task(self, i: int, figure) -> dict:
        """Measure after task ``i`` trained; the results.json entries it changed. ``figure``: where the
        task-ID confusion is plotted after the last task."""
        self.R[i] = self.evaluate(self.T if self.needs_unseen else i + 1)
        n, T = i + 1, self.T
        results = {"accuracy_curve": accuracy_curve(self.R[:n, :n], self.sizes[:n])}
        routed = self.without_labels and self.model.router is not None
        if routed:
            confusion = [[self.model.task_id_counts[(j, k)] for k in range(T)] for j in range(T)]
            self.Q[i] = [confusion[j][j] / max(sum(confusion[j]), 1) for j in range(T)]
            results.update(task_id_matrix=json_safe(self.Q.tolist()), task_id_confusion=confusion)
            if i == T - 1:  # plotted once: a figure per task would cost more with every task
                plot_task_id_confusion(confusion, figure)
        if self.without_labels:
            self.R_til[i] = self.with_task_labels()
            results["accuracy_matrix_til"] = json_safe(self.R_til.tolist())
        probe = self.probe
        results["metrics"] = summarize(
            self.R[:n, :n], sizes=self.sizes[:n], b=self.b[:n] if self.gem else None, S=_first(self.S, n),
            J=_first(self.J, n), P=probe.before if probe else None, P0=probe.initial if probe else None,
            R_til=self.R_til[:n, :n] if self.without_labels else None, Q=self.Q[:n, :n] if routed else None)
        results["accuracy_matrix"] = json_safe(self.R.tolist())
        if probe is not None:
            results["probe"] = {"samples": self.probe_samples, "initial": probe.initial, "before_task": probe.before,
                                "skipped": probe.skipped}
        return results


def unseen_tasks_needed(cfg, model) -> bool:
    """Whether a metric reads tasks not trained yet: GEM's FWT reads R[j-1, j] where a shared head exists
    before its task, and a router's task-ID confusion counts every task."""
    return not model.head_per_task or cfg.scenario != "task_il"


def _first(v: list | None, n: int) -> list | None:
    return None if v is None else v[:n]
