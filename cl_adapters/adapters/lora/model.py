"""LoRA through peft: ``inject_adapter_in_model`` adds one named LoRA per task key; we only route.

Per-task LoRAs are peft's named adapters (``lora_A[key]``, ``lora_B[key]``). A single-task batch
activates its task's LoRA on every layer; a mixed batch hands peft ``adapter_names`` per sample.
A key without a LoRA passes through the base layer unchanged (peft skips unknown names).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from cl_adapters.adapters.route import Route
from cl_adapters.errors import UserError


class LoraAdapters:
    """The LoRAs injected (by peft) into one backbone, one named adapter per task key."""

    supports_fusion = False  # a LoRA's output is not a bottleneck's: AdapterFusion does not apply

    def __init__(self, backbone: nn.Module, cfg):
        self.backbone = backbone
        self.peft_config = cfg.to_peft(backbone)
        self.layers: list[nn.Module] = []

    def add(self, key: str) -> None:
        from peft import inject_adapter_in_model
        from peft.tuners.lora import LoraLayer

        if key in self.keys():
            return
        with warnings.catch_warnings():  # "Already found a peft_config attribute": expected from the 2nd task on
            warnings.simplefilter("ignore")
            try:
                inject_adapter_in_model(self.peft_config, self.backbone, adapter_name=key)
            except ValueError as e:  # peft: no target matched / a target is not a supported layer
                raise UserError(f"adapter (LoRA): {' '.join(str(e).split())}") from e
        if not self.layers:
            self.layers = [m for m in self.backbone.modules() if isinstance(m, LoraLayer)]
        for layer in self.layers:
            layer._active_adapter = []  # bare until a forward is routed

    def keys(self) -> list[str]:
        return list(self.layers[0].lora_A) if self.layers else []

    def parameters(self, key: str) -> Iterator[nn.Parameter]:
        for layer in self.layers:
            yield from layer.lora_A[key].parameters()
            yield from layer.lora_B[key].parameters()

    @contextmanager
    def routed(self, route: Route) -> Iterator[None]:
        """``route`` for the forwards inside the block: one task's LoRA active on every layer, or peft's
        per-sample ``adapter_names`` passed by a pre-hook; afterwards no LoRA is active and the hooks
        are gone (a direct forward is the bare backbone)."""
        hooks = []
        if len(route) == 1:
            for layer in self.layers:
                # set the active adapter directly: peft's set_adapter() would also flip requires_grad
                layer._active_adapter = [route[0][0]]
        else:
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
