"""``classifier=ncm`` (strategy=ncm, SimpleCIL): cosine similarity to each class's mean feature."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cl_adapters.models.classifiers.base import ClassifierHead


class PrototypeHead(ClassifierHead, kind="ncm"):
    """Nearest class mean (SimpleCIL): in eval mode a sample scores each class by the cosine similarity of
    its features to the class's mean feature, a running mean over every sample ``fit`` has seen (so in
    domain-IL a class's mean spans the domains). The linear layer underneath is what trains, when the
    backbone trains (first-session adaptation); before any ``fit`` the head is that linear layer."""

    fitted = True
    summary = "the backbone's class means"

    def __init__(self, in_features: int, classes: list[int], **options):
        super().__init__(in_features, classes, **options)
        self.register_buffer("means", torch.zeros(len(classes), in_features))
        self.register_buffer("counts", torch.zeros(len(classes)))

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "means"):  # nn.Linear's __init__ resets before the buffers exist
            self.means.zero_()
            self.counts.zero_()

    @torch.no_grad()
    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Fold a batch into the running means of the classes it holds."""
        for column, label in enumerate(self.classes):
            rows = features[labels == label]
            if len(rows):
                total = self.counts[column] + len(rows)
                self.means[column] += (rows.sum(0) - len(rows) * self.means[column]) / total
                self.counts[column] = total

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.training or not self.counts.any():
            return super().forward(features)
        scores = F.normalize(features, dim=-1) @ F.normalize(self.means, dim=-1).T
        return scores.masked_fill(self.counts == 0, float("-inf"))  # a class never seen takes no sample
