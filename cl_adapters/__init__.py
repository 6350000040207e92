"""cl-adapters: per-task adapters vs full fine-tuning and LoRA on continual-learning task streams."""

from pathlib import Path

from cl_adapters import compat

compat.patch_torchvision()

CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")  # shipped in the package; ./conf is searched after it

__version__ = "0.1.0"
