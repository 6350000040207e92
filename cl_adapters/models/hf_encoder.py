"""Pretrained Hugging Face encoders (BERT, RoBERTa, MiniLM, DistilBERT, ...) as backbones.

Inputs are right-padded token ids (B, L); the attention mask is ``ids != pad``, and each batch is
cut to its longest sequence, so short texts do not pay for ``max_length``. ``quantize`` (nf4 | int8)
stores the pretrained Linear weights quantized (``quantize.py``); such a base never trains. ``dropout``
sets every dropout probability of the encoder (null: the checkpoint's own): 0 is a method choice that
makes a frozen encoder's training steps cheaper (no dropout masks to draw) and changes what adapters learn.
"""

from __future__ import annotations

import torch
from torch import nn

from cl_adapters.errors import UserError
from cl_adapters.hub import default_encoder_path, from_pretrained
from cl_adapters.models.backbones import check_dropout
from cl_adapters.models.quantize import check_kind, quantize_pretrained

POOLINGS = ("mean", "cls")


def set_dropout(config, dropout: float | None):
    """``config`` with every dropout probability of the architecture (hidden, attention, ...) set to ``dropout``
    (None: left as the checkpoint has them)."""
    if dropout is not None:
        for name, value in list(vars(config).items()):
            if "dropout" in name and isinstance(value, float):
                setattr(config, name, float(dropout))
    return config


class HFEncoder(nn.Module):
    pretrained = True
    inputs = "token ids"

    def __init__(self, input_shape: tuple[int, ...] | None = None, name_or_path: str | None = None, pooling: str = "mean",
                 quantize: str | None = None, dropout: float | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if pooling not in POOLINGS:
            raise UserError(f"model.pooling must be one of {POOLINGS}, got {pooling!r}")
        check_dropout(dropout, null="the checkpoint's own")
        check_kind(quantize)
        self.name_or_path = name_or_path or default_encoder_path()
        try:
            config = set_dropout(from_pretrained(AutoConfig, self.name_or_path), dropout)
            self.model = from_pretrained(AutoModel, self.name_or_path, config=config)
        except (OSError, ValueError) as e:  # a missing folder, a bad id, or a hub id with no network
            raise UserError(f"model.name_or_path={self.name_or_path!r} could not be loaded: {str(e).splitlines()[0]}") from e
        config = self.model.config
        self.family = config.model_type
        self.pooling = pooling
        self.pad_token_id = config.pad_token_id if config.pad_token_id is not None else 0
        self.out_features = config.hidden_size
        quantize_pretrained(self, quantize)  # a pretrained base is quantized as it loads

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = input_ids != self.pad_token_id
        length = int(mask.sum(1).max())
        input_ids, mask = input_ids[:, :length], mask[:, :length]
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
