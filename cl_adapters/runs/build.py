"""Building a component from its config node, with a user's mistake said in one line."""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from cl_adapters.errors import UserError


def build(node: DictConfig, name: str, **kwargs):
    """instantiate() with user mistakes (the constructor's own UserError, an unknown target, arguments
    it does not take) turned into one UserError naming the config group; anything else is not a user
    mistake and goes on as itself, traceback and all."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e
        while cause.__cause__ is not None and not isinstance(cause, UserError):
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if cause is e or isinstance(cause, (TypeError, ImportError)):  # Hydra's own message, or a bad call
            raise UserError(f"{name}: {' '.join(str(cause).split())}") from e
        raise cause
