"""Strategies: one SupervisedTemplate subclass; each strategy config sets its model policy."""

from cl_adapters.strategies.continual import ContinualStrategy

__all__ = ["ContinualStrategy"]
