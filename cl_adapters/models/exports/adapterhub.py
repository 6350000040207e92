"""A model's bottleneck adapters in AdapterHub's saved format (the ``adapters`` library), one folder per
task, written by the library itself (``save_adapter``) after our weights are copied into its adapter:

    <out>/task-<t>/adapter_config.json, pytorch_adapter.bin   load_adapter(folder) on adapters.init(AutoModel)
    <out>/task-<t>/head.safetensors                           the task's head (as in the peft export)

    base = AutoModel.from_pretrained(name_or_path); adapters.init(base)
    name = base.load_adapter("<out>/task-0"); base.set_active_adapters(name)

Our adapter is ``h + scaling * up(act(down(h)))`` on a sublayer's output (Houlsby: attention and FFN,
Pfeiffer: FFN) or beside the FFN (parallel), before the residual add and LayerNorm. AdapterHub's
``BnConfig`` with ``original_ln_before=False, original_ln_after=True, residual_before_ln=True`` and no
adapter LayerNorms computes exactly that (its named Pfeiffer config normalises before the adapter too,
so it is not used). Fusions are not exported yet.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cl_adapters.adapters.bottleneck.config import AdapterConfig
from cl_adapters.errors import UserError
from cl_adapters.models.adapted import AdaptedModel
from cl_adapters.models.exports import check_encoder, save_head

FAMILIES = ("bert", "roberta", "xlm-roberta", "electra")  # our BERT-like presets, which AdapterHub also adapts
ACTIVATIONS = ("relu", "silu", "gelu", "tanh", "sigmoid")  # the same function under the same name in both


def hub_config(model: AdaptedModel):
    """AdapterHub's ``BnConfig`` computing our adapter (see the module docstring); refuses what it cannot."""
    import adapters

    check_encoder(model, "adapterhub")
    cfg, hidden = model.adapter_config, model.backbone.out_features
    if type(cfg) is not AdapterConfig:  # not Compacter's subclass either: its PHM layers are not Linear
        kind = "none" if cfg is None else type(cfg).__name__
        raise UserError(f"format=adapterhub exports bottleneck adapters (adapter=houlsby|pfeiffer|parallel); this "
                        f"model's adapter is {kind}")
    if model.fusion is not None:
        raise UserError("format=adapterhub: fusions are not exported yet (export the run with format=cl-adapters)")
    if model.backbone.family not in FAMILIES or cfg.targets is not None:
        raise UserError(f"format=adapterhub: adapters at the preset places of a {'/'.join(FAMILIES)} encoder only "
                        f"(this one: family {model.backbone.family}, adapter.targets {cfg.targets})")
    if cfg.activation not in ACTIVATIONS:
        raise UserError(f"format=adapterhub: adapter.activation {cfg.activation!r} has no AdapterHub equivalent "
                        f"(one of {ACTIVATIONS})")
    if hidden // (hidden / cfg.r) != cfg.r:
        raise UserError(f"format=adapterhub: adapter.r={cfg.r} is not reachable as {hidden} // reduction_factor")
    return adapters.BnConfig(mh_adapter=cfg.placement == "houlsby", output_adapter=True, reduction_factor=hidden / cfg.r,
                             non_linearity=cfg.activation, is_parallel=cfg.placement == "parallel", scaling=float(cfg.scaling),
                             dropout=cfg.dropout, original_ln_before=False, original_ln_after=True,
                             residual_before_ln=True, ln_before=False, ln_after=False)


def hub_module_name(layer_name: str) -> str:
    """Where AdapterHub keeps the adapter our layer ``model.encoder.layer.3.output.dense`` wraps: its parent,
    ``encoder.layer.3.output`` (HFEncoder holds the Hugging Face model as ``.model``)."""
    return layer_name.removeprefix("model.").removesuffix(".dense")


def save_adapterhub(model: AdaptedModel, out_dir: str | Path) -> list[Path]:
    """One AdapterHub adapter folder per trained task; returns the folders."""
    import adapters
    from transformers import AutoModel

    config = hub_config(model)
    hub = AutoModel.from_config(model.backbone.model.config)  # only the adapters are saved: no base weights needed
    adapters.init(hub)
    folders = []
    for task in model.trained_tasks:
        name, key = f"task_{task}", model.adapter_key(task)
        hub.add_adapter(name, config=config)
        with torch.no_grad():
            for layer_name, layer in zip(model.adapters.layer_names, model.adapters.layers):
                theirs, ours = hub.get_submodule(hub_module_name(layer_name)).adapters[name], layer.adapters[key]
                theirs.adapter_down[0].load_state_dict(ours.down.state_dict())
                theirs.adapter_up.load_state_dict(ours.up.state_dict())
        folder = Path(out_dir) / f"task-{task}"
        hub.save_adapter(str(folder), name)
        hub.delete_adapter(name)
        save_head(model, task, folder / "head.safetensors")
        folders.append(folder)
    return folders
