"""The classifier contract (``strategy.model.classifier``): what the model, the strategy and the checkpoint
call on a head. A kind is a ``ClassifierHead`` subclass declared with ``kind="<name>"``: declaring it
registers it (a module in ``cl_adapters/models/classifiers/`` is imported and so registered by the package;
one elsewhere by being imported before the model is built)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from cl_adapters.errors import UserError

REGISTRY: dict[str, type[ClassifierHead]] = {}  # kind -> its head class, in the order declared


class ClassifierHead(nn.Linear):
    """A head over label ids: column i scores ``classes[i]``.

    Every kind has a linear layer underneath: it is what trains while the backbone trains (a from-scratch
    backbone's first task, or every task of a ``linear`` head). A ``fitted`` kind is instead fitted on each
    task's features after the task (``fit`` per batch, then ``end_fit``) and scores with what it fitted in
    eval mode; nothing of it trains once the backbone is frozen.

    What it checkpoints is its ``state_dict``: every tensor it keeps is a parameter or buffer whose shape
    follows from ``(in_features, classes, options)``, so a head built from the same config takes it back.
    ``fitted_state`` is what fitting kept (what a task costs in bytes); ``grown`` carries the state to a
    head over more classes (class-IL's shared head grows every task).
    """

    kind: ClassVar[str] = ""
    fitted: ClassVar[bool] = False  # fitted after each task rather than trained
    options: ClassVar[dict[str, Any]] = {}  # option -> default (strategy.model.classifier_options)
    summary: ClassVar[str] = ""  # what it is, for the one-line refusals

    def __init_subclass__(cls, kind: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if kind is not None:
            cls.kind = kind
            REGISTRY[kind] = cls

    def __init__(self, in_features: int, classes: list[int], **options):
        super().__init__(in_features, len(classes))
        self.classes = list(classes)
        self.settings = options  # the kind's options, as ``configure`` checked them

    @classmethod
    def configure(cls, given: Mapping | None) -> dict[str, Any]:
        """The kind's options: its defaults updated with ``given``; an unknown one is refused in one line.
        A kind with options overrides this to check their values too."""
        given = dict(given or {})
        if unknown := sorted(set(given) - set(cls.options)):
            have = ", ".join(cls.options) or "none"
            raise UserError(f"strategy.model.classifier_options.{unknown[0]}: classifier={cls.kind} has no such "
                            f"option (its options: {have})")
        return {**cls.options, **given}

    @classmethod
    def check_model(cls, adapter) -> None:
        """Refuse a model this kind cannot serve: a fitted kind fits the bare backbone's features."""
        if cls.fitted and adapter is not None:
            raise UserError(f"classifier={cls.kind} is {cls.summary} alone (strategy=ncm): set strategy.model.adapter=null")

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Fold one batch of a task's (features, labels) into what the head fits."""
        raise TypeError(f"classifier={self.kind} is trained, not fitted")

    def end_fit(self) -> None:
        """After the task's last batch: settle what needs the whole task (nothing by default)."""

    def fitted_state(self) -> list[torch.Tensor]:
        """What fitting keeps: a fitted kind's buffers."""
        return list(self.buffers()) if self.fitted else []

    def grown(self, classes: list[int]) -> ClassifierHead:
        """A head of this kind over ``classes`` (these columns first, then new ones) with this head's state:
        by default every tensor's first rows, the old columns."""
        head = type(self)(self.in_features, classes, **self.settings).to(self.weight.device)
        state = head.state_dict()  # tensors sharing the head's storage
        for name, old in self.state_dict().items():
            state[name][: len(self.classes)] = old
        return head
