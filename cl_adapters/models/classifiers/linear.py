"""``classifier=linear``: the head trains with the task (cross-entropy through the strategy's optimizer)."""

from __future__ import annotations

from cl_adapters.models.classifiers.base import ClassifierHead


class Head(ClassifierHead, kind="linear"):
    """A linear head whose column i scores label id ``classes[i]``."""
