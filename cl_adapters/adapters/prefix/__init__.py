"""Prefix tuning (Li & Liang 2021): per task, trained key and value vectors prepended in every attention
layer, which each token then also attends to; the attention half of the Mix-and-Match adapter."""

from cl_adapters.adapters.prefix.config import PrefixConfig
from cl_adapters.adapters.prefix.model import PrefixAdapters, PrefixEncoder

__all__ = ["PrefixAdapters", "PrefixConfig", "PrefixEncoder"]
