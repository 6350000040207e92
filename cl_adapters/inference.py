"""Predict with a run's model: rebuilt from the config in its checkpoints and loaded from their
safetensors files (nothing is unpickled), the newest intact task included.

    from cl_adapters.inference import load_run, predict, export
    model = load_run("outputs/2026-11-24/10-00-00_split_digits_adapter")
    labels = predict(model, x, task_labels)        # a batch may mix tasks: each sample is routed
    export("outputs/...", "my_adapters/")          # base.safetensors once + task-<t>.safetensors each
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cl_adapters.errors import UserError
from cl_adapters.models import checkpoint
from cl_adapters.models.adapted import AdaptedModel
from cl_adapters.resume import Checkpoints


def build_model(config: dict, input_shape: tuple[int, ...]) -> AdaptedModel:
    """The run's model before any task (backbone as configured, no adapters or heads yet)."""
    cfg = OmegaConf.create(config)
    backbone = instantiate(cfg.model, input_shape=tuple(input_shape))
    return instantiate(cfg.strategy.model)(backbone)


def load_run(run_dir: str | Path, device: str = "cpu") -> AdaptedModel:
    """The model of ``run_dir`` after its last checkpointed task, in eval mode."""
    checkpoints = Checkpoints(run_dir, {})
    records = checkpoints.records()
    if not records:
        raise UserError(f"{checkpoints.dir}: no usable checkpoint (the run wrote none, or checkpoint=false)")
    model = build_model(records[-1]["config"], records[-1]["input_shape"])
    checkpoints.load(model, records)
    return model.eval().to(device)


@torch.no_grad()
def predict(model: AdaptedModel, x: torch.Tensor, task_labels: torch.Tensor | int) -> torch.Tensor:
    """Class indices within each sample's task (its own adapter and head)."""
    return model(x, task_labels).argmax(1)


def export(run_dir: str | Path, out_dir: str | Path) -> Path:
    """The run's model as ``checkpoint.save`` files: the base once and one file per task (head, adapter,
    fusion, with their configs), for ``checkpoint.load``/``load_task`` into a model of the same config."""
    return checkpoint.save(load_run(run_dir), out_dir)
