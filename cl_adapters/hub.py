"""The one way this project loads anything with Hugging Face's ``from_pretrained``: never with remote code.

A model folder's ``config.json`` (or ``tokenizer_config.json``) may carry an ``auto_map`` naming Python
files beside it; with ``trust_remote_code`` unset, transformers asks on stdin whether to run them, and a
"y" executes them. Every loader here passes ``trust_remote_code=False``, so such a folder is refused (a
ValueError the callers turn into one line) whatever the answer on stdin. A test checks that no other module
calls ``from_pretrained``.
"""

from __future__ import annotations


def from_pretrained(auto_class, name_or_path: str, **kwargs):
    """``auto_class.from_pretrained(name_or_path, **kwargs)`` without remote code."""
    if kwargs.pop("trust_remote_code", False):
        raise ValueError("cl-adapters never runs a model folder's own code (trust_remote_code)")
    return auto_class.from_pretrained(name_or_path, trust_remote_code=False, **kwargs)
