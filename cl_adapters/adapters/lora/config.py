"""LoRA hyper-parameters (PEFT style: a dataclass that checks itself), turned into peft's own config."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from cl_adapters.adapters.base import check_shared_fields
from cl_adapters.adapters.lora.model import LoraAdapters
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

    def attach(self, backbone: nn.Module):
        """Inject into ``backbone`` (peft); the returned set grows one LoRA per task key."""
        return LoraAdapters(backbone, self)
