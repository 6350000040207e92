"""The heads of the two built-in classifier kinds, where they were always imported from (the kinds and their
contract live in ``classifiers/``)."""

from cl_adapters.models.classifiers.linear import Head
from cl_adapters.models.classifiers.ncm import PrototypeHead

__all__ = ["Head", "PrototypeHead"]
