"""Loggers (console, results.json), figures and the training progress bar."""

from cl_adapters.logging.console import ConsoleLogger
from cl_adapters.logging.plots import plot_fusion_attention
from cl_adapters.logging.progress import ProgressBar
from cl_adapters.logging.results import write_json_atomic

__all__ = ["ConsoleLogger", "ProgressBar", "plot_fusion_attention", "write_json_atomic"]
