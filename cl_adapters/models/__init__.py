"""Backbones and the task-growing AdaptedModel."""

from cl_adapters.models.adapted import AdaptedModel
from cl_adapters.models.backbones import MLP, PatchTransformer

__all__ = ["AdaptedModel", "MLP", "PatchTransformer"]
