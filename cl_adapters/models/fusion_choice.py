"""Which earlier adapters a task's fusion mixes under ``fusion.top_k``: a choice made on the model by
probing each adapter alone on the new task's data (kept out of the model, which only applies it)."""

from __future__ import annotations

import torch

from cl_adapters.adapters.route import Route, Stack
from cl_adapters.models.adapted import AdaptedModel, task_key


@torch.no_grad()
def relevant_adapters(model: AdaptedModel, task: int, data, samples: int = 256) -> list[str]:
    """What ``task``'s fusion mixes under ``fusion.top_k``: the k earlier adapters whose features (each
    adapter alone) best separate its classes, then its own, in stream order. Scored by nearest-class-
    mean accuracy on up to ``samples`` of its training samples spread over ``data`` (every other one
    for the means, the rest classified): cheap, deterministic, and blind to the test data."""
    keys = model.adapters.keys()
    own = keys.index(task_key(task))
    if own <= model.fusion.top_k:
        return keys[: own + 1]
    data = data.eval() if hasattr(data, "eval") else data  # no augmentation (nor its random numbers)
    rows = [data[i] for i in range(0, len(data), max(len(data) // samples, 1))][:samples]
    x = torch.stack([torch.as_tensor(row[0]) for row in rows]).to(model._adaptation_device)
    y = torch.as_tensor([int(row[1]) for row in rows])
    training = model.training
    model.eval()
    try:
        scores = [_ncm_accuracy(torch.cat([model.features(chunk, Route.whole(Stack((key,)))).cpu()
                                           for chunk in x.split(256)]), y) for key in keys[:own]]
    finally:
        model.train(training)
    best = sorted(range(own), key=lambda k: -scores[k])[: model.fusion.top_k]  # ties: the earlier adapter
    return [keys[k] for k in sorted(best)] + [keys[own]]


def _ncm_accuracy(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Nearest-class-mean accuracy: class means from the even rows, the odd rows classified."""
    fit, scored = features[0::2], features[1::2]
    classes = labels[0::2].unique()
    means = torch.stack([fit[labels[0::2] == c].mean(0) for c in classes])
    return (classes[torch.cdist(scored, means).argmin(1)] == labels[1::2]).float().mean().item()
