"""``classifier=ranpac``: RanPAC's classifier (McDonnell et al., NeurIPS 2023, "RanPAC: Random Projections
and Pre-trained Models for Continual Learning"), run as ``strategy=ncm strategy.model.classifier=ranpac``.

Why: class means (``ncm``) ignore how features correlate; RanPAC lifts the frozen features into a random
nonlinear space where classes separate better, and fits a ridge regression there from statistics that
only accumulate, so nothing is forgotten and, λ aside, the result does not depend on the task order.

As the authors' code does it (github.com/RanPAC/RanPAC at 012927f; ``RanPAC.py`` unless named):
- ``W_rand``: d x M, entries N(0, 1) (``torch.randn``), drawn once before the first fit (``setup_RP``,
  lines 246-260, line 254); M = 10000 in every ``args/*_publish.csv`` run with a projection;
- ``h = ReLU(f @ W_rand)`` (``replace_fc`` line 119; ``inc_net.py`` ``CosineLinear.forward`` line 35);
- ``G += hᵀh``, ``Q += hᵀY`` over every task's training features, Y one-hot (lines 115, 122-123);
- λ by ``optimise_ridge_parameter`` (lines 138-150), on the current task's features only (line 124): the
  first 80% of its (shuffled: the loader of line 168) samples fit ``solve(G_val + λI, Q_val)``, the last
  20% score it by mean squared error against Y, over the grid ``10.0 ** np.arange(-8, 9)`` (1e-8 .. 1e8);
- ``Wo = solve(G + λI, Q)`` over all tasks' G and Q (line 125); logits ``h @ Wo`` (``inc_net.py`` lines
  35-39; ``sigma``, lines 45-46, stays 1: nothing trains in ``ncm`` mode).

Deviations:
- RanPAC's first-session adaptation (PETL: adapters, SSF or VPT trained on task 1) is not part of this
  classifier: it fits a frozen backbone, as ``strategy=ncm`` does (a from-scratch backbone trains on task 1
  with the linear layer underneath, then freezes: the framework's first-session adaptation).
- Y has a column per class the head knows (the authors': every class of the dataset); the extra columns
  are zero in the fit and the held-out targets alike, so they change neither Wo's known columns nor λ.
- The 80/20 split permutes the task's samples with the run's RNG (the authors' shuffled loader did);
  the held-out share is ``holdout`` (0.2) and the grid ``ridges`` (the authors' by default).
- A λ whose solve fails or whose loss is not finite is skipped (the authors' ``np.argmin`` would pick a
  NaN); a task too small to split is refused in one line.
- Task-IL (a head per task) fits each task's head on its own task: G and Q accumulate within a head;
  class- and domain-IL's one shared head accumulates over every task, as the paper.
- Classes never fitted score -inf (like ``ncm``); the authors' head only had the classes seen so far.

Costs: G is M x M (400 MB in fp32 at M=10000), in every checkpoint link (it changes every task); each
fit solves an M x M system once per λ (17) and once more.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from cl_adapters.errors import UserError
from cl_adapters.models.classifiers.base import ClassifierHead

RIDGES = [10.0 ** k for k in range(-8, 9)]  # RanPAC.py line 139
WHOLE = ("W_rand", "G", "ridge")  # kept as they are when the head grows; Q, Wo grow by columns
COLUMNS = ("Q", "Wo")


def choose_ridge(G: torch.Tensor, Q: torch.Tensor, H: torch.Tensor, Y: torch.Tensor, ridges) -> float:
    """The λ of ``ridges`` whose ``solve(G + λI, Q)`` predicts held-out ``Y`` from ``H`` with the least mean
    squared error (``optimise_ridge_parameter``): G, Q from the fit part only."""
    eye, losses = torch.eye(len(G), dtype=G.dtype, device=G.device), []
    for ridge in ridges:
        try:
            loss = F.mse_loss(H @ torch.linalg.solve(G + ridge * eye, Q), Y).item()
        except torch.linalg.LinAlgError:  # numerically singular at this λ
            loss = float("inf")
        losses.append(loss if loss == loss else float("inf"))
    if min(losses) == float("inf"):
        raise UserError("classifier=ranpac: no λ of strategy.model.classifier_options.ridges gives a finite held-out loss")
    return ridges[losses.index(min(losses))]


class RanPACHead(ClassifierHead, kind="ranpac"):
    """Random projection + ReLU, then ridge regression from accumulated G and Q (see the module docstring)."""

    fitted = True
    summary = "a ridge regression on the backbone's randomly projected features"
    options = {"M": 10000, "ridges": RIDGES, "holdout": 0.2}

    def __init__(self, in_features: int, classes: list[int], **options):
        super().__init__(in_features, classes, **options)
        M, C = options["M"], len(classes)
        self.register_buffer("W_rand", torch.zeros(in_features, M))  # drawn at the first fit
        self.register_buffer("G", torch.zeros(M, M))
        self.register_buffer("Q", torch.zeros(M, C))
        self.register_buffer("Wo", torch.zeros(M, C))
        self.register_buffer("counts", torch.zeros(C))
        self.register_buffer("ridge", torch.zeros(()))  # the λ of the last fit
        self._features: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    @classmethod
    def configure(cls, given: Mapping | None) -> dict:
        options = super().configure(given)
        M, ridges, holdout = options["M"], options["ridges"], options["holdout"]
        if isinstance(M, bool) or not isinstance(M, int) or M < 1:
            raise UserError(f"strategy.model.classifier_options.M must be a positive integer, got {M!r}")
        if isinstance(ridges, (str, bytes)) or not hasattr(ridges, "__iter__") or not list(ridges) or not all(
                _number(r) and r > 0 for r in ridges):
            raise UserError(f"strategy.model.classifier_options.ridges must be a list of numbers > 0, got {ridges!r}")
        if not _number(holdout) or not 0 < holdout < 1:
            raise UserError(f"strategy.model.classifier_options.holdout must be a fraction in (0, 1), got {holdout!r}")
        return {**options, "ridges": [float(r) for r in ridges], "holdout": float(holdout)}

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for name in ("W_rand", *WHOLE, *COLUMNS, "counts"):
            if hasattr(self, name):  # nn.Linear's __init__ resets before the buffers exist
                getattr(self, name).zero_()

    @torch.no_grad()
    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep the batch: λ is chosen on the whole task's features (``end_fit``)."""
        self._features.append(features.float())
        self._labels.append(labels)

    @torch.no_grad()
    def end_fit(self) -> None:
        """Draw W_rand (first fit), choose λ on the task's held-out share, add its G and Q, solve for Wo."""
        if not self._features:
            return
        f, labels = torch.cat(self._features), torch.cat(self._labels)
        self._features, self._labels = [], []
        with torch.autocast(f.device.type, enabled=False):
            if not self.W_rand.any():
                self.W_rand.copy_(torch.randn(self.W_rand.shape))  # the run's RNG, as setup_RP
            order = torch.randperm(len(f)).to(f.device)  # the authors' shuffled loader
            H, Y = torch.relu(f[order] @ self.W_rand), self._targets(labels[order])
            n = int(len(f) * (1 - self.settings["holdout"]))
            if not 0 < n < len(f):
                raise UserError(f"classifier=ranpac: a task of {len(f)} training samples cannot be split to choose λ "
                                f"(strategy.model.classifier_options.holdout={self.settings['holdout']})")
            G_fit, Q_fit = H[:n].T @ H[:n], H[:n].T @ Y[:n]
            self.ridge.fill_(choose_ridge(G_fit, Q_fit, H[n:], Y[n:], self.settings["ridges"]))
            self.G += G_fit + H[n:].T @ H[n:]
            self.Q += Q_fit + H[n:].T @ Y[n:]
            eye = torch.eye(len(self.G), dtype=self.G.dtype, device=self.G.device)
            self.Wo.copy_(torch.linalg.solve(self.G + self.ridge * eye, self.Q))

    def _targets(self, labels: torch.Tensor) -> torch.Tensor:
        """One-hot rows over the head's columns (a label it lacks: a zero row); counts the classes seen."""
        columns = torch.tensor(self.classes, device=labels.device)
        Y = (labels[:, None] == columns[None, :]).float()
        self.counts += Y.sum(0).to(self.counts.device)
        return Y

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.training or not self.counts.any():
            return super().forward(features)  # the linear layer: what trains with the backbone
        scores = torch.relu(features @ self.W_rand) @ self.Wo
        return scores.masked_fill(self.counts == 0, float("-inf"))

    def grown(self, classes: list[int]) -> RanPACHead:
        """Over more classes: W_rand, G, λ as they are, Q and Wo by columns, the rest by rows."""
        head = type(self)(self.in_features, classes, **self.settings).to(self.weight.device)
        state, known = head.state_dict(), len(self.classes)
        for name, old in self.state_dict().items():
            if name in WHOLE:
                state[name].copy_(old)
            elif name in COLUMNS:
                state[name][:, :known] = old
            else:
                state[name][:known] = old
        return head


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
