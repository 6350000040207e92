"""Loading is data, never code: a config read back from disk is instantiated only if every ``_target_``
in it is one of the project's own constructors (or one the caller names explicitly).

Hydra's ``instantiate`` calls whatever ``_target_`` says, so a stored config edited to
``{_target_: builtins.open, ...}`` would run on load. ``check`` refuses such a config before anything
is built, naming the target and the file.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from pathlib import Path

from cl_adapters.errors import UserError

# Every constructor the shipped configs use (a test keeps this in step with cl_adapters/conf/).
TARGETS = frozenset({
    "cl_adapters.strategies.ContinualStrategy",
    "cl_adapters.models.AdaptedModel",
    "cl_adapters.models.MLP",
    "cl_adapters.models.PatchTransformer",
    "cl_adapters.models.HFEncoder",
    "cl_adapters.adapters.AdapterConfig",
    "cl_adapters.adapters.LoraConfig",
    "cl_adapters.adapters.FusionConfig",
    "cl_adapters.streams.split_digits",
    "cl_adapters.streams.split_mnist",
    "cl_adapters.streams.permuted_mnist",
    "cl_adapters.streams.sentiment_domains",
    "cl_adapters.outputs.ConsoleLogger",
    "cl_adapters.outputs.WandbLogger",
    "avalanche.training.plugins.EWCPlugin",
    "avalanche.training.plugins.LwFPlugin",
    "avalanche.training.plugins.ReplayPlugin",
})


def _is_optimizer(target: str) -> bool:
    """``torch.optim.<Name>`` where Name is one of torch's optimizer classes."""
    import torch

    module, _, name = target.rpartition(".")
    cls = getattr(torch.optim, name, None) if module == "torch.optim" else None
    return isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)


def allowed(target: object, extra: Iterable[str] = ()) -> bool:
    if not isinstance(target, str):
        return False
    return target in TARGETS or _is_optimizer(target) or any(fnmatch.fnmatchcase(target, p) for p in extra)


def check(config: object, source: str | Path, extra: Iterable[str] = ()) -> None:
    """Raise a UserError naming the first ``_target_`` outside the allowlist (or the first interpolation:
    stored configs are resolved, so ``${...}`` in one was put there by hand)."""
    extra = tuple(extra)

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            if "_target_" in node and not allowed(node["_target_"], extra):
                raise UserError(f"{source}: refusing to load: {where or 'the config'}._target_={node['_target_']!r} is not "
                                "one of cl-adapters' constructors (pass allow=[...] to load it if you trust it)")
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")
        elif isinstance(node, str) and "${" in node:
            raise UserError(f"{source}: refusing to load: {where}={node!r} is an interpolation (stored configs are resolved)")

    walk(config, "")
