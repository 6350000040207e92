"""Adapter compositions evaluated on a trained model: contexts that route every sample through a
composed adapter for the forwards inside them (``compositions=[...]`` in a run)."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from cl_adapters.errors import UserError
from cl_adapters.models.adapted import AdaptedModel, task_key

AVERAGE = "average"  # the adapter key of the trained tasks' averaged adapter, while it is evaluated


@contextmanager
def averaged_adapter(model: AdaptedModel):
    """Every sample through one adapter, the parameter average of the trained tasks' adapters (each
    tensor averaged, as AdapterHub's ``average_adapter`` and peft's ``add_weighted_adapter``
    "linear" do), with its own task's head: what merging the tasks into one multi-task adapter keeps."""
    keys = [task_key(t) for t in model.trained_tasks if model.owns_adapter(t)]
    if len(keys) < 2:
        raise UserError(f"an averaged adapter needs the adapters of two tasks or more, this model has {len(keys)}")
    states = [model.adapters.task_state(key) for key in keys]
    model.adapters.load_task_state(AVERAGE, {n: torch.stack([s[n] for s in states]).mean(0) for n in states[0]})
    model.adapter_override = AVERAGE
    try:
        yield
    finally:
        model.adapter_override = None
        model.adapters.remove(AVERAGE)
