"""Strategies: one SupervisedTemplate subclass; each strategy config sets its model policy."""

from cl_adapters.strategies.continual import ContinualStrategy
from cl_adapters.strategies.plugins import EWC, SynapticIntelligence

__all__ = ["EWC", "ContinualStrategy", "SynapticIntelligence"]
