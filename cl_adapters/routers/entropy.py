"""Confidence routing (AdapterCL's perplexity rule, for classifiers): every trained task's adapter and
head score the sample in one batched pass; the most confident task wins."""

from __future__ import annotations

import torch

from cl_adapters.errors import UserError
from cl_adapters.routers.base import Router, every_task

SCORES = ("entropy", "max_softmax", "energy")


class EntropyRouter(Router):
    """``score``: entropy of the head's softmax (lowest wins), max_softmax (highest wins) or energy
    (-logsumexp of the logits, Liu et al. 2020; lowest wins)."""

    def __init__(self, score: str = "entropy"):
        if score not in SCORES:
            raise UserError(f"router.score must be one of {SCORES}, got {score!r}")
        self.score = score

    def predict(self, model, x: torch.Tensor, task_labels=None) -> torch.Tensor:
        tasks, route, copies = every_task(model, x)
        logits = model(copies, route).view(len(tasks), len(x), -1)  # -inf outside each task's classes
        if self.score == "entropy":
            cost = torch.special.entr(logits.softmax(-1)).sum(-1)
        elif self.score == "max_softmax":
            cost = -logits.softmax(-1).amax(-1)
        else:
            cost = -logits.logsumexp(-1)
        return torch.tensor(tasks, device=x.device)[cost.argmin(0)]
