"""A run's model in formats other tools load: ``peft`` (LoRA adapter folders), ``merged`` (a plain Hugging
Face model per task, its LoRA merged) and ``adapterhub`` (the ``adapters`` library's saved adapters).
Each writes ``<out>/task-<t>/`` per task with the task's ``head.safetensors``, and refuses, in one line and
before writing anything, a model the format cannot reproduce. (The project's own format, which holds
everything, is ``models/checkpoint.py``.)"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch

from cl_adapters.atomic import atomic_path
from cl_adapters.errors import UserError
from cl_adapters.models.adapted import AdaptedModel
from cl_adapters.models.hf_encoder import HFEncoder


def check_encoder(model: AdaptedModel, fmt: str, unchanged_base: bool = True) -> None:
    """What every format needs: a Hugging Face encoder; with ``unchanged_base``, its pretrained weights as
    they were loaded (the format holds only the adapters). A router is not exported: each task's folder is
    that task's model."""
    if not isinstance(model.backbone, HFEncoder):
        raise UserError(f"format={fmt} needs a Hugging Face encoder (model=hf_encoder); this model's backbone is "
                        f"{type(model.backbone).__name__}")
    if model.backbone.quantized:
        raise UserError(f"format={fmt}: the base is quantized (model.quantize={model.backbone.quantized}), the format's "
                        "base is not; export the run with format=cl-adapters")
    if unchanged_base and (model.train_backbone != "never" or model.train_biases):
        raise UserError(f"format={fmt}: the backbone trained in this run (train_backbone={model.train_backbone}, "
                        f"train_biases={model.train_biases}); the format holds only adapters over the unchanged base")


def save_head(model: AdaptedModel, task: int, path: Path) -> None:
    """The task's linear head, with what turns the encoder's output into its input (pooling, pad id)."""
    head, encoder = model.heads[model.head_key(task)], model.backbone
    meta = {"classes": json.dumps(head.classes), "pooling": encoder.pooling, "pad_token_id": str(encoder.pad_token_id),
            "task": str(task)}
    with atomic_path(path) as tmp:
        tmp.write_bytes(safetensors.torch.save({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()},
                                               metadata=meta))
