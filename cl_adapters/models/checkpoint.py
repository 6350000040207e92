"""The one checkpoint format: safetensors task files (never pickle), each verifying itself.

A task file holds what one task alone owns, by role, and what its writer adds:

    head.<name>             the task's head (when each task has its own)
    adapter.<name>          its adapter, as the method's ``task_state`` (names without the task key)
    fusion.<layer>.<name>   its fusion in each adapted layer
    router.<name>           what the router keeps of the task (``task_state``: e.g. its class prototypes)
    signature               its data signature (``fusion.candidates``: which earlier adapters a fusion probes)
    shared.<state name>     what no single task owns (the backbone, a shared adapter, other tasks' heads
                            that trained on): all of it in an export's ``base.safetensors``, what changed
                            during the task in a run's checkpoint chain (``runs/resume.py``)
    anything else           the writer's own (the chain: RNG and CL-plugin state)

Metadata: the format, the task, its fused adapters, the kind of a quantized base (``quantized``), every
head's and task's label ids, the adapter and
fusion configs (they must match the model loading the file: a fusion's output depends on its
temperature, and a silent mismatch is how a reloaded fusion loses accuracy), the writer's fields, and
``digest``, sha256 over all of it. An export is a folder: ``base.safetensors`` + ``task-<t>.safetensors``
per task, bound together: every file carries the export's id, and the base records each task file's digest
(``tasks``), so a task file of another export is refused. Loading into a model built from the same config
reproduces its outputs exactly; a model tensor that no file holds, or a task without its file, is refused.

The digests are plain sha256: they catch corruption, truncation and files mixed up between runs or
exports, not a deliberate edit by someone who recomputes them (that would need a keyed signature).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from cl_adapters.adapters.base import copy_state
from cl_adapters.atomic import atomic_path
from cl_adapters.errors import UserError
from cl_adapters.models.adapted import AdaptedModel, task_key
from cl_adapters.models.quantize import load_quantized

FORMAT = "cl-adapters task file 2"
BASE = "base.safetensors"
ROLES = ("head.", "adapter.", "fusion.", "router.", "shared.")


def task_file(directory: str | Path, task: int) -> Path:
    return Path(directory) / f"task-{task}.safetensors"


def digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """sha256 over the metadata and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class TaskFile:
    """One verified file: ``task`` is None for a base file."""

    path: Path
    task: int | None
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]  # without the digest
    digest: str

    def role(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def _configs(model: AdaptedModel) -> dict[str, str]:
    def describe(cfg):
        return json.dumps(None if cfg is None else {"type": type(cfg).__name__, **dataclasses.asdict(cfg)})

    return {"adapter": describe(model.adapter_config), "fusion": describe(model.fusion)}


def _set_fields(config: str | None):
    """A stored config without its null fields: one saved before a field with a null default was added
    (``fusion.candidates``) is the same config."""
    try:
        value = json.loads(config) if config else None
    except ValueError:
        return config
    return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value


def own_tensors(model: AdaptedModel, task: int) -> dict[str, torch.Tensor]:
    """What ``task`` alone owns, by role: its head, adapter and fusion (those it has of its own), and what
    the router keeps of it."""
    key = task_key(task)
    tensors = {f"head.{k}": v for k, v in model.heads[key].state_dict().items()} if model.head_per_task else {}
    if model.router is not None:
        tensors |= {f"router.{k}": v for k, v in model.router.task_state(task).items()}
    if task in model.signatures:
        tensors["signature"] = model.signatures[task]
    if model.owns_adapter(task):
        tensors |= {f"adapter.{k}": v for k, v in model.adapters.task_state(key).items()}
        for i, fusion in enumerate(model.fusions(task)):
            tensors |= {f"fusion.{i}.{k}": v for k, v in fusion.state_dict().items()}
    return tensors


def write(path: str | Path, model: AdaptedModel, task: int | None = None, shared: dict | None = None,
          extra: dict | None = None, metadata: dict[str, str] | None = None) -> str:
    """Write one file atomically: ``task``'s own parts (if it was trained), ``shared`` (state-dict names),
    the writer's ``extra`` tensors and ``metadata``; returns its digest."""
    meta = {"format": FORMAT, **_configs(model), "heads": json.dumps(model.head_classes),
            "task_classes": json.dumps(model.task_classes), "trained_tasks": json.dumps(model.trained_tasks),
            **(metadata or {})}
    if quantized := getattr(model.backbone, "quantized", None):
        meta["quantized"] = quantized
    tensors = {f"shared.{k}": v for k, v in (shared or {}).items()} | (extra or {})
    if task is not None:
        meta["task"] = str(task)
        if task in model.trained_tasks:
            fusions = model.fusions(task)
            meta["fusion_over"] = json.dumps(fusions[0].keys if fusions else None)
            tensors |= own_tensors(model, task)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta["digest"] = digest(tensors, meta)
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(safetensors.torch.save(tensors, metadata=meta))
    return meta["digest"]


def read(path: str | Path) -> TaskFile:
    """A file, verified against its own digest; ValueError says what is wrong with it."""
    path = Path(path)
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, safetensors.SafetensorError) as e:
        raise ValueError(f"unreadable: {e}") from e
    if metadata.get("format") != FORMAT:
        raise ValueError("not a cl-adapters task file")
    stored = metadata.pop("digest", None)
    if stored != digest(tensors, metadata):
        raise ValueError("its contents do not match its digest (corrupt or edited)")
    try:
        task = int(metadata["task"]) if "task" in metadata else None
        _check_shapes(metadata)
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"malformed metadata ({type(e).__name__}: {e})") from e
    return TaskFile(path, task, tensors, metadata, stored)


def _check_shapes(metadata: dict[str, str]) -> None:
    """The JSON fields ``restore`` reads have the types it reads them as (TypeError names the field)."""
    def class_lists(value) -> bool:
        return isinstance(value, dict) and all(isinstance(c, list) and all(isinstance(i, int) for i in c)
                                               for c in value.values())

    def task_ids(value) -> bool:
        return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)

    fields = {"heads": class_lists, "task_classes": class_lists, "trained_tasks": task_ids,
              "tasks": lambda v: isinstance(v, dict) and all(isinstance(d, str) for d in v.values()),
              "fusion_over": lambda v: v is None or isinstance(v, list)}
    for name, ok in fields.items():
        if (name in metadata or name in ("heads", "task_classes", "trained_tasks")) and not ok(json.loads(metadata[name])):
            raise TypeError(f"{name} is not what a cl-adapters file holds there")


def restore(model: AdaptedModel, file: TaskFile) -> None:
    """Create ``file``'s parts in ``model`` (every head it names; its task's adapter and fusion) and load
    them, then its shared tensors; a tensor that does not fit is named, then a config that differs."""
    meta = file.metadata
    try:
        for key, classes in json.loads(meta["heads"]).items():
            model.add_head(key, classes)
        model.task_classes.update({int(t): c for t, c in json.loads(meta["task_classes"]).items()})
        if file.task is not None and "fusion_over" in meta:
            key = task_key(file.task)
            model.restore_task(file.task, model.task_classes[file.task], json.loads(meta["fusion_over"]))
            if model.head_per_task:
                copy_state(model.heads[key].state_dict(), file.role("head."), f"head {key}")
            if model.router is not None:
                model.router.load_task_state(file.task, file.role("router."))
            if "signature" in file.tensors:
                model.signatures[file.task] = file.tensors["signature"]
            if model.owns_adapter(file.task):
                model.adapters.load_task_state(key, file.role("adapter."))
                for i, fusion in enumerate(model.fusions(file.task)):
                    copy_state(fusion.state_dict(), file.role(f"fusion.{i}."), f"fusion {key} in layer {i}")
        shared = file.role("shared.")
        if quantized := meta.get("quantized"):  # the base was stored quantized: so must the model's be
            if getattr(model.backbone, "quantize", None) != quantized:
                raise UserError(f"saved with model.quantize={quantized}, the model has "
                                f"model.quantize={getattr(model.backbone, 'quantize', None)}")
            model.quantize_frozen_backbone()
            load_quantized(model, shared)
        state = model.state_dict()
        copy_state({k: state[k] for k in shared if k in state}, shared, "shared")
    except UserError as e:
        raise UserError(f"{file.path}: {e}") from None
    except (KeyError, ValueError, TypeError, AttributeError) as e:  # it verifies, but the model cannot take it
        raise UserError(f"{file.path}: does not fit the model ({type(e).__name__}: {e})") from None
    for name, saved in _configs(model).items():
        if _set_fields(meta.get(name)) != _set_fields(saved):
            raise UserError(f"{file.path}: saved with {name} config {meta.get(name)}, the model has {saved}")


def read_checked(path: Path) -> TaskFile:
    """``read``, its problems as a UserError naming the file."""
    if not path.exists():
        raise UserError(f"checkpoint file not found: {path}")
    try:
        return read(path)
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None


def save_task(model: AdaptedModel, task: int, path: str | Path) -> Path:
    """``task``'s own parts (head, adapter, fusion) with their configs: loadable with ``load_task``."""
    write(path, model, task)
    return Path(path)


def load_task(model: AdaptedModel, path: str | Path) -> int:
    """Create one task's parts in ``model`` and load them; returns the task label."""
    file = read_checked(Path(path))
    if file.task is None:
        raise UserError(f"{path}: a base file, not a task's")
    restore(model, file)
    return file.task


def save(model: AdaptedModel, directory: str | Path, export_id: str = "") -> dict[str, str]:
    """``task-<t>.safetensors`` per trained task, then ``base.safetensors`` (everything no single task owns,
    and each task file's digest); every file carries ``export_id``. Returns file name -> digest."""
    directory, meta = Path(directory), {"export_id": export_id}
    digests = {task_file(directory, t).name: write(task_file(directory, t), model, t, metadata=meta)
               for t in model.trained_tasks}
    owned = {name for t in model.trained_tasks for name in model.task_state_names(t)}
    tasks = {str(t): digests[task_file(directory, t).name] for t in model.trained_tasks}
    digests[BASE] = write(directory / BASE, model, shared={k: v for k, v in model.state_dict().items() if k not in owned},
                          metadata=meta | {"tasks": json.dumps(tasks)})
    return digests


def read_base(directory: Path) -> TaskFile:
    """An export's base file, with every task file it names present (a task without its file is refused)."""
    base = read_checked(directory / BASE)
    if base.task is not None:
        raise UserError(f"{base.path}: a task's file, not a base file")
    if missing := [t for t in json.loads(base.metadata["trained_tasks"]) if not task_file(directory, t).is_file()]:
        raise UserError(f"{directory}: the base holds tasks {missing} whose files are missing ({task_file(directory, missing[0]).name})")
    return base


def read_task(base: TaskFile, task: int) -> TaskFile:
    """Task ``task``'s file beside ``base``, refused unless it is the one the base was written with."""
    file = read_checked(task_file(base.path.parent, task))
    expected = json.loads(base.metadata.get("tasks", "null"))
    if file.task != task or (expected is not None and expected.get(str(task)) != file.digest):
        raise UserError(f"{file.path}: not the task file {base.path.name} was written with (another export's, or edited)")
    return file


def check_complete(model: AdaptedModel, loaded: set[str], tasks: list[int], source: Path) -> None:
    """Every tensor of ``model`` was loaded (``loaded``) or belongs to one of ``tasks``: a tensor no file
    holds would keep its random initial value."""
    owned = {name for t in tasks for name in model.task_state_names(t)}
    if missing := sorted(set(model.state_dict()) - owned - loaded):
        raise UserError(f"{source}: no file holds {len(missing)} of the model's tensors ({', '.join(missing[:3])})")


def load(model: AdaptedModel, directory: str | Path) -> AdaptedModel:
    """Load what ``save`` wrote into a model built from the same config (before any task)."""
    base = read_base(Path(directory))
    trained = json.loads(base.metadata["trained_tasks"])
    for t in trained:
        restore(model, read_task(base, t))
    restore(model, base)
    check_complete(model, set(base.role("shared.")), trained, base.path)
    model.trained_tasks[:] = trained
    return model
