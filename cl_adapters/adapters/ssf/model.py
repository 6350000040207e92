"""SSF's adapter set: every targeted layer wrapped in an ``SSFLayer``, one (scale, shift) pair per task key.

Faithful to the authors' code (github.com/dongzelian/SSF, ``models/vision_transformer.py`` at e94e0e7):
``ssf_ada`` (l. 388-395) is ``x * scale + shift`` over the last dimension, or dimension 1 of a conv map;
``init_ssf_scale_shift`` (l. 378-385) makes one pair per site; the sites are the output of ``qkv`` and
``proj`` (``Attention``, l. 190-211), of ``fc1`` and ``fc2`` (``Mlp``, l. 152-166), of ``norm1`` and
``norm2`` (``Block``, l. 246-255), of the patch embedding's conv and norm (``PatchEmbed``, l. 350-369) and of
the final ``norm`` (``VisionTransformer``, l. 458-459, 532-533). APER (github.com/zhoudw-zdw/RevisitingCIL,
``convs/vision_transformer_ssf.py``, the same lines; ``models/aper_ssf.py`` l. 94-106) trains them with the
head on the first task only, then fits prototypes.

Deviations, and why:
- The sites are found by type, not written into each architecture: every ``nn.Linear``, ``nn.LayerNorm``
  and ``nn.Conv2d`` of the backbone (``adapter.targets`` narrows them), except a model's own output heads
  that our backbones never call (BERT's and ViT's ``pooler``, CLIP's ``post_layernorm``, timm's
  ``fc_norm``/``head``): on a ViT these are exactly the paper's sites; separate query/key/value projections
  (BERT) get three pairs of d where a fused ``qkv`` gets one of 3d, the same parameters.
- Init: scale exactly 1 and shift exactly 0 (``adapter.init_std=0``), so a new task's SSF is the identity,
  as every method's adapter is at ``add``; the paper jitters them, N(1, 0.02) and N(0, 0.02):
  ``adapter.init_std=0.02``.
- One pair per task, routed per sample (APER tunes one pair on the first task only).
- Capabilities: ``stack`` (pairs compose to a pair) and ``merge`` (the paper's re-parameterization, Sec. 3.3:
  a pair folds into the preceding layer's weight and bias). Not ``fusion``: AdapterFusion attends over
  adapters' additive contributions beside h; SSF has none, it rescales the feature itself at every site
  (norms and qkv included), where a per-site attention of d x d would dwarf the 2d parameters it mixes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from cl_adapters.adapters.base import LayerwiseAdapters
from cl_adapters.adapters.route import NO_ROUTE, Route, stacked_keys
from cl_adapters.adapters.ssf.layer import KINDS, SSFLayer
from cl_adapters.errors import UserError

OUTPUT_HEADS = re.compile(r"(.*\.)?(pooler|post_layernorm|fc_norm|head)(\..*)?")  # off the features' path


def targets(backbone: nn.Module, patterns: list[str] | None) -> dict[str, nn.Module]:
    """{name: module} to wrap, in module order: ``patterns``' full matches, or every layer of ``KINDS``."""
    found = {}
    for name, module in backbone.named_modules():
        if not name:
            continue
        if patterns is None:
            if isinstance(module, KINDS) and not OUTPUT_HEADS.fullmatch(name):
                found[name] = module
        elif any(re.fullmatch(p, name) for p in patterns):
            found[name] = module
    if not found:
        raise UserError(f"adapter.targets {patterns} match no module of the backbone" if patterns is not None else
                        "SSF found no Linear, LayerNorm or Conv2d layer in the backbone: set adapter.targets")
    return found


class SSFAdapters(LayerwiseAdapters):
    """The SSF pairs of one backbone: task ``key``'s pair at layer i is ``layers[i].ssf[key]``."""

    capabilities = frozenset({"stack", "merge"})
    task_modules = "ssf"

    def __init__(self, backbone: nn.Module, cfg):
        self.cfg = cfg
        named = targets(backbone, cfg.targets)
        self.layer_names, self.layers = list(named), []
        for name, module in named.items():
            layer = SSFLayer(name, module)
            parent, _, child = name.rpartition(".")
            setattr(backbone.get_submodule(parent), child, layer)
            self.layers.append(layer)
        self.merged: str | None = None  # the key folded into the base weights (merge)

    def add(self, key: str) -> None:
        if key not in self.keys():
            for layer in self.layers:
                layer.add(key, self.cfg.init_std)

    def merge(self, key: str) -> None:
        """Fold ``key``'s pairs into the wrapped layers (W <- scale W, b <- scale b + shift, per output channel):
        the bare backbone is then that task's model, and a route to another task is refused."""
        if self.merged not in (None, key):
            raise UserError(f"SSF {self.merged} is already merged into the base weights; cannot merge {key} too")
        if self.merged == key:
            return
        for name, layer in zip(self.layer_names, self.layers):  # every layer checked before any changes
            weight, bias = getattr(layer.base, "weight", None), getattr(layer.base, "bias", None)
            if not all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in (weight, bias)):
                raise UserError(f"SSF cannot merge into {name}: it needs a float weight and bias (quantized, or "
                                "without a bias or affine); serve the task routed")
        with torch.no_grad():
            for layer in self.layers:
                pair, weight, bias = layer.ssf[key], layer.base.weight, layer.base.bias
                weight.mul_(pair.scale.reshape(-1, *[1] * (weight.dim() - 1)))
                bias.mul_(pair.scale).add_(pair.shift)
        self.merged = key

    @contextmanager
    def routed(self, route: Route) -> Iterator[None]:
        """``route`` in every wrapped layer for the forwards inside the block; afterwards the layers are bare."""
        if self.merged is not None:  # the base weights are the merged task's: nothing to route
            if others := sorted({k for key, _ in route for k in stacked_keys(key)} - {self.merged}):
                raise UserError(f"SSF {self.merged} is merged into the base weights: cannot route to tasks {others}")
            route = NO_ROUTE
        for layer in self.layers:
            layer.route = route
        try:
            yield
        finally:
            for layer in self.layers:
                layer.route = NO_ROUTE
