"""Prefix-tuning hyper-parameters (a dataclass that checks itself)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F

from cl_adapters.adapters.base import check_shared_fields
from cl_adapters.adapters.prefix.model import PrefixAdapters
from cl_adapters.errors import UserError


@dataclass
class PrefixConfig:
    """Defaults as AdapterHub's ``PrefixTuningConfig``: 30 prefix positions, reparametrized while training
    by an MLP (``bottleneck`` wide, tanh) over 30 embeddings that outputs every layer's keys and values."""

    prefix_length: int = field(default=30, metadata={"help": "prefix positions per attention layer"})
    bottleneck: int = field(default=512, metadata={"help": "width of the reparametrizing MLP"})
    activation: str = field(default="tanh", metadata={"help": "the MLP's non-linearity (torch.nn.functional)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the prefixes"})
    targets: list[str] | None = field(
        default=None, metadata={"help": "attention-module regexes; None = the backbone family's preset"}
    )

    def __post_init__(self):
        for name in ("prefix_length", "bottleneck"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserError(f"adapter.{name} must be a positive integer, got {value!r}")
        if not hasattr(F, str(self.activation)):
            raise UserError(f"adapter.activation {self.activation!r} is not in torch.nn.functional")
        check_shared_fields(self)

    def attach(self, backbone):
        """Prepare ``backbone``'s attention layers; the returned set grows one prefix per task key."""
        return PrefixAdapters(backbone, self)
