"""One adapter set over the sets of several methods: every member applies to all of them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from itertools import chain

import torch
from torch import nn

from cl_adapters.adapters.base import AdapterSet, copy_state
from cl_adapters.adapters.route import Route
from cl_adapters.errors import UserError


class CombinedAdapters:
    """The parts' adapters under the same task keys; a task's state names its tensors ``<part>.<name>``."""

    supports_fusion = False  # AdapterFusion mixes one bottleneck per task, not a combination

    def __init__(self, sets: list[AdapterSet]):
        self.sets = sets
        self.supports_stack = all(s.supports_stack for s in sets)

    def add(self, key: str) -> None:
        for s in self.sets:
            s.add(key)

    def keys(self) -> list[str]:
        return self.sets[0].keys()

    def parameters(self, key: str) -> Iterator[nn.Parameter]:
        return chain.from_iterable(s.parameters(key) for s in self.sets)

    def task_state(self, key: str) -> dict[str, torch.Tensor]:
        return {f"{i}.{name}": t for i, s in enumerate(self.sets) for name, t in s.task_state(key).items()}

    def load_task_state(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        self.add(key)
        copy_state(self.task_state(key), tensors, f"combined adapter {key}")

    def remove(self, key: str) -> None:
        for s in self.sets:
            s.remove(key)

    def merge(self, key: str) -> None:
        raise UserError("a combined adapter is served routed: only a method alone that is linear (LoRA) merges")

    @contextmanager
    def routed(self, route: Route) -> Iterator[None]:
        with ExitStack() as stack:
            for s in self.sets:
                stack.enter_context(s.routed(route))
            yield
