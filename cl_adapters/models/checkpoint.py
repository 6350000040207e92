"""An AdaptedModel on disk with safetensors (never pickle): the base once, plus one file per task with
what that task alone owns (its head, adapter and fusion).

The adapter and fusion configs travel in each task file's metadata and must match the model loading
it: a fusion's outputs depend on its temperature and shape, and a silent mismatch is how a reloaded
fusion loses accuracy. Loading into a model built from the same config reproduces its outputs exactly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cl_adapters.atomic import atomic_path
from cl_adapters.errors import UserError
from cl_adapters.models.adapted import AdaptedModel, task_key

BASE = "base.safetensors"


def task_file(directory: str | Path, task: int) -> Path:
    return Path(directory) / f"task-{task}.safetensors"


def _configs(model: AdaptedModel) -> dict[str, str]:
    def describe(cfg):
        return json.dumps(None if cfg is None else {"type": type(cfg).__name__, **dataclasses.asdict(cfg)})

    return {"adapter": describe(model.adapter_config), "fusion": describe(model.fusion)}


def _save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> Path:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return path


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.exists():
        raise UserError(f"checkpoint file not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def save_task(model: AdaptedModel, task: int, path: str | Path) -> Path:
    key = task_key(task)
    fusions = model.fusions(task)
    metadata = {"task": key, "classes": str(model.heads[key].out_features),
                "fusion_over": json.dumps(fusions[0].keys if fusions else None), **_configs(model)}
    return _save(model.task_parameters(task), Path(path), metadata)


def load_task(model: AdaptedModel, path: str | Path) -> int:
    """Create the task's parts in ``model`` and load them; returns the task label."""
    path = Path(path)
    tensors, meta = _read(path)
    for name, saved in _configs(model).items():
        if meta.get(name) != saved:
            raise UserError(f"{path}: saved with {name} config {meta.get(name)}, the model has {saved}")
    task = int(meta["task"])
    model.restore_task(task, int(meta["classes"]), json.loads(meta["fusion_over"]))
    own = model.task_parameters(task)
    if set(own) != set(tensors):
        raise UserError(f"{path}: tensors {sorted(set(tensors) ^ set(own))[:4]} do not match the model's task {task}")
    with torch.no_grad():
        for name, p in own.items():
            if p.shape != tensors[name].shape:
                raise UserError(f"{path}: {name} has shape {tuple(tensors[name].shape)}, the model {tuple(p.shape)}")
            p.copy_(tensors[name])
    return task


def save(model: AdaptedModel, directory: str | Path) -> Path:
    """``base.safetensors`` (everything no single task owns) and ``task-<t>.safetensors`` per trained task."""
    directory = Path(directory)
    owned = {name for t in model.trained_tasks for name in model.task_parameters(t)}
    base = {k: v for k, v in model.state_dict().items() if k not in owned}
    _save(base, directory / BASE, {"tasks": json.dumps(model.trained_tasks)})
    for t in model.trained_tasks:
        save_task(model, t, task_file(directory, t))
    return directory


def load(model: AdaptedModel, directory: str | Path) -> AdaptedModel:
    """Load what ``save`` wrote into a model built from the same config (before any task)."""
    directory = Path(directory)
    base, meta = _read(directory / BASE)
    for t in json.loads(meta["tasks"]):
        load_task(model, task_file(directory, t))
    missing, unexpected = model.load_state_dict(base, strict=False)
    owned = {name for t in model.trained_tasks for name in model.task_parameters(t)}
    if unexpected or set(missing) - owned:
        raise UserError(f"{directory / BASE} does not match the model: missing {sorted(set(missing) - owned)[:4]}, "
                        f"unexpected {unexpected[:4]}")
    return model
