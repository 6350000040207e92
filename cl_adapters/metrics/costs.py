"""The Avalanche plugin that measures per-task costs while training."""

from __future__ import annotations

import resource
import time

import torch
from avalanche.core import SupervisedPlugin


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class CostPlugin(SupervisedPlugin):
    """One record per training experience in ``tasks``.

    trainable_params: parameters with requires_grad in any epoch (what the optimizer updates; with
    two-stage fusion the adapter's and then the fusion's);
    bytes_per_task: their storage and what the model fitted (class means), i.e. what a per-task checkpoint
    must keep; train_seconds and
    train_samples_per_s over all epochs; peak_rss_bytes of the process so far (and peak CUDA memory).
    """

    def __init__(self):
        super().__init__()
        self.tasks: list[dict] = []

    def restore(self, measured: dict) -> None:
        """Resume: the records of the tasks a checkpoint's results hold (its ``costs``)."""
        self.tasks = list(measured.get("costs", []))

    def before_training_exp(self, strategy, **kwargs):
        self._trainable: dict[int, torch.Tensor] = {}
        self._samples = 0
        self._t0 = time.perf_counter()

    def before_training_epoch(self, strategy, **kwargs):  # after adaptation and every optimizer rebuild
        self._trainable.update((id(p), p) for p in strategy.model.parameters() if p.requires_grad)

    def after_training_iteration(self, strategy, **kwargs):
        self._samples += len(strategy.mb_y)

    def after_training_exp(self, strategy, **kwargs):
        seconds = time.perf_counter() - self._t0
        params = self._trainable.values()
        model = strategy.model
        fitted = model.fitted_state(int(strategy.experience.task_labels[0])) if hasattr(model, "fitted_state") else []
        record = dict(
            experience=strategy.experience.current_experience,
            trainable_params=sum(p.numel() for p in params),
            bytes_per_task=sum(t.numel() * t.element_size() for t in [*params, *fitted]),
            train_seconds=seconds,
            train_samples=self._samples,
            train_samples_per_s=self._samples / seconds if seconds else 0.0,
            peak_rss_bytes=peak_rss_bytes(),
        )
        if torch.cuda.is_available():
            record["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
        self.tasks.append(record)


def cost_summary(costs: list[dict]) -> dict[str, float]:
    """A run's costs in three numbers: trainable parameters and bytes per task (means), train seconds (sum)."""
    return {"trainable_params_per_task": sum(c["trainable_params"] for c in costs) / len(costs),
            "bytes_per_task": sum(c["bytes_per_task"] for c in costs) / len(costs),
            "train_seconds": sum(c["train_seconds"] for c in costs)}
