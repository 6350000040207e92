"""Prefix tuning's adapter set: one ``PrefixEncoder`` per task key, and the attention layers that
prepend, for one routed forward, each sample's task prefix to their keys and values.

Two kinds of attention layer take prefixes:
- a Hugging Face self-attention with ``key`` and ``value`` projections (BERT, RoBERTa, MiniLM, ViT, ...):
  the projections are wrapped so their output starts with the prefix, and a pre-hook extends the
  attention mask over the prefix positions;
- an attention module of ours with a ``prefix`` slot (the patch transformer's), which does both itself.
A sample whose task has no prefix (a mixed batch) gets zero prefixes masked out: it attends as the bare
model does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from cl_adapters.adapters.base import copy_state
from cl_adapters.adapters.presets import preset
from cl_adapters.adapters.route import NO_ROUTE, Route
from cl_adapters.errors import UserError


class PrefixEncoder(nn.Module):
    """One task's prefixes for every attention layer, as AdapterHub reparametrizes them while training:
    P embeddings -> Linear -> act -> Linear to (layers x 2 x dim), i.e. each layer's P keys and P values."""

    def __init__(self, layers: int, dim: int, cfg):
        super().__init__()
        self.embedding = nn.Embedding(cfg.prefix_length, dim)
        self.down = nn.Linear(dim, cfg.bottleneck)
        self.up = nn.Linear(cfg.bottleneck, layers * 2 * dim)
        self.act = getattr(F, cfg.activation)
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()
        self.layers, self.dim = layers, dim

    def forward(self) -> torch.Tensor:
        """(layers, 2, P, dim): per layer, its prefix keys and values."""
        kv = self.dropout(self.up(self.act(self.down(self.embedding.weight))))
        return kv.view(-1, self.layers, 2, self.dim).permute(1, 2, 0, 3)


class PrefixedProjection(nn.Module):
    """A key or value projection whose output starts with the routed prefix (while one is set)."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.prefix: torch.Tensor | None = None  # (B, P, dim), set for one forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        return out if self.prefix is None else torch.cat([self.prefix.to(out.dtype), out], dim=1)


def _over_prefixes(mask: torch.Tensor | None, pad: torch.Tensor | None, hidden: torch.Tensor, length: int) -> torch.Tensor:
    """The additive attention mask (B, 1, 1 or L, L) extended over ``length`` prefix positions in front:
    open, except where ``pad`` closes them (samples without a prefix)."""
    if mask is None:
        mask = hidden.new_zeros(len(hidden), 1, 1, hidden.shape[1])
    extra = mask.new_zeros(len(hidden), length) if pad is None else pad.to(mask.dtype)
    return torch.cat([extra[:, None, None, :].expand(-1, *mask.shape[1:3], -1), mask], dim=-1)


def _takes_projections(module: nn.Module) -> bool:
    return isinstance(getattr(module, "key", None), nn.Module) and isinstance(getattr(module, "value", None), nn.Module)


def _width(module: nn.Module) -> int:
    return module.dim if hasattr(module, "prefix") else module.key.out_features


class PrefixAdapters:
    """The prefixes of one backbone: task ``key``'s encoder is ``backbone.prefix_encoders[key]``."""

    supports_fusion = False
    supports_stack = False  # stacked prefixes would differ in length between the groups of a batch

    def __init__(self, backbone: nn.Module, cfg):
        self.cfg = cfg
        targets = cfg.targets if cfg.targets is not None else preset(backbone, "prefix")
        named = [(n, m) for n, m in backbone.named_modules() if n and any(re.fullmatch(t, n) for t in targets)]
        if not named:
            raise UserError(f"adapter targets {targets} match no module of the backbone")
        for name, module in named:
            if not (hasattr(module, "prefix") or _takes_projections(module)):
                raise UserError(f"prefix tuning: {name} ({type(module).__name__}) is not an attention layer with "
                                "key and value projections or a prefix slot")
        self.layer_names, self.layers = [n for n, _ in named], [m for _, m in named]
        if len(widths := {_width(m) for m in self.layers}) > 1:
            raise UserError(f"prefix tuning: the attention layers differ in width ({sorted(widths)})")
        self.dim = widths.pop()
        for layer in self.layers:
            if not hasattr(layer, "prefix"):
                layer.key, layer.value = PrefixedProjection(layer.key), PrefixedProjection(layer.value)
        self.encoders = nn.ModuleDict()
        backbone.prefix_encoders = self.encoders  # in the backbone's module tree: moved and saved with it
        self.device = next(backbone.parameters()).device

    def add(self, key: str) -> None:
        if key not in self.encoders:
            self.encoders[key] = PrefixEncoder(len(self.layers), self.dim, self.cfg).to(self.device)

    def keys(self) -> list[str]:
        return list(self.encoders)

    def parameters(self, key: str) -> Iterator[nn.Parameter]:
        return self.encoders[key].parameters()

    def task_state(self, key: str) -> dict[str, torch.Tensor]:
        return self.encoders[key].state_dict()

    def load_task_state(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        self.add(key)
        copy_state(self.task_state(key), tensors, f"prefix {key}")

    def remove(self, key: str) -> None:
        del self.encoders[key]

    def merge(self, key: str) -> None:
        raise UserError("prefix tuning adds attention positions: it cannot be merged into the base weights; serve it routed")

    def _prefixes(self, route: Route, batch: int) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """Every layer's prefix for each sample, (layers, 2, B, P, dim), and the additive mask of the
        prefix positions (B, P), None when every sample has one; None when no sample has one."""
        encoded = {key: self.encoders[key]() for key, _ in route if key in self.encoders}
        if not encoded:
            return None
        if len(route) == 1:
            kv = encoded[route[0][0]]
            return kv.unsqueeze(2).expand(-1, -1, batch, -1, -1), None
        some = next(iter(encoded.values()))
        kv = some.new_zeros(batch, *some.shape)  # sample-major while filling
        have = torch.zeros(batch, dtype=torch.bool, device=some.device)
        for key, idx in route:
            if key in encoded:
                kv = kv.index_put((idx,), encoded[key].expand(len(idx), *some.shape))
                have[idx] = True
        kv = kv.movedim(0, 2)
        if have.all():
            return kv, None
        pad = torch.zeros(batch, kv.shape[3], device=kv.device).masked_fill(~have[:, None], torch.finfo(kv.dtype).min)
        return kv, pad

    @contextmanager
    def routed(self, route: Route) -> Iterator[None]:
        """Each attention layer prepends the route's prefixes for the forwards inside the block (made
        once per block, for its batch size); afterwards the layers are bare and the hooks gone."""
        made: dict[int, tuple | None] = {}

        def prefixes(batch: int):
            if batch not in made:
                made[batch] = self._prefixes(route, batch)
            return made[batch]

        def set_projections(layer, i):  # a pre-hook on a Hugging Face attention module
            def hook(module, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                got = prefixes(len(hidden))
                if got is None:
                    layer.key.prefix = layer.value.prefix = None
                    return None
                (kv, pad), mask = got, kwargs.get("attention_mask")
                layer.key.prefix, layer.value.prefix = kv[i, 0], kv[i, 1]
                if mask is None and pad is None:
                    return None
                return args, {**kwargs, "attention_mask": _over_prefixes(mask, pad, hidden, kv.shape[3])}
            return hook

        hooks = []
        if route is not NO_ROUTE and len(route):
            for i, layer in enumerate(self.layers):
                if hasattr(layer, "prefix"):
                    layer.prefix = lambda batch, i=i: None if (got := prefixes(batch)) is None else (got[0][i, 0], got[0][i, 1], got[1])
                else:
                    hooks.append(layer.register_forward_pre_hook(set_projections(layer, i), with_kwargs=True))
        try:
            yield
        finally:
            for layer in self.layers:
                if hasattr(layer, "prefix"):
                    layer.prefix = None
                else:
                    layer.key.prefix = layer.value.prefix = None
            for hook in hooks:
                hook.remove()
