"""The bottleneck adapter and the wrapper that holds one per task around a backbone module."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from cl_adapters.adapters.bottleneck.fusion import Fusion, FusionConfig
from cl_adapters.adapters.route import NO_ROUTE, Route, stacked_keys

if TYPE_CHECKING:  # annotations only: config.py imports this module to build it
    from cl_adapters.adapters.bottleneck.config import AdapterConfig


class Bottleneck(nn.Module):
    """``scaling * up(act(down(x)))``: the adapter's contribution, added by the caller.

    ``down`` and ``up`` are any modules that act like ``nn.Linear`` (``weight``, ``bias``, ``in_features``):
    plain Linear layers by default, structured ones for other methods (Compacter's PHM layers). Fusion
    and the fused add read only those, so any such adapter fuses.
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: AdapterConfig, down: nn.Module | None = None,
                 up: nn.Module | None = None):
        super().__init__()
        self.down = down if down is not None else nn.Linear(in_dim, cfg.r)
        if up is None:
            up = nn.Linear(cfg.r, out_dim)
            nn.init.zeros_(up.weight)  # identity at init
            nn.init.zeros_(up.bias)
        self.up = up
        self.act = getattr(F, cfg.activation)
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()
        self.scaling = cfg.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.dropout(self.act(self.down(x))))
        return y if self.scaling == 1.0 else y * self.scaling  # skip a full-size pass when it is a no-op

    def add_to(self, out: torch.Tensor, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """``out + forward(x)`` in fewer full-size memory passes: the up-projection accumulates (one
        GEMM with beta=1) into ``out + bias`` instead of writing its own output and adding it. With
        ``inplace`` (no autograd, ``out`` owned by the caller) it accumulates into ``out`` itself, the
        bias riding along as an extra column of ones: no full-size pass besides the GEMM."""
        if torch.is_autocast_enabled(out.device.type):  # addmm_ is not autocast: the plain form
            return out + self.forward(x)
        h = self.dropout(self.act(self.down(x))).reshape(-1, self.up.in_features)
        if inplace:
            h = torch.cat([h, h.new_ones(len(h), 1)], dim=1)
            up = torch.cat([self.up.weight, self.up.bias[:, None]], dim=1)
            out.view(-1, out.shape[-1]).addmm_(h, up.t(), alpha=self.scaling)
            return out
        y = out + self.scaling * self.up.bias if self.scaling != 1.0 else out + self.up.bias
        y.view(-1, y.shape[-1]).addmm_(h, self.up.weight.t(), alpha=self.scaling)
        return y


def _linear_dims(module: nn.Module) -> tuple[int, int]:
    """(input, output) width of a module: its first and last Linear layers."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TypeError(f"cannot infer adapter width: {type(module).__name__} has no nn.Linear")
    return linears[0].in_features, linears[-1].out_features


class AdapterLayer(nn.Module):
    """Wraps ``base``; each sample passes through its own task's adapter.

    serial:   base(x) + adapter(base(x))   (Houlsby, Pfeiffer: on a sublayer's output)
    parallel: base(x) + adapter(x)         (beside the FFN; with ``source``, x is that module's
                                            input, e.g. BERT's intermediate, and base its output dense)
    A task with a fusion (``fusions[task]``) gets its learned mixture of the adapters it fuses instead.
    Tasks without an adapter (e.g. the first task of a from-scratch backbone) pass unchanged.
    """

    def __init__(self, base: nn.Module, mode: str, source: nn.Module | None = None):
        super().__init__()
        self.base = base
        self.mode = mode
        self.in_dim, self.out_dim = _linear_dims(base)
        self.adapters = nn.ModuleDict()
        self.fusions = nn.ModuleDict()
        self.fresh_output = isinstance(base, nn.Linear)  # its output is a new tensor no one else holds
        self.route: Route = NO_ROUTE  # set for one forward by BottleneckAdapters.routed
        self._source_input: torch.Tensor | None = None
        self.sources = (source,) if source is not None else ()  # a tuple: not a submodule of this layer
        if source is not None:  # parallel beside a block that is not one module (BERT's FFN)
            self.in_dim = _linear_dims(source)[0]

    def keep_source_input(self, module, args):
        """A forward pre-hook on the source module, registered for one routed forward."""
        self._source_input = args[0]

    def clear(self) -> None:
        self.route, self._source_input = NO_ROUTE, None

    @property
    def adapter_in(self) -> int:
        """An adapter's input width: the base's input beside it (parallel), its output after it (serial)."""
        return self.in_dim if self.mode == "parallel" else self.out_dim

    @property
    def device(self) -> torch.device:
        return next(self.base.parameters()).device

    def add(self, task: str, adapter: nn.Module) -> None:
        self.adapters[task] = adapter.to(self.device)

    def add_fusion(self, task: str, keys: list[str], cfg: FusionConfig) -> None:
        self.fusions[task] = Fusion(self.out_dim, keys, cfg).to(self.device)

    def _adapted(self, task, out: torch.Tensor, src: torch.Tensor, inplace: bool) -> torch.Tensor:
        """``out`` + task's adapter, or its fusion of adapters; a ``Stack``'s adapters one after another
        (serial: each on what the one before produced; parallel: each beside the block)."""
        if not isinstance(task, str):  # the adapters themselves, never a task's fusion
            for key in stacked_keys(task):
                if key in self.adapters:
                    out = self.adapters[key].add_to(out, out if self.mode == "serial" else src, inplace=inplace)
            return out
        if task in self.fusions:
            fusion = self.fusions[task]
            adapters = [self.adapters[k] for k in fusion.keys]
            return fusion(out, None if self.mode == "serial" else src, adapters, inplace=inplace)
        return self.adapters[task].add_to(out, src, inplace=inplace)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.base(x, *args, **kwargs)
        if self.mode == "serial":
            src = out
        else:
            src = x if self._source_input is None else self._source_input
            self._source_input = None
        routed = [(task, idx) for task, idx in self.route if any(k in self.adapters for k in stacked_keys(task))]
        if not routed:
            return out
        if len(self.route) == 1:  # single-task batch: no gather/scatter
            # a Linear's output is fresh, so without autograd the adapter can write into it
            inplace = self.fresh_output and not torch.is_grad_enabled() and not torch.is_autocast_enabled(out.device.type)
            return self._adapted(routed[0][0], out, src, inplace)
        mixed = out
        for task, idx in routed:
            mixed = mixed.index_put((idx,), self._adapted(task, out[idx], src[idx], inplace=False).to(mixed.dtype))
        return mixed
