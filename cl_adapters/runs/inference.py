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

import hashlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cl_adapters.atomic import atomic_folder
from cl_adapters.errors import UserError, one_line
from cl_adapters.outputs import write_json_atomic
from cl_adapters.models import checkpoint
from cl_adapters.models.exports import adapterhub, peft
from cl_adapters.models.adapted import AdaptedModel
from cl_adapters.runs import allowlist
from cl_adapters.runs.build import build
from cl_adapters.runs.resume import Checkpoints
from cl_adapters.runs.rundir import RunDir, new_run_id, remove_temp_files


def build_model(config: dict, input_shape: tuple[int, ...], source: str | Path = "config",
                allow: Iterable[str] = ()) -> AdaptedModel:
    """The run's model before any task (backbone as configured, no adapters or heads yet). ``config``
    is checked against the allowlist first (``allow``: more targets you trust, e.g. ``my_streams.*``); what
    cannot be built from it is one line naming ``source``."""
    allowlist.check(config, source, allow)
    if not (isinstance(config, dict) and isinstance(config.get("model"), dict)
            and isinstance(config.get("strategy"), dict) and isinstance(config["strategy"].get("model"), dict)):
        raise UserError(f"{source}: its config has no model and strategy.model to build the model from")
    cfg = OmegaConf.create(config)
    try:
        backbone = build(cfg.model, "model", input_shape=tuple(input_shape))
        return build(cfg.strategy.model, "strategy.model")(backbone)
    except UserError as e:
        raise UserError(f"{source}: {e}") from None
    except (TypeError, ValueError, KeyError, AttributeError, OmegaConfBaseException) as e:
        raise UserError(f"{source}: its config does not build a model ({one_line(e)})") from None


def _chain(run_dir: str | Path) -> tuple[Checkpoints, list]:
    checkpoints = Checkpoints(run_dir)
    if not RunDir.is_busy(run_dir):  # no live run writes here: its temporary files are leftovers
        remove_temp_files(checkpoints.dir)
    links = checkpoints.chain()
    if not links:
        raise UserError(f"{checkpoints.dir}: no usable checkpoint (the run wrote none, or checkpoint=false)")
    _check_same_run(Path(run_dir) / "results.json", links[0])
    return checkpoints, links


def _check_same_run(results: Path, link) -> None:
    """The chain and the results beside it are one run's (a run dir copied, then rerun with
    checkpoint=false, would pair the new results with the old weights)."""
    try:
        run_id = json.loads(results.read_text())["run"]["id"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no results to contradict the chain
    if run_id != link.run_id:
        raise UserError(f"{results} is of run {run_id}, the checkpoints in {link.path.parent} of run {link.run_id}: "
                        "they are not this run's weights")


def _load(run_dir: str | Path, allow: Iterable[str]) -> tuple[AdaptedModel, list]:
    checkpoints, links = _chain(run_dir)
    head = links[0]
    model = build_model(head.config, links[-1].record["input_shape"], head.path, allow)
    checkpoints.load(model, links)
    total = len(links[-1].record["results"].get("accuracy_matrix", [])) or "?"
    print(f"load_run: {run_dir}: run {head.run_id}, tasks {model.trained_tasks} (checkpointed {len(links)} of {total})",
          file=sys.stderr)
    return model, links


def load_run(run_dir: str | Path, device: str = "cpu", allow: Iterable[str] = ()) -> AdaptedModel:
    """The model of ``run_dir`` after its newest good checkpoint, in eval mode (``model.trained_tasks``
    says which tasks it holds; a line on stderr too)."""
    return _load(run_dir, allow)[0].eval().to(device)


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


RUN_CONFIG = "config.json"  # in a cl-adapters export: the run's config and input shape, the files' digests
MARKER = "export.json"  # in an export of another format: what it is and where it came from
EXPORT_FORMAT = "cl-adapters export 1"
FORMATS = {"cl-adapters": None, "peft": peft.save_peft, "merged": peft.save_merged, "adapterhub": adapterhub.save_adapterhub}


def export(run_dir: str | Path, out_dir: str | Path, allow: Iterable[str] = (), format: str = "cl-adapters") -> Path:
    """The run's model as ``checkpoint.save`` files (``cl-adapters``: the base once and one file per task,
    head, adapter, fusion with their configs, for ``checkpoint.load``/``load_task`` into a model of the same
    config, and ``config.json`` binding them), or for other tools, ``task-<t>/`` per task
    (``models/exports/``): peft adapter folders (``peft``), plain Hugging Face encoders with the task's LoRA
    merged (``merged``), or AdapterHub adapter folders (``adapterhub``). ``out_dir`` is new, empty or an
    earlier export, never inside a run dir; it is replaced whole, so a failure halfway leaves it as it was."""
    if format not in FORMATS:
        raise UserError(f"export format must be one of {tuple(FORMATS)}, got {format!r}")
    out_dir = Path(out_dir)
    check_export_target(out_dir)
    model, links = _load(run_dir, allow)
    with atomic_folder(out_dir) as staged:
        if format == "cl-adapters":
            save_export(model, links[0].config, links[-1].record["input_shape"], staged, run=links[0].run_id,
                        input_dtype=links[-1].record.get("input_dtype") or "float32")
        else:
            FORMATS[format](model, staged)
            write_json_atomic(staged / MARKER, {"format": format, "run": links[0].run_id, "source": str(run_dir)})
    return out_dir


def save_export(model: AdaptedModel, config: dict, input_shape, out_dir: Path, run: str = "",
                input_dtype: str = "float32") -> Path:
    """``model`` (built from ``config`` for inputs of ``input_shape`` and ``input_dtype``, the stream's: uint8
    for image streams kept as pixels) as a cl-adapters export in ``out_dir``: its ``checkpoint.save`` files and
    the ``config.json`` that binds them (what ``export`` writes)."""
    export_id = new_run_id()
    record = {"format": EXPORT_FORMAT, "export_id": export_id, "run": run, "config": config,
              "input_shape": list(input_shape), "input_dtype": input_dtype,
              "files": checkpoint.save(model, out_dir, export_id)}
    write_json_atomic(Path(out_dir) / RUN_CONFIG, {**record, "digest": _digest(record)})
    return Path(out_dir)


def _digest(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def read_export(directory: Path) -> dict:
    """An export's ``config.json``, verified against its own digest: ``config``, ``input_shape``, ``files``,
    ``input_dtype`` (an export written before it was recorded: float32)."""
    path = directory / RUN_CONFIG
    try:
        record = json.loads(path.read_text())
        stored = record.pop("digest")
        fields = (record["format"], record["config"], record["input_shape"], record["files"][checkpoint.BASE])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: not a cl-adapters export's run config ({one_line(e)}); write one with export(run_dir, "
                        "out_dir)") from None
    if fields[0] != EXPORT_FORMAT or stored != _digest(record):
        raise UserError(f"{path}: its contents do not match its digest (edited, or written by another version)")
    return {"input_dtype": "float32", **record}


def check_export_target(out_dir: Path) -> None:
    """Refuse, before anything is loaded or written, a target an export would destroy: a run dir or a
    folder inside one, a file, or a folder holding anything but an earlier export."""
    resolved = out_dir.resolve()
    if run_dir := next((p for p in (resolved, *resolved.parents) if _is_run_dir(p)), None):
        raise UserError(f"cannot export into {out_dir}: it is inside the run dir {run_dir}; export to a folder of its own")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"cannot export into {out_dir}: it is a file")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not _is_export(out_dir):
        raise UserError(f"cannot export into {out_dir}: it holds files that are not an earlier export; give an empty or "
                        "new folder")


def _is_run_dir(folder: Path) -> bool:
    return (folder / "results.json").is_file() or (folder / ".hydra").is_dir() or (folder / "checkpoint").is_dir()


def _is_export(folder: Path) -> bool:
    for name in (RUN_CONFIG, MARKER):
        try:
            record = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and ("format" in record or {"config", "input_shape"} <= record.keys()):
            return True
    return False
