"""cl-adapters: per-task adapters vs full fine-tuning and LoRA on continual-learning task streams."""

from cl_adapters import compat

compat.patch_torchvision()

__version__ = "0.1.0"
