"""A tqdm progress bar over each training experience (all epochs), showing the running loss."""

from __future__ import annotations

from avalanche.core import SupervisedPlugin
from tqdm.auto import tqdm


class ProgressBar(SupervisedPlugin):
    def __init__(self, n_tasks: int):
        super().__init__()
        self.n_tasks = n_tasks
        self.bar = None

    def before_training_exp(self, strategy, **kwargs):
        total = len(strategy.dataloader) * strategy.train_epochs
        task = strategy.experience.current_experience
        self.bar = tqdm(total=total, desc=f"task {task + 1}/{self.n_tasks}", unit="it", mininterval=0.5, leave=False, disable=None)

    def after_training_iteration(self, strategy, **kwargs):
        self.bar.update()
        if strategy.clock.train_epoch_iterations % 20 == 0:
            self.bar.set_postfix(epoch=strategy.clock.train_exp_epochs + 1, loss=f"{strategy.loss.item():.4f}", refresh=False)

    def after_training_exp(self, strategy, **kwargs):
        self.bar.close()
