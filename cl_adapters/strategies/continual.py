"""ContinualStrategy: the one SupervisedTemplate subclass behind every strategy config.

Strategies differ only in their model policy (``strategy/*.yaml``): ``adapter`` gives AdaptedModel an
adapter config and freezes the backbone after the first task; ``full_ft`` trains the whole backbone
on every task. Heads are per task in both.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from cl_adapters.errors import UserError


class ContinualStrategy(SupervisedTemplate):
    def __init__(
        self,
        *,
        backbone: nn.Module,
        model: Callable[[nn.Module], nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        epochs: int = 5,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        device: str = "cpu",
        plugins: Sequence = (),
        evaluator: EvaluationPlugin | None = None,
    ):
        for key, value in (("epochs", epochs), ("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if not isinstance(value, int) or value < 1:
                raise UserError(f"strategy.{key} must be a positive integer, got {value!r}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = model(backbone)
        try:
            opt = optimizer(model.parameters())
        except ValueError as e:  # torch's own checks: "Invalid learning rate: -0.1"
            raise UserError(f"strategy.optimizer: {e}") from e
        if evaluator is None:
            with warnings.catch_warnings():  # "no loggers": our own plugins measure and log
                warnings.simplefilter("ignore")
                evaluator = EvaluationPlugin()
        super().__init__(
            model=model,
            optimizer=opt,
            train_mb_size=batch_size,
            train_epochs=epochs,
            eval_mb_size=eval_batch_size,
            device=device,
            plugins=list(plugins),
            evaluator=evaluator,
            eval_every=-1,
        )

    def forward(self):
        return self.model(self.mb_x, self.mb_task_id)

    def criterion(self):
        loss = super().criterion()
        if self.is_training and not torch.isfinite(loss):
            raise UserError(
                f"training loss is {loss.item()} at experience {self.experience.current_experience}, "
                f"epoch {self.clock.train_exp_epochs}, iteration {self.clock.train_epoch_iterations} "
                "(lower strategy.optimizer.lr or check the inputs)"
            )
        return loss
