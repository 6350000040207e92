"""Where each adapter kind goes, per backbone family: one table and one lookup for every method
(``adapter.targets`` overrides it). The family is the backbone's declared ``family``.

- houlsby: after the attention output projection and after the FFN output; pfeiffer: after the FFN
  output only (both before the residual add); parallel: beside the whole FFN;
- lora: the attention query and value projections (Hu et al. 2022; the fused qkv of the ViT here, every
  hidden layer of the MLP);
- prefix: the self-attention modules, whose keys and values get the prefixes (none in the MLP or
  DistilBERT, whose attention takes none).

A target is a module-name regex, or (regex, source) for a parallel adapter whose input is another
module's input: ``source`` is the match expanded (``\\1`` = the layer prefix), e.g. BERT's FFN is
``intermediate`` + ``output.dense``, so the adapter reads the intermediate's input.
"""

from __future__ import annotations

from torch import nn

from cl_adapters.errors import UserError

Target = str | tuple[str, str]
_BERT = r"(.*encoder\.layer\.\d+)"  # BERT, RoBERTa, MiniLM, ELECTRA, XLM-R and ViT share these names
_DISTIL = r".*transformer\.layer\.\d+"
_BERT_LIKE = {
    "houlsby": [_BERT + r"\.attention\.output\.dense", _BERT + r"\.output\.dense"],
    "pfeiffer": [_BERT + r"\.output\.dense"],
    "parallel": [(_BERT + r"\.output\.dense", r"\1.intermediate")],
    "lora": [r".*\.attention\.self\.(query|value)"],
    "prefix": [_BERT + r"\.attention\.self"],
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
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "electra", "vit"), _BERT_LIKE),
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
