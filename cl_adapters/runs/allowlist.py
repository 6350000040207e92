"""Loading is data, never code: a config read back from disk is instantiated only if every ``_target_``
in it is one of the project's own constructors (or one the caller names explicitly).

Hydra's ``instantiate`` calls whatever ``_target_`` says, so a stored config edited to
``{_target_: builtins.open, ...}`` would run on load. ``check`` refuses such a config before anything
is built, naming the target and the file.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import importlib
from collections.abc import Iterable
from pathlib import Path

import yaml

from cl_adapters import CONFIG_DIR
from cl_adapters.errors import UserError

LEGACY = frozenset({"avalanche.training.plugins.EWCPlugin"})  # the ewc config's target until 2026-12-01: older runs load


def nodes(node, where: str = ""):
    """(path, value) for ``node`` and everything nested in it, parents first (``a.b[0].c``)."""
    yield where, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from nodes(value, f"{where}[{key}]" if isinstance(node, list) else f"{where}.{key}" if where else str(key))


@functools.cache
def shipped_targets(conf_dir: str = CONFIG_DIR) -> frozenset[str]:
    """Every ``_target_`` of the shipped configs (``cl_adapters/conf/``, Hydra's own settings aside): a component
    registered by its YAML is loadable with no entry here. Adapter methods, optimizers and ``extra`` are
    recognised by what they are (``allowed``)."""
    found = set()
    for path in Path(conf_dir).rglob("*.yaml"):
        config = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "hydra"}
        found |= {v["_target_"] for _, v in nodes(config) if isinstance(v, dict) and isinstance(v.get("_target_"), str)}
    return frozenset(found)


def _is_optimizer(target: str) -> bool:
    """``torch.optim.<Name>`` where Name is one of torch's optimizer classes."""
    import torch

    module, _, name = target.rpartition(".")
    cls = getattr(torch.optim, name, None) if module == "torch.optim" else None
    return isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)


def _is_adapter_method(target: str) -> bool:
    """A config class (a dataclass with ``attach``) in the package ``cl_adapters.adapters``: a new method's
    package needs no entry here. Only the project's own modules are imported to tell."""
    module, _, name = target.rpartition(".")
    if module != "cl_adapters.adapters" and not module.startswith("cl_adapters.adapters."):
        return False
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return False
    return isinstance(cls, type) and dataclasses.is_dataclass(cls) and callable(getattr(cls, "attach", None))


def allowed(target: object, extra: Iterable[str] = ()) -> bool:
    if not isinstance(target, str):
        return False
    return (target in shipped_targets() or target in LEGACY or _is_optimizer(target) or _is_adapter_method(target)
            or any(fnmatch.fnmatchcase(target, p) for p in extra))


def check(config: object, source: str | Path, extra: Iterable[str] = ()) -> None:
    """Raise a UserError naming the first ``_target_`` outside the allowlist (or the first interpolation:
    stored configs are resolved, so ``${...}`` in one was put there by hand)."""
    extra = tuple(extra)
    for where, node in nodes(config):
        if isinstance(node, dict) and "_target_" in node and not allowed(node["_target_"], extra):
            raise UserError(f"{source}: refusing to load: {where or 'the config'}._target_={node['_target_']!r} is not "
                            "one of cl-adapters' constructors (pass allow=[...] to load it if you trust it)")
        if isinstance(node, str) and "${" in node:
            raise UserError(f"{source}: refusing to load: {where}={node!r} is an interpolation (stored configs are resolved)")
