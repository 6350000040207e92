"""Training progress: a tqdm bar per task on a terminal; in logs (CI, Slurm, a sweep's job.log) the
console logger's line per task, and with ``epochs`` a line per epoch too."""

from __future__ import annotations

import math
import time

from avalanche.core import SupervisedPlugin
from tqdm.auto import tqdm


class ProgressBar(SupervisedPlugin):
    def __init__(self, n_tasks: int, epochs: bool = False):
        super().__init__()
        self.n_tasks, self.epochs_in_logs = n_tasks, epochs
        self.bar = None

    def before_training_exp(self, strategy, **kwargs):
        total = sum(strategy.stage_steps())
        self.epochs = math.ceil(total / len(strategy.dataloader))
        self.desc = f"task {strategy.experience.current_experience + 1}/{self.n_tasks}"
        self.bar = tqdm(total=total, desc=self.desc, unit="it", mininterval=0.5, leave=False, disable=None)
        self._t0, self._loss, self._n = time.perf_counter(), 0.0, 0

    def after_training_iteration(self, strategy, **kwargs):
        self.bar.update()
        if not self.bar.disable:
            if strategy.clock.train_epoch_iterations % 20 == 0:
                self.bar.set_postfix(epoch=strategy.clock.train_exp_epochs + 1, loss=f"{strategy.loss.item():.4f}",
                                     refresh=False)
        elif self.epochs_in_logs:  # summed on the device, read once per epoch (no per-step wait for it)
            self._loss, self._n = self._loss + strategy.loss.detach().sum(), self._n + 1

    def after_training_epoch(self, strategy, **kwargs):
        if self.bar.disable and self.epochs_in_logs:
            print(
                f"{self.desc} epoch {strategy.clock.train_exp_epochs + 1}/{self.epochs} "
                f"loss {float(self._loss) / max(self._n, 1):.4f} ({time.perf_counter() - self._t0:.0f}s)",
                flush=True,
            )
            self._loss, self._n = 0.0, 0

    def after_training_exp(self, strategy, **kwargs):
        self.bar.close()
