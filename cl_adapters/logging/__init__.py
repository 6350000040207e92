"""Loggers (console, W&B, results.json), figures and the training progress bar."""

from cl_adapters.logging.console import ConsoleLogger
from cl_adapters.logging.plots import accuracy_matrix_figure, plot_fusion_attention
from cl_adapters.logging.progress import ProgressBar
from cl_adapters.logging.results import write_json_atomic
from cl_adapters.logging.wandb import WandbLogger

__all__ = ["ConsoleLogger", "ProgressBar", "WandbLogger", "accuracy_matrix_figure", "plot_fusion_attention", "write_json_atomic"]
