"""LoRA through peft (Hu et al. 2022): one named LoRA per task key, routed per sample."""

from cl_adapters.adapters.lora.config import LoraConfig
from cl_adapters.adapters.lora.model import LoraAdapters

__all__ = ["LoraAdapters", "LoraConfig"]
