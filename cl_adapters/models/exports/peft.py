"""A model's LoRAs as peft adapter folders: what ``PeftModel.from_pretrained`` and multi-LoRA inference
servers load, one folder per task, over the unchanged pretrained encoder; or merged into it (peft's
merge), one plain Hugging Face model per task, with no adapter left to compute at inference.

    <out>/task-<t>/adapter_config.json        peft's LoraConfig (FEATURE_EXTRACTION, the base's name or path)
    <out>/task-<t>/adapter_model.safetensors  the LoRA the task uses (its own; or the one all tasks share)
    <out>/task-<t>/head.safetensors           its linear head over the pooled features (metadata: label ids,
                                              pooling, pad token id)

    base = AutoModel.from_pretrained(config["base_model_name_or_path"])
    encoder = PeftModel.from_pretrained(base, "<out>/task-0").eval()
    hidden = encoder(input_ids=ids, attention_mask=ids != pad).last_hidden_state   # pool, then the head

    <out>/task-<t>/config.json, model.safetensors  (save_merged) the encoder with the task's LoRA merged:
                                              AutoModel.from_pretrained("<out>/task-<t>"); head as above

Only what these folders can hold is exported: LoRAs on a Hugging Face encoder, frozen for a peft folder.
"""

from __future__ import annotations

import copy
from pathlib import Path

import safetensors.torch

from cl_adapters.adapters.lora.model import LoraAdapters
from cl_adapters.atomic import atomic_path
from cl_adapters.errors import UserError
from cl_adapters.models.adapted import AdaptedModel
from cl_adapters.models.exports import check_encoder, save_head

PREFIX = "base_model.model."  # PeftModel's name for the wrapped Hugging Face model


def check_exportable(model: AdaptedModel, unchanged_base: bool = True) -> None:
    """Refuse, in one line, a model these formats cannot reproduce (a merged model holds the whole encoder:
    its backbone may have trained, ``unchanged_base=False``)."""
    fmt = "peft" if unchanged_base else "merged"
    check_encoder(model, fmt, unchanged_base)
    if not isinstance(model.adapters, LoraAdapters):
        kind = "none" if model.adapter_config is None else type(model.adapter_config).__name__
        raise UserError(f"format={fmt} exports LoRAs (strategy=lora_per_task or lora); this model's adapter is {kind}")
    if model.adapters.merged is not None:
        raise UserError(f"format={fmt}: LoRA {model.adapters.merged} is merged into the base weights")


def lora_names(model: AdaptedModel) -> list[str]:
    """The LoRA layers' names in the Hugging Face model (HFEncoder keeps it as ``.model``)."""
    return [name.removeprefix("model.") for name in model.adapters.layer_names]


def save_peft(model: AdaptedModel, out_dir: str | Path) -> list[Path]:
    """One peft folder per trained task (see the module docstring); returns the folders."""
    from peft import LoraConfig

    check_exportable(model)
    lora, encoder, names = model.adapters, model.backbone, lora_names(model)
    config = LoraConfig(task_type="FEATURE_EXTRACTION", r=model.adapter_config.r, lora_alpha=model.adapter_config.alpha,
                        lora_dropout=model.adapter_config.dropout, target_modules=names, bias="none",
                        base_model_name_or_path=encoder.name_or_path, inference_mode=True)
    folders = []
    for task in model.trained_tasks:
        folder = Path(out_dir) / f"task-{task}"
        folder.mkdir(parents=True, exist_ok=True)
        key = model.adapter_key(task)
        tensors = {f"{PREFIX}{name}.{part}.weight": getattr(layer, part)[key].weight.detach().cpu().contiguous()
                   for name, layer in zip(names, lora.layers) for part in ("lora_A", "lora_B")}
        with atomic_path(folder / "adapter_model.safetensors") as tmp:
            tmp.write_bytes(safetensors.torch.save(tensors, metadata={"format": "pt"}))
        save_head(model, task, folder / "head.safetensors")
        config.save_pretrained(str(folder))
        folders.append(folder)
    return folders


def merged_encoder(model: AdaptedModel, task: int):
    """A copy of the Hugging Face encoder with ``task``'s LoRA merged into its weights (peft's merge) and
    every LoRA layer replaced by its base layer: a plain model of the base's class."""
    check_exportable(model, unchanged_base=False)
    encoder, key = copy.deepcopy(model.backbone.model), model.adapter_key(task)
    for name in lora_names(model):
        layer = encoder.get_submodule(name)
        layer.merge(adapter_names=[key])
        parent, _, child = name.rpartition(".")
        setattr(encoder.get_submodule(parent), child, layer.get_base_layer())
    return encoder.eval()


def save_merged(model: AdaptedModel, out_dir: str | Path) -> list[Path]:
    """Per trained task, the merged encoder (``save_pretrained``) and its head; returns the folders (the
    first ``merged_encoder`` refuses what cannot be merged, before anything is written)."""
    folders = []
    for task in model.trained_tasks:
        folder = Path(out_dir) / f"task-{task}"
        merged_encoder(model, task).save_pretrained(folder)
        save_head(model, task, folder / "head.safetensors")
        folders.append(folder)
    return folders
