"""Backbones, the task-growing AdaptedModel and its safetensors checkpoints (``checkpoint``)."""

from cl_adapters.models.adapted import AdaptedModel
from cl_adapters.models.backbones import MLP, PatchTransformer
from cl_adapters.models.hf_encoder import HFEncoder, default_encoder_path

__all__ = ["AdaptedModel", "HFEncoder", "MLP", "PatchTransformer", "default_encoder_path"]
