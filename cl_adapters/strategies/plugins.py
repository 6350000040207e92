"""Avalanche's CL plugins where they need a fix."""

from __future__ import annotations

import torch
from avalanche.training.plugins import SynapticIntelligencePlugin


class SynapticIntelligence(SynapticIntelligencePlugin):
    """Avalanche's Synaptic Intelligence (Zenke et al. 2017), with two fixes and one option:

    - Avalanche stores the weights as ``param.detach().cpu().flatten()``: on a CPU that is a view of the
      parameter, not a copy, so the "old" weights move with the optimizer step, every path-integral term
      is 0 and the penalty's anchor follows the weights (SI does nothing). Here they are copies.
    - it reads every trainable parameter's gradient after each step; an earlier task's head gets none
      in a task-IL batch, so a missing gradient counts as zero (that head did not move).
    - ``clip_to``: Avalanche caps every importance at 0.001, which makes most of them equal (a plain L2
      pull); None keeps them as the paper defines them (and van de Ven & Tolias's code: their c is
      ``si_lambda / 2``, their damping 0.1 is ``eps``).
    """

    def __init__(self, si_lambda, eps: float = 1e-7, clip_to: float | None = 0.001, **kwargs):
        super().__init__(si_lambda, eps=eps, **kwargs)
        self.clip_to = clip_to

    def after_training_exp(self, strategy, **kwargs):  # Avalanche's, with our clip (it passes 0.001 and c=1)
        self.update_ewc_data(strategy.model, self.ewc_data, self.syn_data,
                             float("inf") if self.clip_to is None else self.clip_to, self.excluded_parameters, 1,
                             eps=self.eps)

    def before_training_exp(self, strategy, **kwargs):
        super().before_training_exp(strategy, **kwargs)
        _own_copies(self.ewc_data[0])  # the anchor: the weights at the start of the task

    def before_training_iteration(self, strategy, **kwargs):
        super().before_training_iteration(strategy, **kwargs)
        _own_copies(self.syn_data["old_theta"])

    def after_training_iteration(self, strategy, **kwargs):
        for p in strategy.model.parameters():
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
        super().after_training_iteration(strategy, **kwargs)


def _own_copies(params: dict) -> None:
    for p in params.values():
        p.data = p.data.clone()
