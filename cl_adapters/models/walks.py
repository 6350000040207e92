"""Flat walks over a model's modules: what ``nn.Module`` does recursively, for models that grow.

A long stream's model gains modules every task (an adapter and a fusion in every adapted layer, a
head), and Avalanche and the fusion choice switch its mode and check its device a few times a task.
``nn.Module.train`` recurses through every module and sets the flag through ``Module.__setattr__``;
``nn.Module.to`` walks every module even with nothing to move; listing the parameters goes through
``named_modules``' generators and name strings. These do the same in one plain pass.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


def set_training(model: nn.Module, mode: bool) -> None:
    """``model``'s submodules in training mode ``mode``, as ``nn.Module.train`` sets them; a module with a
    ``train`` of its own (Hugging Face's models) gets it called for its subtree."""
    if not isinstance(mode, bool):
        raise ValueError(f"training mode is expected to be boolean, got {mode!r}")
    stack = list(model._modules.values())
    while stack:
        module = stack.pop()
        if module is None:
            continue
        if type(module).train is not nn.Module.train:
            module.train(mode)
        else:
            module.__dict__["training"] = mode  # where nn.Module keeps it (its __setattr__ checks much more)
            stack.extend(module._modules.values())


def parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """``model.parameters()``, in its order, each once."""
    seen, stack = set(), [model]
    while stack:
        module = stack.pop()
        for p in module._parameters.values():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                yield p
        stack.extend(reversed([m for m in module._modules.values() if m is not None]))


def all_on(model: nn.Module, device: torch.device) -> bool:
    """Whether every parameter and buffer of ``model`` is on ``device``."""
    stack = [model]
    while stack:
        module = stack.pop()
        if any(t is not None and t.device != device for t in (*module._parameters.values(), *module._buffers.values())):
            return False
        stack.extend(m for m in module._modules.values() if m is not None)
    return True
