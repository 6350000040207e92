"""The Avalanche plugin that measures per-task costs while training."""

from __future__ import annotations

import resource
import time

import torch
from avalanche.core import SupervisedPlugin
from torch.utils.flop_counter import FlopCounterMode


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class CostPlugin(SupervisedPlugin):
    """One record per training experience in ``tasks``.

    trainable_params: parameters with requires_grad in any epoch (what the optimizer updates; with
    two-stage fusion the adapter's and then the fusion's);
    bytes_per_task: their storage and what the model fitted (class means), i.e. what a per-task checkpoint
    must keep; the budget: optimizer_steps, train_samples (replay's memory samples included) and
    train_flops (forward + backward FLOPs that torch counts for one real minibatch, per sample, once per
    set of trainable parameters, times the samples: an estimate that omits the optimizer and penalties);
    train_seconds and train_samples_per_s over all epochs (the FLOP count's pass excluded);
    peak_rss_bytes of the process so far (and peak CUDA memory).
    """

    def __init__(self):
        super().__init__()
        self.tasks: list[dict] = []

    def restore(self, measured: dict) -> None:
        """Resume: the records of the tasks a checkpoint's results hold (its ``costs``)."""
        self.tasks = list(measured.get("costs", []))

    def before_training_exp(self, strategy, **kwargs):
        self._trainable: dict[int, torch.Tensor] = {}
        self._samples = self._steps = 0
        self._flops = 0.0
        self._counted_for: frozenset = frozenset()
        self._t0 = time.perf_counter()

    def before_training_epoch(self, strategy, **kwargs):  # after adaptation and every optimizer rebuild
        trainable = {id(p): p for p in strategy.model.parameters() if p.requires_grad}
        self._trainable.update(trainable)
        self._count_flops = frozenset(trainable) != self._counted_for  # a new task or stage
        self._counted_for = frozenset(trainable)

    def before_training_iteration(self, strategy, **kwargs):
        if self._count_flops:  # once per task and stage, on its first minibatch (not per step)
            t0 = time.perf_counter()
            self._flops_per_sample = training_flops(strategy) / len(strategy.mb_y)
            self._count_flops = False
            self._t0 += time.perf_counter() - t0

    def after_training_iteration(self, strategy, **kwargs):
        self._samples += len(strategy.mb_y)
        self._steps += 1
        self._flops += self._flops_per_sample * len(strategy.mb_y)

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
            optimizer_steps=self._steps,
            train_samples=self._samples,
            train_flops=self._flops,
            train_samples_per_s=self._samples / seconds if seconds else 0.0,
            peak_rss_bytes=peak_rss_bytes(),
        )
        if torch.cuda.is_available():
            record["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
        self.tasks.append(record)


def training_flops(strategy) -> int:
    """Forward + backward FLOPs of the current minibatch as torch counts them (matmuls, convolutions),
    without changing the run: the RNG is forked, buffers (batch-norm statistics) and gradients restored."""
    model = strategy.model
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    with torch.random.fork_rng(devices=[strategy.device] if strategy.device.type == "cuda" else []), \
            FlopCounterMode(display=False) as counter:
        loss = torch.nn.functional.cross_entropy(model(strategy.mb_x, strategy.mb_task_id), strategy.mb_y)
        if loss.requires_grad:
            loss.backward()
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def cost_summary(costs: list[dict]) -> dict[str, float]:
    """A run's costs: trainable parameters and bytes per task (means); train seconds, optimizer steps,
    samples and FLOPs (sums; 0 for runs recorded before they were counted)."""
    out = {"trainable_params_per_task": sum(c["trainable_params"] for c in costs) / len(costs),
           "bytes_per_task": sum(c["bytes_per_task"] for c in costs) / len(costs)}
    for key in ("train_seconds", "optimizer_steps", "train_samples", "train_flops"):
        out[key] = sum(c.get(key, 0) for c in costs)
    return out
