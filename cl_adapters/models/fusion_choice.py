"""Which earlier adapters a task's fusion mixes under ``fusion.top_k``: a choice made on the model by
probing each adapter alone on the new task's data (kept out of the model, which only applies it).

Probing every earlier adapter costs one pass per adapter: linear in the stream's length. With
``fusion.candidates`` only that many are probed, the earlier tasks whose data are nearest the new
task's: each task's data signature (the centroid of its samples' bare-backbone features, as
AdapterSoup picks domain adapters by embedding similarity) is kept with the task, so a choice costs
two passes and the probes, however long the stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from cl_adapters.adapters.route import Route, Stack
from cl_adapters.avalanche_compat import adaptation_device
from cl_adapters.models.keys import task_key
from cl_adapters.streams.columns import tensor_samples

if TYPE_CHECKING:  # annotations only: adapted.py imports this module to run the choice
    from cl_adapters.models.adapted import AdaptedModel

SAMPLES = 256  # of the task's training samples, spread over its data


@torch.no_grad()
def relevant_adapters(model: AdaptedModel, task: int, data) -> list[str]:
    """What ``task``'s fusion mixes under ``fusion.top_k``: the k earlier adapters whose features (each
    adapter alone) best separate its classes, then its own, in stream order. Scored by nearest-class-
    mean accuracy on up to ``SAMPLES`` of its training samples (every other one for the means, the rest
    classified): cheap, deterministic, and blind to the test data. With ``fusion.candidates`` only the
    adapters of the earlier tasks with the nearest data signatures are scored."""
    keys = model.adapters.keys()
    own = keys.index(task_key(task))
    if own <= model.fusion.top_k:
        return keys[: own + 1]
    x, y = probe_samples(model, data)
    candidates = range(own)
    with _evaluating(model):
        if model.fusion.candidates is not None and model.fusion.candidates < own:
            centroid = _centroid(model, x)
            distance = {k: float(torch.dist(model.signatures[int(keys[k])], centroid)) for k in range(own)}
            candidates = sorted(sorted(distance, key=distance.get)[: model.fusion.candidates])  # ties: the earlier
        scores = {k: _ncm_accuracy(model.features(x, Route.whole(Stack((keys[k],)))).cpu(), y) for k in candidates}
    best = sorted(scores, key=lambda k: -scores[k])[: model.fusion.top_k]  # ties: the earlier adapter
    return [keys[k] for k in sorted(best)] + [keys[own]]


@torch.no_grad()
def data_signature(model: AdaptedModel, data) -> torch.Tensor:
    """A task's data signature: the centroid of its probe samples' features through the bare backbone."""
    with _evaluating(model):
        return _centroid(model, probe_samples(model, data)[0])


def probe_samples(model: AdaptedModel, data) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``SAMPLES`` of ``data``'s samples, evenly spread, as they are without augmentation."""
    data = data.eval() if hasattr(data, "eval") else data  # no augmentation (nor its random numbers)
    picked = list(range(0, len(data), max(len(data) // SAMPLES, 1)))[:SAMPLES]
    gathered = tensor_samples(data, picked)  # an in-memory stream's rows at once
    if gathered is not None:
        x, y, _ = gathered
    else:
        rows = [data[i] for i in picked]
        x, y = torch.stack([torch.as_tensor(row[0]) for row in rows]), torch.as_tensor([int(row[1]) for row in rows])
    return x.to(adaptation_device(model)), y


def _centroid(model: AdaptedModel, x: torch.Tensor) -> torch.Tensor:
    return model.backbone(x).flatten(1).mean(0).cpu()  # a direct forward (eval mode) is the bare backbone


@contextmanager
def _evaluating(model: AdaptedModel) -> Iterator[None]:
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _ncm_accuracy(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Nearest-class-mean accuracy: class means from the even rows, the odd rows classified."""
    fit, scored = features[0::2], features[1::2]
    classes = labels[0::2].unique()
    means = torch.stack([fit[labels[0::2] == c].mean(0) for c in classes])
    return (classes[torch.cdist(scored, means).argmin(1)] == labels[1::2]).float().mean().item()
