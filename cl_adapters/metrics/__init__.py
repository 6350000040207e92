"""Accuracy-matrix metrics (pure numpy) and the plugin that measures accuracies."""

from cl_adapters.metrics.matrix import DEFINITIONS, acc, bwt, forgetting, fwt, intransigence, summarize, transfer_vs_single
from cl_adapters.metrics.costs import CostPlugin, cost_summary
from cl_adapters.metrics.fusion import FusionAttention
from cl_adapters.metrics.plugin import AccuracyPlugin

__all__ = ["DEFINITIONS", "AccuracyPlugin", "CostPlugin", "cost_summary", "FusionAttention", "acc", "bwt", "forgetting", "fwt", "intransigence", "summarize", "transfer_vs_single"]
