"""From-scratch backbones for image streams. Each exposes ``family`` (its injection preset),
``pretrained``, ``inputs`` (what it takes) and ``out_features``, and maps (B, C, H, W) images (float, or
uint8 in [0, 255], scaled to [0, 1] first) to (B, out_features) features. ``quantize`` (nf4 | int8): its
Linear weights are stored quantized once it stops training (after the first task:
``AdaptedModel.quantize_frozen_backbone``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cl_adapters.errors import UserError
from cl_adapters.models.contract import unit_float
from cl_adapters.models.quantize import check_kind


def check_dropout(dropout, null: str | None = None) -> float | None:
    """``model.dropout``, a probability in [0, 1): at 1 every activation is zeroed and nothing trains, and
    a bool is a typo that torch would take as 0 or 1. ``null``: what null means, where it is allowed."""
    if dropout is None and null is not None:
        return None
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise UserError(f"model.dropout must be in [0, 1){f' or null ({null})' if null else ''}, got {dropout!r}")
    return dropout


class MLPBlock(nn.Module):
    def __init__(self, d_in: int, d_out: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(F.relu(self.fc(x)))


class MLP(nn.Module):
    family = "mlp"
    pretrained = False
    inputs = "float"

    def __init__(self, input_shape: tuple[int, ...], hidden: tuple[int, ...] = (256, 256), dropout: float = 0.0,
                 quantize: str | None = None):
        super().__init__()
        self.quantize, self.quantized = check_kind(quantize), None
        dropout = check_dropout(dropout)
        if not hidden or min(hidden) <= 0:
            raise UserError(f"model.hidden must be positive widths, got {list(hidden)}")
        widths = [math.prod(input_shape), *hidden]
        self.layers = nn.ModuleList(MLPBlock(a, b, dropout) for a, b in zip(widths, widths[1:]))
        self.out_features = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = unit_float(x).flatten(1)
        for layer in self.layers:
            x = layer(x)
        return x


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.dim, self.heads, self.dropout = dim, heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)  # the attention output projection (Houlsby's first site)
        self.prefix = None  # prefix tuning, for one forward: batch -> (keys, values, mask) or None

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mask = None
        if self.prefix is not None and (got := self.prefix(b)) is not None:
            keys, values, pad = got

            def heads(t):
                return t.view(b, -1, self.heads, d // self.heads).transpose(1, 2)

            k, v = torch.cat([heads(keys), k], dim=2), torch.cat([heads(values), v], dim=2)
            mask = None if pad is None else F.pad(pad, (0, n))[:, None, None, :]
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)  # the FFN output (Pfeiffer's site, Houlsby's second)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.fc2(self.dropout(F.gelu(self.fc1(x))))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + ffn(ln(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.ffn = FeedForward(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class PatchTransformer(nn.Module):
    """A small ViT: non-overlapping patches, a CLS token, learned positions, pre-LN blocks."""

    family = "patch_transformer"
    pretrained = False
    inputs = "float"

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        patch_size: int = 4,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        quantize: str | None = None,
    ):
        super().__init__()
        self.quantize, self.quantized = check_kind(quantize), None
        dropout = check_dropout(dropout)
        if len(input_shape) != 3:
            raise UserError(f"model=patch_transformer needs (C, H, W) images, got shape {tuple(input_shape)}")
        c, h, w = input_shape
        if patch_size <= 0 or h % patch_size or w % patch_size:
            raise UserError(f"model.patch_size={patch_size} must divide the image size {h}x{w}")
        for name, value in (("dim", dim), ("depth", depth), ("heads", heads)):
            if not isinstance(value, int) or value < 1:
                raise UserError(f"model.{name} must be a positive integer, got {value!r}")
        if dim % heads:
            raise UserError(f"model.dim={dim} must be divisible by model.heads={heads}")
        self.patch_size = patch_size
        n_patches = (h // patch_size) * (w // patch_size)
        self.embed = nn.Linear(c * patch_size * patch_size, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n_patches + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.out_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = F.unfold(unit_float(x), self.patch_size, stride=self.patch_size).transpose(1, 2)
        tokens = self.embed(patches)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1) + self.pos
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens[:, 0])
