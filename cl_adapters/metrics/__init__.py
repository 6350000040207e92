"""The metric table (spec.py), accuracy-matrix metrics (pure numpy), forward transfer by probe, uncertainty over seeds (seeds.py) and the Avalanche plugins that measure accuracy (accuracy.py), costs and fusion attention."""

from cl_adapters.metrics.matrix import (
    acc,
    accuracy_curve,
    avg_incremental_acc,
    bwt,
    forgetting,
    fwt,
    fwt_probe,
    intransigence,
    last_acc,
    transfer_vs_single,
)
from cl_adapters.metrics.spec import DEFINITIONS, METRICS, Metric, summarize
from cl_adapters.metrics.costs import CostPlugin, cost_summary
from cl_adapters.metrics.fusion import FusionAttention
from cl_adapters.metrics.accuracy import AccuracyPlugin
from cl_adapters.metrics.probe import LinearProbe

__all__ = ["DEFINITIONS", "METRICS", "Metric", "AccuracyPlugin", "LinearProbe", "CostPlugin", "cost_summary", "FusionAttention",
           "acc", "accuracy_curve", "avg_incremental_acc", "bwt", "forgetting", "fwt", "fwt_probe", "intransigence",
           "last_acc", "summarize", "transfer_vs_single"]
