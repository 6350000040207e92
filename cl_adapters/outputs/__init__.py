"""What a run writes and shows: results.json, console, W&B, figures, the progress bar, and the comparison report."""

from cl_adapters.outputs.console import ConsoleLogger
from cl_adapters.outputs.logger import Logger
from cl_adapters.outputs.plots import accuracy_matrix_figure, plot_fusion_attention, plot_task_id_confusion
from cl_adapters.outputs.progress import ProgressBar
from cl_adapters.outputs.results import write_json_atomic
from cl_adapters.outputs.wandb import WandbLogger

__all__ = ["ConsoleLogger", "Logger", "ProgressBar", "WandbLogger", "accuracy_matrix_figure", "plot_fusion_attention",
           "plot_task_id_confusion", "write_json_atomic"]
