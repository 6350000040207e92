"""AdapterFusion (Pfeiffer et al. 2021): a task's learned, per-token mixture of the task adapters.

Per adapted layer, with ``h`` the wrapped module's output and ``d_n`` adapter n's output (its
contribution, before the residual), as in the paper and AdapterHub:

    s_n = softmax_n( Q(h) . K(d_n) / T ),        out = h + V( sum_n s_n d_n )

V starts at the identity (and Q, K near zero), so a fresh fusion starts at the average of the adapters.

Computed without materialising any ``d_n`` (the direct form costs N full-width up-projections and N
key projections per layer, which is why fusing 10 adapters triples AdapterHub's inference time):
- K's bias adds the same ``q . b_K`` to every score and the softmax ignores it, so K has none;
- ``q . K d_n = (K^T q) . d_n = s (U_n^T K^T q) . a_n + s (K^T q) . b_n``, with ``a_n`` adapter n's
  bottleneck activation, ``U_n``/``b_n`` its up-projection: the scores live in the r-wide bottleneck,
  and ``U_n^T K^T Q`` is a small matrix, so the query side is extra rows of the down-projection GEMM
  (with a low-rank query/key, the query itself is, and a thin GEMM maps it to the bottleneck);
- V is linear and the ``s_n`` sum to 1, so ``V(sum s_n d_n) = sum s_n V d_n``: V folds into the
  up-projections (its bias into theirs), which become one GEMM over the attention-scaled activations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from cl_adapters.errors import UserError

MODES = ("two_stage", "joint")


@dataclass
class FusionConfig:
    """Full = the paper's "dynamic" fusion (d x d query, key and value, V regularised to I); light =
    a low-rank query/key and no value: a few thousand parameters per layer and task."""

    mode: str = field(default="two_stage", metadata={"help": "two_stage: adapter, then its fusion | joint: both at once"})
    rank: int | None = field(default=None, metadata={"help": "query/key width; None = the layer width (paper)"})
    value: bool = field(default=True, metadata={"help": "learn the value matrix V (initialised to I)"})
    temperature: float = field(default=1.0, metadata={"help": "softmax temperature T"})
    regularization: float = field(default=0.01, metadata={"help": "weight of ||V - I||^2 in the loss"})
    budget: str = field(default="equal", metadata={
        "help": "two_stage: equal splits the task's optimizer steps between its stages (as many as an adapter) | "
                "extra gives each stage all of them"})
    top_k: int | None = field(default=None, metadata={
        "help": "fuse the task's adapter and the k earlier adapters whose features best separate its classes "
                "(None: every earlier adapter); bounds a fusion's cost on long streams"})
    candidates: int | None = field(default=None, metadata={
        "help": "with top_k: probe only this many earlier adapters, those of the tasks with the nearest data "
                "signatures (None: all; choosing then costs a pass per earlier adapter)"})

    def __post_init__(self):
        if self.mode not in MODES:
            raise UserError(f"fusion.mode must be one of {MODES}, got {self.mode!r}")
        if self.rank is not None and (not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank <= 0):
            raise UserError(f"fusion.rank must be a positive integer or null, got {self.rank!r}")
        if not self.temperature > 0:
            raise UserError(f"fusion.temperature must be > 0, got {self.temperature!r}")
        if self.budget not in ("equal", "extra"):
            raise UserError(f"fusion.budget must be equal or extra, got {self.budget!r}")
        if not self.regularization >= 0:
            raise UserError(f"fusion.regularization must be >= 0, got {self.regularization!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 1):
            raise UserError(f"fusion.top_k must be a positive integer or null, got {self.top_k!r}")
        if self.candidates is not None and (self.top_k is None or not isinstance(self.candidates, int)
                                            or isinstance(self.candidates, bool) or self.candidates < self.top_k):
            raise UserError(f"fusion.candidates must be an integer >= fusion.top_k (set top_k too) or null, "
                            f"got {self.candidates!r} with top_k={self.top_k!r}")


class Fusion(nn.Module):
    """One task's fusion in one layer, over the adapters ``keys`` (fixed when it is created)."""

    def __init__(self, dim: int, keys: list[str], cfg: FusionConfig):
        super().__init__()
        self.keys = list(keys)
        self.temperature = cfg.temperature
        rank = cfg.rank or dim
        self.query = nn.Linear(dim, rank)
        self.key = nn.Linear(dim, rank, bias=False)  # a key bias cancels in the softmax (module docstring)
        for lin in (self.query, self.key):  # small scores at init: close to a uniform average
            nn.init.normal_(lin.weight, std=0.02)
        nn.init.zeros_(self.query.bias)
        self.value = nn.Linear(dim, dim) if cfg.value else None
        if self.value is not None:  # exactly I (the paper adds 1e-6 off the diagonal; that only blurs it)
            nn.init.eye_(self.value.weight)
            nn.init.zeros_(self.value.bias)
        # mean attention per adapter over the tokens seen in eval mode (read by FusionAttention)
        self.register_buffer("attention_sum", torch.zeros(len(self.keys), dtype=torch.float64), persistent=False)
        self.attention_tokens = 0

    def value_penalty(self) -> torch.Tensor:
        """``||V - I||^2``: keeps the value close to the identity (the paper's regulariser)."""
        if self.value is None:
            return self.query.bias.new_zeros(())
        w = self.value.weight
        return (w - torch.eye(len(w), device=w.device, dtype=w.dtype)).square().sum()

    def reset_attention(self) -> None:
        self.attention_sum.zero_()
        self.attention_tokens = 0

    def mean_attention(self) -> list[float]:
        return (self.attention_sum / max(self.attention_tokens, 1)).tolist()

    def forward(self, out: torch.Tensor, src: torch.Tensor | None, adapters: list[nn.Module], inplace: bool = False):
        """``out`` + the fused adapters; ``src`` is the adapters' input (None: ``out``, serial adapters).
        With ``inplace`` (no autograd, ``out`` owned by the caller) the result is written into ``out``."""
        n, r, scaling = len(adapters), adapters[0].up.in_features, adapters[0].scaling
        nr = n * r
        down_w = torch.cat([a.down.weight for a in adapters])  # (N r, d_in)
        down_b = torch.cat([a.down.bias for a in adapters])
        up = torch.cat([torch.cat([a.up.weight for a in adapters], 1),  # [U_1 .. U_N | b_1 .. b_N]: (d, N r + N)
                        torch.stack([a.up.bias for a in adapters], 1)], 1)
        key_side = self.key.weight @ up * (scaling / self.temperature)  # K [U | B]: (rank, N r + N)
        rank, dim = key_side.shape[0], out.shape[-1]
        if rank * (dim + nr + n) < dim * (nr + n):  # low rank: project the query, then score in the bottleneck
            side_w, side_b, after = self.query.weight, self.query.bias, key_side
        else:  # full rank: fold Q^T K [U | B] into one matrix
            side_w, side_b, after = (self.query.weight.t() @ key_side).t(), self.query.bias @ key_side, None
        if src is None:  # serial: one GEMM gives the bottleneck pre-activations and the query side
            pre = nn.functional.linear(out, torch.cat([down_w, side_w]), torch.cat([down_b, side_b]))
            pre, side = pre.split([nr, len(side_w)], dim=-1)
        else:
            pre = nn.functional.linear(src, down_w, down_b)
            side = nn.functional.linear(out, side_w, side_b)
        if after is not None:
            side = side @ after
        a = adapters[0].dropout(adapters[0].act(pre)).unflatten(-1, (n, r))
        scores = (side[..., :nr].unflatten(-1, (n, r)) * a).sum(-1) + side[..., nr:]
        probs = scores.softmax(-1)  # (..., N)
        if not self.training:
            self.attention_sum += probs.detach().reshape(-1, n).sum(0, dtype=torch.float64)
            self.attention_tokens += probs.numel() // n

        out_w = up * scaling
        if self.value is not None:  # V folded in; its bias rides on the up biases (the s_n sum to 1)
            out_w = self.value.weight @ out_w
            out_w = torch.cat([out_w[:, :nr], out_w[:, nr:] + self.value.bias[:, None]], 1)
        mixed = torch.cat([(a * probs.unsqueeze(-1)).flatten(-2), probs], -1).reshape(-1, nr + n)
        if inplace:
            out.view(-1, out.shape[-1]).addmm_(mixed, out_w.t())
            return out
        return torch.addmm(out.reshape(-1, out.shape[-1]), mixed, out_w.t()).view(out.shape)
