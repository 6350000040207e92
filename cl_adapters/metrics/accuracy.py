"""The Avalanche plugin that measures per-experience accuracy during ``strategy.eval``."""

from __future__ import annotations

import time

import torch
from avalanche.core import SupervisedPlugin


class AccuracyPlugin(SupervisedPlugin):
    """After each ``eval(stream)``, ``last`` maps experience id -> accuracy and ``samples`` experience id ->
    how many samples it scored (what weights a task in the accuracy curve A_b); ``eval_samples`` and
    ``eval_seconds`` add up over all evals (eval throughput). Filling a row of R is the caller's job."""

    def __init__(self):
        super().__init__()
        self.last: dict[int, float] = {}
        self.samples: dict[int, int] = {}
        self._correct = self._seen = 0
        self.eval_samples = 0
        self.eval_seconds = 0.0

    def before_eval(self, strategy, **kwargs):
        self.last, self.samples, self._t0 = {}, {}, time.perf_counter()

    def before_eval_exp(self, strategy, **kwargs):
        self._correct = self._seen = 0

    @torch.no_grad()
    def after_eval_iteration(self, strategy, **kwargs):
        self._correct += int((strategy.mb_output.argmax(1) == strategy.mb_y).sum())
        self._seen += len(strategy.mb_y)

    def after_eval_exp(self, strategy, **kwargs):
        exp = strategy.experience.current_experience
        self.last[exp], self.samples[exp] = self._correct / max(self._seen, 1), self._seen
        self.eval_samples += self._seen

    def after_eval(self, strategy, **kwargs):
        self.eval_seconds += time.perf_counter() - self._t0
