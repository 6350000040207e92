"""Where each adapter kind goes, per backbone family: one table and one lookup for every method
(``adapter.targets`` overrides it). The family is the backbone's declared ``family``.

- houlsby: after the attention output projection and after the FFN output; pfeiffer: after the FFN
  output only (both before the residual add); parallel: beside the whole FFN;
- lora: the attention query and value projections (Hu et al. 2022; the fused qkv of the patch transformer
  and timm's ViT, every hidden layer of the MLP);
- prefix: the self-attention modules, whose keys and values get the prefixes (none in the MLP or
  DistilBERT, whose attention takes none, nor in BEiT, whose relative position bias has no room for them).

Hugging Face ViT, DeiT and BEiT name their layers as BERT does, with the self-attention as
``attention.attention`` (BERT: ``attention.self``); DINOv2 too, with ``mlp.fc1/fc2`` (SwiGLU:
``weights_in/weights_out``) for the FFN; the CLIP vision tower: ``encoder.layers.N.self_attn.{q,k,v,out}_proj``
and ``mlp.fc1/fc2``; timm's ViT: ``blocks.N.attn.{qkv,proj}`` and ``blocks.N.mlp.fc1/fc2``. Where a layer
scale follows the FFN (DINOv2's ``layer_scale2``, timm's ``ls2``), an adapter on ``fc2`` sits before it, and
its output is scaled with the FFN's.

A target is a module-name regex, or (regex, source) for a parallel adapter whose input is another
module's input: ``source`` is the match expanded (``\\1`` = the layer prefix), e.g. BERT's FFN is
``intermediate`` + ``output.dense``, so the adapter reads the intermediate's input.
"""

from __future__ import annotations

from torch import nn

from cl_adapters.errors import UserError

Target = str | tuple[str, str]
_BERT = r"(.*encoder\.layer\.\d+)"  # BERT, RoBERTa, MiniLM, ELECTRA, XLM-R, ViT, DeiT, BEiT, DINOv2
_DISTIL = r".*transformer\.layer\.\d+"
_CLIP = r".*encoder\.layers\.\d+"
_BLOCK = r".*blocks\.\d+"  # timm's ViT (held as ``model``)
_BERT_LIKE = {
    "houlsby": [_BERT + r"\.attention\.output\.dense", _BERT + r"\.output\.dense"],
    "pfeiffer": [_BERT + r"\.output\.dense"],
    "parallel": [(_BERT + r"\.output\.dense", r"\1.intermediate")],
    "lora": [r".*\.attention\.(self|attention)\.(query|value)"],
    "prefix": [_BERT + r"\.attention\.(self|attention)"],
}
_FFN = _BERT + r"\.mlp\.(fc2|weights_out)"
_DINOV2 = {
    "houlsby": [_BERT + r"\.attention\.output\.dense", _FFN],
    "pfeiffer": [_FFN],
    "parallel": [_BERT + r"\.mlp"],
    "lora": _BERT_LIKE["lora"],
    "prefix": _BERT_LIKE["prefix"],
}
PRESETS: dict[str, dict[str, list[Target]]] = {
    "mlp": {
        "houlsby": [r"layers\.\d+"],
        "pfeiffer": [r"layers\.\d+"],
        "parallel": [r"layers\.\d+"],
        "lora": [r"layers\.\d+\.fc"],
    },
    "patch_transformer": {
        "houlsby": [r"blocks\.\d+\.attn\.proj", r"blocks\.\d+\.ffn\.fc2"],
        "pfeiffer": [r"blocks\.\d+\.ffn\.fc2"],
        "parallel": [r"blocks\.\d+\.ffn"],
        "lora": [r"blocks\.\d+\.attn\.qkv"],
        "prefix": [r"blocks\.\d+\.attn"],
    },
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "electra", "vit", "deit"), _BERT_LIKE),
    "beit": {kind: targets for kind, targets in _BERT_LIKE.items() if kind != "prefix"},
    **dict.fromkeys(("dinov2", "dinov2_with_registers"), _DINOV2),
    "clip_vision_model": {
        "houlsby": [_CLIP + r"\.self_attn\.out_proj", _CLIP + r"\.mlp\.fc2"],
        "pfeiffer": [_CLIP + r"\.mlp\.fc2"],
        "parallel": [_CLIP + r"\.mlp"],
        "lora": [_CLIP + r"\.self_attn\.(q_proj|v_proj)"],
        "prefix": [_CLIP + r"\.self_attn"],
    },
    "timm_vit": {
        "houlsby": [_BLOCK + r"\.attn\.proj", _BLOCK + r"\.mlp\.fc2"],
        "pfeiffer": [_BLOCK + r"\.mlp\.fc2"],
        "parallel": [_BLOCK + r"\.mlp"],
        "lora": [_BLOCK + r"\.attn\.qkv"],
        "prefix": [_BLOCK + r"\.attn"],
    },
    "distilbert": {
        "houlsby": [_DISTIL + r"\.attention\.out_lin", _DISTIL + r"\.ffn\.lin2"],
        "pfeiffer": [_DISTIL + r"\.ffn\.lin2"],
        "parallel": [_DISTIL + r"\.ffn"],
        "lora": [r".*\.attention\.(q_lin|v_lin)"],
    },
}


def preset(backbone: nn.Module, kind: str) -> list[Target]:
    """The targets of adapter ``kind`` (a placement, or ``lora``) for the backbone's family."""
    family = backbone.family
    if not PRESETS.get(family, {}).get(kind):
        having = sorted(f for f, kinds in PRESETS.items() if kind in kinds)
        raise UserError(f"no {kind} preset for backbone family {family!r}: set adapter.targets to module-name regexes "
                        f"(families with {kind} presets: {having})")
    return PRESETS[family][kind]
