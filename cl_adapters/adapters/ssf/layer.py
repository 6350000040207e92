"""The SSF wrapper: a base layer's output scaled and shifted per channel by the routed task's pair.

Channels are the last dimension of a Linear's or LayerNorm's output and dimension 1 of a Conv2d's (the
paper's ``ssf_ada`` reads both layouts). A batch that mixes tasks gets one (scale, shift) row per sample,
so each sample is transformed by its own task's pair in one fused multiply-add.
"""

from __future__ import annotations

import torch
from torch import nn

from cl_adapters.adapters.route import NO_ROUTE, Route, stacked_keys
from cl_adapters.errors import UserError

KINDS = (nn.Linear, nn.LayerNorm, nn.Conv2d)  # what SSF follows in the paper: every projection, norm, patch embed


def channels(name: str, base: nn.Module) -> int:
    """The output channels of ``base``, or a one-line refusal naming it."""
    if isinstance(base, nn.Linear):
        return base.out_features
    if isinstance(base, nn.Conv2d):
        return base.out_channels
    if isinstance(base, nn.LayerNorm) and len(base.normalized_shape) == 1:
        return base.normalized_shape[0]
    raise UserError(f"adapter.targets: {name} ({type(base).__name__}) is not a Linear, LayerNorm over one dimension "
                    "or Conv2d layer: SSF scales and shifts such a layer's output channels")


class ScaleShift(nn.Module):
    """One task's pair at one layer: ``scale`` (init 1) and ``shift`` (init 0), optionally jittered by ``std``."""

    def __init__(self, width: int, std: float = 0.0, device: torch.device | None = None):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(width, device=device))
        self.shift = nn.Parameter(torch.zeros(width, device=device))
        if std:
            nn.init.normal_(self.scale, mean=1.0, std=std)
            nn.init.normal_(self.shift, std=std)


class SSFLayer(nn.Module):
    """Wraps ``base``: ``scale[t] * base(x) + shift[t]`` for each sample's task t (a task without a pair:
    ``base(x)`` unchanged; a ``Stack``: the pairs applied in order, which compose to one pair)."""

    def __init__(self, name: str, base: nn.Module):
        super().__init__()
        self.base = base
        self.width = channels(name, base)
        self.channel_dim = 1 if isinstance(base, nn.Conv2d) else -1
        self.ssf = nn.ModuleDict()
        self.route: Route = NO_ROUTE  # set for one forward by SSFAdapters.routed

    def __getattr__(self, name: str):
        """The base's attributes (``weight``, ``out_features``, ...): model code reads them through the wrapper
        (Hugging Face's ViT reads its patch embedding's ``weight.dtype``)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base":
                raise
            return getattr(self.base, name)

    def add(self, key: str, std: float) -> None:
        self.ssf[key] = ScaleShift(self.width, std, device=next(self.base.parameters()).device)

    def pair(self, key) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The (scale, shift) a route key applies here, composed over a stack; None if it has none here."""
        pairs = [self.ssf[k] for k in stacked_keys(key) if k in self.ssf]
        if not pairs:
            return None
        scale, shift = pairs[0].scale, pairs[0].shift
        for p in pairs[1:]:  # p.scale * (scale * x + shift) + p.shift
            scale, shift = p.scale * scale, p.scale * shift + p.shift
        return scale, shift

    def _per_sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(batch, width) scales and shifts: each row its sample's task's pair (identity where it has none)."""
        pairs = [(idx, got) for key, idx in self.route if (got := self.pair(key)) is not None]
        if not pairs:
            return None
        ref = pairs[0][1][0]
        scale, shift = ref.new_ones(batch, self.width), ref.new_zeros(batch, self.width)
        for idx, (s, b) in pairs:
            scale = scale.index_put((idx,), s.expand(len(idx), -1))
            shift = shift.index_put((idx,), b.expand(len(idx), -1))
        return scale, shift

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.base(x, *args, **kwargs)
        if not len(self.route):
            return out
        if len(self.route) == 1:  # the whole batch one task's: a (width,) pair broadcast over it
            got, lead = self.pair(self.route[0][0]), ()
        else:
            got, lead = self._per_sample(len(out)), (len(out),)
        if got is None:
            return out
        trail = [1] * (out.dim() - 2) if self.channel_dim == 1 else []
        mid = [] if self.channel_dim == 1 else [1] * (out.dim() - 1 - len(lead))
        shape = (*lead, *mid, self.width, *trail)
        scale, shift = (t.to(out.dtype).reshape(shape) for t in got)
        return torch.addcmul(shift, out, scale)
