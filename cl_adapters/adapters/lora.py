"""LoRA through peft: ``inject_adapter_in_model`` adds one named LoRA per task key; we only route.

Per-task LoRAs are peft's named adapters (``lora_A[key]``, ``lora_B[key]``). A single-task batch
activates its task's LoRA on every layer; a mixed batch hands peft ``adapter_names`` per sample.
A key without a LoRA passes through the base layer unchanged (peft skips unknown names).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from torch import nn

from cl_adapters.adapters.config import check_shared_fields
from cl_adapters.adapters.route import Route
from cl_adapters.adapters.presets import preset
from cl_adapters.errors import UserError

@dataclass
class LoraConfig:
    """LoRA hyper-parameters: ``W x + (alpha / r) * B A x`` on the target Linear layers, B zero-init."""

    r: int = field(default=8, metadata={"help": "rank"})
    alpha: float = field(default=16, metadata={"help": "scaling numerator (scale = alpha / r)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input"})
    targets: list[str] | None = field(
        default=None, metadata={"help": "module-name regexes; None = the backbone family's preset"}
    )

    def __post_init__(self):
        check_shared_fields(self)
        if not self.alpha > 0:
            raise UserError(f"adapter.alpha must be positive, got {self.alpha!r}")

    def to_peft(self, backbone: nn.Module):
        """The equivalent ``peft.LoraConfig`` for this backbone (targets as one full-match regex)."""
        from peft import LoraConfig as PeftLoraConfig

        targets = self.targets if self.targets is not None else preset(backbone, "lora")
        return PeftLoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules="|".join(f"(?:{t})" for t in targets),
            bias="none",
        )

    def attach(self, backbone: nn.Module) -> LoraAdapters:
        return LoraAdapters(backbone, self)


class LoraAdapters:
    """The LoRAs injected (by peft) into one backbone, one named adapter per task key."""

    supports_fusion = False  # a LoRA's output is not a bottleneck's: AdapterFusion does not apply

    def __init__(self, backbone: nn.Module, cfg: LoraConfig):
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
