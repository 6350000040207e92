"""Prefix tuning's adapter set: one ``PrefixEncoder`` per task key, and the attention layers that
prepend, for one routed forward, each sample's task prefix to their keys and values.

Two kinds of attention layer take prefixes:
- an attention module of ours with a ``prefix`` slot (the patch transformer's), which does it itself;
- any self-attention whose keys and values are Linear projections of its input: separate ``key``/``value``
  (BERT, RoBERTa, MiniLM, ViT, DeiT, DINOv2) or ``k_proj``/``v_proj`` (CLIP), or one fused ``qkv`` (timm's ViT:
  [queries | keys | values]). For a routed forward a pre-hook puts P placeholder tokens in front of its input,
  the wrapped projections give those the prefix keys and values, a mask argument (``attention_mask``,
  ``attn_mask``) is widened to let every token see them, and a forward hook drops the P placeholder rows from
  its output. The tokens attend to the prefixes as to P more tokens (the placeholders' P query rows are
  computed and dropped); the attention's own code is untouched, whatever it reshapes by (BERT and ViT by -1,
  CLIP by the sequence length, timm by the input's N).
A sample whose task has no prefix (in a mixed batch) attends as the bare model does: zero prefixes masked out
(the slot), or its rows computed again by the bare layer (a hooked layer, which may take no mask: ViT's).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from cl_adapters.adapters.base import AdapterSet, copy_state
from cl_adapters.adapters.presets import preset
from cl_adapters.adapters.route import NO_ROUTE, Route
from cl_adapters.errors import UserError

KEY_VALUE = (("key", "value"), ("k_proj", "v_proj"))  # separate key and value projections
MASKS = ("attention_mask", "attn_mask", "causal_attention_mask")  # mask arguments a hooked layer may take


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
    """A key/value projection whose output's first P rows (the placeholder tokens') are ``rows``, while set."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.rows: torch.Tensor | None = None  # (B, P, out_features), set for one forward of its layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rows is None:
            return self.base(x)
        out = self.base(x[:, self.rows.shape[1]:])
        return torch.cat([self.rows.to(out.dtype), out], dim=1)


def projections(module: nn.Module) -> list[tuple[str, str]]:
    """(attribute, what its output holds: k, v or qkv) of the projections making ``module``'s keys and values."""
    for key, value in KEY_VALUE:
        if isinstance(getattr(module, key, None), nn.Module) and isinstance(getattr(module, value, None), nn.Module):
            return [(key, "k"), (value, "v")]
    return [("qkv", "qkv")] if isinstance(getattr(module, "qkv", None), nn.Module) else []


def _width(module: nn.Module) -> int:
    if hasattr(module, "prefix"):
        return module.dim
    (name, role), *_ = projections(module)
    return getattr(module, name).out_features // (3 if role == "qkv" else 1)


def _widened(mask: torch.Tensor, p: int) -> torch.Tensor:
    """``mask`` (B, keys) or (B, heads, queries or 1, keys) over p more tokens in front, open to all (additive 0,
    or True)."""
    rows = p if mask.dim() >= 3 and mask.shape[-2] > 1 else 0
    if mask.dtype == torch.bool:
        return F.pad(mask.to(torch.uint8), (p, 0, rows, 0), value=1).bool()
    return F.pad(mask, (p, 0, rows, 0), value=0.0)


class PrefixAdapters(AdapterSet):
    """The prefixes of one backbone: task ``key``'s encoder is ``backbone.prefix_encoders[key]``."""

    capabilities = frozenset()  # not stack: stacked prefixes would differ in length between the groups of a batch

    def __init__(self, backbone: nn.Module, cfg):
        self.cfg = cfg
        targets = cfg.targets if cfg.targets is not None else preset(backbone, "prefix")
        named = [(n, m) for n, m in backbone.named_modules() if n and any(re.fullmatch(t, n) for t in targets)]
        if not named:
            raise UserError(f"adapter targets {targets} match no module of the backbone")
        for name, module in named:
            if not (hasattr(module, "prefix") or projections(module)):
                raise UserError(f"prefix tuning: {name} ({type(module).__name__}) is not an attention layer with "
                                "key and value projections or a prefix slot")
        self.layer_names, self.layers = [n for n, _ in named], [m for _, m in named]
        if len(widths := {_width(m) for m in self.layers}) > 1:
            raise UserError(f"prefix tuning: the attention layers differ in width ({sorted(widths)})")
        self.dim = widths.pop()
        self.wrapped: list[list[tuple[PrefixedProjection, str]]] = []  # per layer: its projections, what they hold
        for layer in self.layers:
            wrapped = []
            for name, role in [] if hasattr(layer, "prefix") else projections(layer):
                setattr(layer, name, PrefixedProjection(getattr(layer, name)))
                wrapped.append((getattr(layer, name), role))
            self.wrapped.append(wrapped)
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
        raise self._unsupported("merge", "prefix tuning adds attention positions: it cannot be merged into the base "
                                         "weights; serve it routed")

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
        live: dict[int, tuple] = {}  # a hooked layer in its forward -> (P, pad, its original args and kwargs)
        bare = [False]  # while a layer computes its samples without a prefix again

        def prefixes(batch: int):
            if batch not in made:
                made[batch] = self._prefixes(route, batch)
            return made[batch]

        def enter(i: int):  # a pre-hook: P placeholder tokens in front, their keys and values the prefixes
            def hook(module, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                if bare[0] or (got := prefixes(len(hidden))) is None:
                    return None
                (kv, pad), p = got, got[0].shape[3]
                keys, values = kv[i, 0], kv[i, 1]
                for projection, role in self.wrapped[i]:  # a fused qkv: no query rows to give (zeros)
                    projection.rows = keys if role == "k" else values if role == "v" else torch.cat(
                        [torch.zeros_like(keys), keys, values], dim=-1)
                live[i] = (p, pad, args, kwargs)
                longer = torch.cat([hidden.new_zeros(len(hidden), p, hidden.shape[-1]), hidden], dim=1)
                kwargs = {**kwargs, **{n: _widened(kwargs[n], p) for n in MASKS if torch.is_tensor(kwargs.get(n))}}
                if args:
                    return (longer, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": longer}
            return hook

        def leave(i: int):  # a forward hook: the placeholder rows dropped; samples without a prefix made bare
            def hook(module, args, kwargs, output):
                if bare[0] or i not in live:
                    return None
                p, pad, args, kwargs = live.pop(i)
                for projection, _ in self.wrapped[i]:
                    projection.rows = None
                first = (output[0] if isinstance(output, tuple) else output)[:, p:]
                if pad is not None:
                    first = without_prefix(module, first, pad, args, kwargs)
                return (first, *output[1:]) if isinstance(output, tuple) else first
            return hook

        def without_prefix(module, out, pad, args, kwargs):
            """``out`` with the rows of the samples that have no prefix (``pad`` closes theirs) as the bare layer
            computes them (the layer may take no mask to close them with)."""
            hidden = args[0] if args else kwargs["hidden_states"]
            rows = (pad[:, 0] != 0).nonzero().squeeze(1)
            kwargs = {n: t[rows] if n in MASKS and torch.is_tensor(t) and len(t) == len(hidden) else t
                      for n, t in kwargs.items()}
            if args:
                args = (hidden[rows], *args[1:])
            else:
                kwargs["hidden_states"] = hidden[rows]
            bare[0] = True
            try:
                again = module(*args, **kwargs)
            finally:
                bare[0] = False
            return out.index_put((rows,), (again[0] if isinstance(again, tuple) else again).to(out.dtype))

        hooks = []
        if route is not NO_ROUTE and len(route):
            for i, layer in enumerate(self.layers):
                if hasattr(layer, "prefix"):
                    layer.prefix = lambda batch, i=i: None if (got := prefixes(batch)) is None else (got[0][i, 0], got[0][i, 1], got[1])
                else:
                    hooks.append(layer.register_forward_pre_hook(enter(i), with_kwargs=True))
                    hooks.append(layer.register_forward_hook(leave(i), with_kwargs=True))
        try:
            yield
        finally:
            for layer, wrapped in zip(self.layers, self.wrapped):
                if hasattr(layer, "prefix"):
                    layer.prefix = None
                for projection, _ in wrapped:
                    projection.rows = None
            for hook in hooks:
                hook.remove()
