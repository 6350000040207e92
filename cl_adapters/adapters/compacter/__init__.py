"""Compacter (Mahabadi et al. 2021): bottleneck adapters whose projections are PHM layers, a sum of
Kronecker products of small shared "rule" matrices A_i and low-rank per-layer matrices B_i."""

from cl_adapters.adapters.compacter.config import CompacterConfig
from cl_adapters.adapters.compacter.layer import PHMLinear
from cl_adapters.adapters.compacter.model import CompacterAdapters

__all__ = ["CompacterAdapters", "CompacterConfig", "PHMLinear"]
