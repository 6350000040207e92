"""Compacter adapters: bottleneck adapters (same layers, routing and fusion) with PHM projections and
one rule per task key shared by all of that task's layers, as in the paper and AdapterHub."""

from __future__ import annotations

import torch
from torch import nn

from cl_adapters.adapters.bottleneck import Bottleneck, BottleneckAdapters
from cl_adapters.adapters.compacter.layer import PHMLinear
from cl_adapters.errors import UserError

RULE_INIT_STD = 1e-4  # AdapterHub's phm_init_range


class CompacterAdapters(BottleneckAdapters):
    """One Compacter per task key in every wrapped layer; task ``key``'s rule is registered once, on
    its adapter in the first layer (``rule``), and read by its PHM layers everywhere."""

    def __init__(self, backbone: nn.Module, cfg):
        super().__init__(backbone, cfg)
        for name, layer in zip(self.layer_names, self.layers):
            if layer.adapter_in % cfg.phm_dim or layer.out_dim % cfg.phm_dim:
                raise UserError(f"adapter.phm_dim={cfg.phm_dim} does not divide the widths of {name} "
                                f"({layer.adapter_in} -> {layer.out_dim})")

    def add(self, key: str) -> None:
        if key in self.keys():
            return
        n = self.cfg.phm_dim
        rule = nn.Parameter(torch.randn(n, n, n, device=self.layers[0].device) * RULE_INIT_STD)
        for i, layer in enumerate(self.layers):
            down = PHMLinear(layer.adapter_in, self.cfg.r, rule, self.cfg.phm_rank)
            up = PHMLinear(self.cfg.r, layer.out_dim, rule, self.cfg.phm_rank, zero=True)
            adapter = Bottleneck(layer.adapter_in, layer.out_dim, self.cfg, down=down, up=up)
            if i == 0:
                adapter.register_parameter("rule", rule)
            layer.add(key, adapter)
