"""Loggers (console, results.json) and the training progress bar."""

from cl_adapters.logging.console import ConsoleLogger
from cl_adapters.logging.progress import ProgressBar
from cl_adapters.logging.results import write_json_atomic

__all__ = ["ConsoleLogger", "ProgressBar", "write_json_atomic"]
