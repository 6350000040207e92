"""Classifier kinds (``strategy.model.classifier``): every module of this package is imported, and each
``ClassifierHead`` subclass it declares with ``kind="<name>"`` is a kind. Adding one is adding a module
(its options are its class's ``options``; ``strategy.model.classifier_options`` sets them)."""

from __future__ import annotations

import importlib
import pkgutil

from cl_adapters.errors import UserError
from cl_adapters.models.classifiers.base import REGISTRY, ClassifierHead

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def kinds() -> tuple[str, ...]:
    """The registered kinds: this package's (linear, ncm first), then any declared elsewhere."""
    return tuple(REGISTRY)


def resolve(name: str) -> type[ClassifierHead]:
    """The head class of kind ``name``, or one line listing the registered ones."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise UserError(f"strategy.model.classifier must be one of {kinds()}, got {name!r}")
    return REGISTRY[name]


__all__ = ["ClassifierHead", "kinds", "resolve"]
