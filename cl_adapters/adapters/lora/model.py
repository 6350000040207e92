"""LoRA through peft: ``inject_adapter_in_model`` adds one named LoRA per task key; we only route.

Per-task LoRAs are peft's named adapters (``lora_A[key]``, ``lora_B[key]``). A single-task batch
activates its task's LoRA on every layer; a mixed batch hands peft ``adapter_names`` per sample.
A key without a LoRA passes through the base layer unchanged (peft skips unknown names).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from cl_adapters.adapters.base import AdapterSet, copy_state
from cl_adapters.adapters.route import Route, stacked_keys
from cl_adapters.errors import UserError


class LoraAdapters(AdapterSet):
    """The LoRAs injected (by peft) into one backbone, one named adapter per task key."""

    # LoRAs are linear: stacked, they add up; merged, the base computes the task. Not fusion: a LoRA's output
    # is not a bottleneck's, AdapterFusion does not apply
    capabilities = frozenset({"stack", "merge"})

    def __init__(self, backbone: nn.Module, cfg):
        self.backbone = backbone
        self.peft_config = cfg.to_peft(backbone)
        # the targets as modules, matched now: another method attached later may rename them (a bottleneck
        # adapter wraps a block, and ``layers.0.fc`` becomes ``layers.0.base.fc``) before the first ``add``
        self.targets = [m for n, m in backbone.named_modules() if n and re.fullmatch(self.peft_config.target_modules, n)]
        self.layers: list[nn.Module] = []
        self.layer_names: list[str] = []
        self.merged: str | None = None  # the key folded into the base weights (merge)

    def add(self, key: str) -> None:
        from peft import inject_adapter_in_model
        from peft.tuners.lora import LoraLayer

        if key in self.keys():
            return
        if not self.layers and self.targets:  # their names now; from then on peft finds its LoRA layers there
            where = {id(m): n for n, m in self.backbone.named_modules()}
            self.peft_config.target_modules = [where[id(m)] for m in self.targets]
        with warnings.catch_warnings():  # "Already found a peft_config attribute": expected from the 2nd task on
            warnings.simplefilter("ignore")
            try:
                inject_adapter_in_model(self.peft_config, self.backbone, adapter_name=key)
            except ValueError as e:  # peft: no target matched / a target is not a supported layer
                raise UserError(f"adapter (LoRA): {' '.join(str(e).split())}") from e
        if not self.layers:
            named = [(n, m) for n, m in self.backbone.named_modules() if isinstance(m, LoraLayer)]
            self.layer_names, self.layers = [n for n, _ in named], [m for _, m in named]
        for layer in self.layers:
            layer._active_adapter = []  # bare until a forward is routed

    def keys(self) -> list[str]:
        return list(self.layers[0].lora_A) if self.layers else []

    def parameters(self, key: str) -> Iterator[nn.Parameter]:
        for layer in self.layers:
            yield from layer.lora_A[key].parameters()
            yield from layer.lora_B[key].parameters()

    def task_state(self, key: str) -> dict[str, torch.Tensor]:
        return {f"{name}.{part}.{k}": t for name, layer in zip(self.layer_names, self.layers)
                for part in ("lora_A", "lora_B") for k, t in getattr(layer, part)[key].state_dict().items()}

    def load_task_state(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        self.add(key)
        copy_state(self.task_state(key), tensors, f"LoRA {key}")

    def remove(self, key: str) -> None:
        for layer in self.layers:
            layer.delete_adapter(key)
            layer._active_adapter = []
        getattr(self.backbone, "peft_config", {}).pop(key, None)

    def merge(self, key: str) -> None:
        """Fold ``key``'s LoRA into the base weights (peft's merge): from then on the bare backbone is
        that task's model, and a route to any other task is refused."""
        if self.merged not in (None, key):
            raise UserError(f"LoRA {self.merged} is already merged into the base weights; cannot merge {key} too")
        if self.merged is None:
            for layer in self.layers:
                layer.merge(adapter_names=[key])
            self.merged = key

    @contextmanager
    def routed(self, route: Route) -> Iterator[None]:
        """``route`` for the forwards inside the block: one task's LoRA active on every layer, or peft's
        per-sample ``adapter_names`` passed by a pre-hook; afterwards no LoRA is active and the hooks
        are gone (a direct forward is the bare backbone)."""
        hooks = []
        if self.merged is not None:  # the base weights are the merged task's: nothing to route
            if others := sorted({key for key, _ in route} - {self.merged}):
                raise UserError(f"LoRA {self.merged} is merged into the base weights: cannot route to tasks {others}")
            yield
            return
        if len(route) == 1:
            for layer in self.layers:
                # set the active adapter directly: peft's set_adapter() would also flip requires_grad
                layer._active_adapter = list(stacked_keys(route[0][0]))
        elif len(route) > 1:  # several tasks: per-sample names (no group, NO_ROUTE: none active)
            if any(len(stacked_keys(key)) > 1 for key, _ in route):
                raise UserError("stacked LoRAs are applied to single-task batches only (peft's per-sample "
                                "adapter_names name one LoRA each)")
            names = route.per_sample()

            def pass_names(module, args, kwargs):
                return args, {**kwargs, "adapter_names": names}

            hooks = [layer.register_forward_pre_hook(pass_names, with_kwargs=True) for layer in self.layers]
        try:
            yield
        finally:
            for layer in self.layers:
                layer._active_adapter = []
            for hook in hooks:
                hook.remove()
