"""Forward transfer by linear probe: how much better a new task starts from the features the stream has
made so far than from the initial model's.

GEM's FWT reads R[j-1, j], task j's accuracy before it is trained; with a fresh head per task that head is
untrained, so R[j-1, j] - b[j] measures how a random readout drifts, not transfer. A probe does not need
the model's head: a logistic regression (scikit-learn, standardised features) is fitted on a fixed subsample
of task j's training data and scored on its eval data, once on the features task j starts from after task
j-1, once on the initial model's. "The features task j starts from" are the backbone's with the shared
adapter if there is one; a fresh per-task adapter or LoRA starts as the identity, so per-task methods
start from the bare backbone. A task whose probe samples have one class (a stream of one-class tasks)
cannot be probed: its entries are None, with the reason in ``skipped``.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, Subset

from cl_adapters.adapters.route import NO_ROUTE


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Accuracy of a logistic-regression probe fitted on (train_x, train_y), scored on (test_x, test_y);
    ``train_y`` needs two classes at least."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return float(probe.fit(train_x, train_y).score(test_x, test_y))


class LinearProbe:
    """The probe accuracy of each task j >= 1: ``initial[j]`` on the model before training, ``before[j]``
    after task j-1 (None until measured, or if it cannot be: ``skipped[j]`` says why). The probe's training
    samples are at most ``samples`` per task, a subset fixed by ``seed`` and the task; the run's RNG is
    untouched. ``num_workers``: the strategy's loader workers, so a stream read lazily from files (JPEG
    folders) is decoded in them, not in the main process."""

    def __init__(self, train_stream, eval_stream, samples: int, seed: int, batch_size: int, device,
                 num_workers: int = 0):
        self.train_stream, self.eval_stream = train_stream, eval_stream
        self.samples, self.seed, self.batch_size, self.device = samples, seed, batch_size, device
        self.num_workers = num_workers
        T = len(train_stream)
        self.initial: list[float | None] = [None] * T
        self.before: list[float | None] = [None] * T
        self.skipped: dict[int, str] = {}

    def measure(self, model, task: int) -> float | None:
        if task in self.skipped:  # its labels, not the model, decided that
            return None
        train = self.train_stream[task].dataset.eval()
        n = len(train)
        if n > self.samples:
            order = np.random.default_rng([self.seed, task]).permutation(n)[: self.samples]
            train = Subset(train, sorted(order.tolist()))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng():
                train_x, train_y = self._features(model, train)
                test_x, test_y = self._features(model, self.eval_stream[task].dataset.eval())
        finally:
            model.train(was_training)
        if len(classes := np.unique(train_y)) < 2:
            self.skipped[task] = f"task {task}'s probe samples have one class ({classes[0]}): a probe needs two"
            return None
        return probe_accuracy(train_x, train_y, test_x, test_y)

    def _features(self, model, dataset) -> tuple[np.ndarray, np.ndarray]:
        feats, labels = [], []
        for x, y, *_ in DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers):
            feats.append(model.features(x.to(self.device), NO_ROUTE).flatten(1).float().cpu())
            labels.append(y)
        return torch.cat(feats).numpy(), torch.cat(labels).numpy()
