"""Predict with a run's model: rebuilt from the config stored in its checkpoint chain (only through the
project's own constructors, see ``allowlist``) and loaded from its safetensors files (nothing is
unpickled); a run that did not finish gives the tasks it checkpointed.

    from cl_adapters.runs.inference import load_run, predict, export
    model = load_run("outputs/2026-11-24/10-00-00_split_digits_adapter")
    labels = predict(model, x, task_labels)        # a batch may mix tasks: each sample is routed
    export("outputs/...", "my_adapters/")          # base.safetensors once + task-<t>.safetensors each
    Predictor("my_adapters/", capacity=8).predict(x, task_labels)  # adapters loaded on demand (predictor.py)
    export("outputs/...", "peft/", format="peft")  # LoRA runs on a HF encoder: a peft folder per task
    export("outputs/...", "merged/", format="merged")  # ... or a plain HF model per task, its LoRA merged
    export("outputs/...", "hub/", format="adapterhub")  # bottleneck adapters on a HF encoder: AdapterHub's format
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cl_adapters.errors import UserError
from cl_adapters.outputs import write_json_atomic
from cl_adapters.models import checkpoint
from cl_adapters.models.exports import adapterhub, peft
from cl_adapters.models.adapted import AdaptedModel
from cl_adapters.runs import allowlist
from cl_adapters.runs.resume import Checkpoints
from cl_adapters.runs.rundir import RunDir, remove_temp_files


def build_model(config: dict, input_shape: tuple[int, ...], source: str | Path = "config",
                allow: Iterable[str] = ()) -> AdaptedModel:
    """The run's model before any task (backbone as configured, no adapters or heads yet). ``config``
    is checked against the allowlist first (``allow``: more targets you trust, e.g. ``my_streams.*``)."""
    allowlist.check(config, source, allow)
    cfg = OmegaConf.create(config)
    backbone = instantiate(cfg.model, input_shape=tuple(input_shape))
    return instantiate(cfg.strategy.model)(backbone)


def _chain(run_dir: str | Path) -> tuple[Checkpoints, list]:
    checkpoints = Checkpoints(run_dir)
    if not RunDir.is_busy(run_dir):  # no live run writes here: its temporary files are leftovers
        remove_temp_files(checkpoints.dir)
    links = checkpoints.chain()
    if not links:
        raise UserError(f"{checkpoints.dir}: no usable checkpoint (the run wrote none, or checkpoint=false)")
    return checkpoints, links


def load_run(run_dir: str | Path, device: str = "cpu", allow: Iterable[str] = ()) -> AdaptedModel:
    """The model of ``run_dir`` after its newest good checkpoint, in eval mode (``model.trained_tasks``
    says which tasks it holds; a line on stderr too)."""
    checkpoints, links = _chain(run_dir)
    head = links[0]
    model = build_model(head.config or {}, links[-1].record["input_shape"], head.path, allow)
    checkpoints.load(model, links)
    total = len(links[-1].record["results"].get("accuracy_matrix", [])) or "?"
    print(f"load_run: {run_dir}: run {head.run_id}, tasks {model.trained_tasks} (checkpointed {len(links)} of {total})",
          file=sys.stderr)
    return model.eval().to(device)


@torch.no_grad()
def predict(model: AdaptedModel, x: torch.Tensor, task_labels: torch.Tensor | int | None = None) -> torch.Tensor:
    """Class ids: given ``task_labels``, within each sample's task (its own adapter and head, or its task's
    classes of a shared head) in every scenario, as ``accuracy_matrix_til`` measured a class/domain-IL run;
    without them (a class/domain-IL run), through the router's task or the one shared head."""
    if task_labels is None:
        return model.classify(x).argmax(1)
    asked = {int(t) for t in torch.as_tensor(task_labels).reshape(-1).tolist()}
    if unknown := sorted(asked - set(model.trained_tasks)):
        raise UserError(f"task(s) {unknown} were not trained in this model (it holds tasks {model.trained_tasks})")
    with model.given_task_labels():  # the labels given pick the task, not a router
        return model(x, task_labels).argmax(1)


RUN_CONFIG = "config.json"  # in a cl-adapters export: the run's config and input shape
FORMATS = {"cl-adapters": checkpoint.save, "peft": peft.save_peft, "merged": peft.save_merged,
           "adapterhub": adapterhub.save_adapterhub}


def export(run_dir: str | Path, out_dir: str | Path, allow: Iterable[str] = (), format: str = "cl-adapters") -> Path:
    """The run's model as ``checkpoint.save`` files (``cl-adapters``: the base once and one file per task,
    head, adapter, fusion with their configs, for ``checkpoint.load``/``load_task`` into a model of the same
    config), or for other tools, ``task-<t>/`` per task (``models/exports/``): peft adapter folders
    (``peft``), plain Hugging Face encoders with the task's LoRA merged (``merged``), or AdapterHub adapter
    folders (``adapterhub``)."""
    if format not in FORMATS:
        raise UserError(f"export format must be one of {tuple(FORMATS)}, got {format!r}")
    FORMATS[format](load_run(run_dir, allow=allow), out_dir)
    if format == "cl-adapters":  # what a Predictor rebuilds the model from
        _, links = _chain(run_dir)
        write_json_atomic(Path(out_dir) / RUN_CONFIG, {"config": links[0].config, "input_shape": links[-1].record["input_shape"]})
    return Path(out_dir)
