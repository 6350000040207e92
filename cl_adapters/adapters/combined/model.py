"""One adapter set over the sets of several methods: every member applies to all of them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from itertools import chain

import torch
from torch import nn

from cl_adapters.adapters.base import AdapterSet, copy_state
from cl_adapters.adapters.route import Route


class CombinedAdapters(AdapterSet):
    """The parts' adapters under the same task keys; a task's state names its tensors ``<part>.<name>``."""

    def __init__(self, sets: list[AdapterSet]):
        self.sets = sets
        # stack when every part stacks; not fusion (AdapterFusion mixes one bottleneck per task, not a
        # combination), not merge (served routed)
        self.capabilities = frozenset.intersection(*(frozenset(s.capabilities) for s in sets)) & {"stack"}

    @property
    def layer_names(self) -> list[str]:
        return [name for s in self.sets for name in s.layer_names]

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
        raise self._unsupported("merge", "a combined adapter is served routed: only a method alone that is linear "
                                         "(LoRA) merges")

    @contextmanager
    def routed(self, route: Route) -> Iterator[None]:
        with ExitStack() as stack:
            for s in self.sets:
                stack.enter_context(s.routed(route))
            yield
