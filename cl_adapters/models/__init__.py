"""Backbones, the task-growing AdaptedModel and its safetensors checkpoints (``checkpoint``)."""

from cl_adapters.models.adapted import AdaptedModel
from cl_adapters.models.backbones import MLP, PatchTransformer
from cl_adapters.models.hf_encoder import HFEncoder, default_encoder_path
from cl_adapters.models.hf_vision import HFVision
from cl_adapters.models.timm_backbone import TimmBackbone

__all__ = ["AdaptedModel", "HFEncoder", "HFVision", "MLP", "PatchTransformer", "TimmBackbone", "default_encoder_path"]
