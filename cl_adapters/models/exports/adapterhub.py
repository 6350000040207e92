"""A model's bottleneck adapters in AdapterHub's saved format (the ``adapters`` library), one folder per
task, written by the library itself (``save_adapter``) after our weights are copied into its adapter:

    <out>/task-<t>/adapter_config.json, pytorch_adapter.bin   load_adapter(folder) on adapters.init(AutoModel)
    <out>/task-<t>/head.safetensors                           the task's head (as in the peft export)
    <out>/task-<t>/fusion/                                    its fusion (save_adapter_fusion), if it has one

    base = AutoModel.from_pretrained(name_or_path); adapters.init(base)
    name = base.load_adapter("<out>/task-0"); base.set_active_adapters(name)
    # a fused task: load_adapter every task it fuses, load_adapter_fusion("<out>/task-<t>/fusion"),
    # set_active_adapters(Fuse("task_0", ..., "task_<t>"))

Our adapter is ``h + scaling * up(act(down(h)))`` on a sublayer's output (Houlsby: attention and FFN,
Pfeiffer: FFN) or beside the FFN (parallel), before the residual add and LayerNorm. AdapterHub's
``BnConfig`` with ``original_ln_before=False, original_ln_after=True, residual_before_ln=True`` and no
adapter LayerNorms computes exactly that (its named Pfeiffer config normalises before the adapter too,
so it is not used). Our fusion ``softmax(Q h . K d_n / T)`` maps onto AdapterHub's (T = 1) with 1/T folded
into Q and a low-rank Q/K zero-padded to full width; its value matrix has no bias, so a fusion whose
value bias is not zero (ours learns one) cannot be written exactly and is refused.
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


def hub_fusion_config(model: AdaptedModel):
    """AdapterHub's fusion config computing ours (see the module docstring), or None without fusions."""
    import adapters

    if model.fusion is None:
        return None
    if (model.fusion.rank or 0) > model.backbone.out_features:
        raise UserError(f"format=adapterhub: fusion.rank={model.fusion.rank} is wider than AdapterHub's query "
                        f"({model.backbone.out_features})")
    for task in model.trained_tasks:
        for fusion in model.fusions(task):
            if fusion.value is not None and fusion.value.bias.any():
                raise UserError(f"format=adapterhub: task {task}'s fusion has a value bias (max |b| "
                                f"{fusion.value.bias.abs().max().item():.2g}), AdapterHub's value matrix has none; "
                                "export the run with format=cl-adapters")
    return adapters.AdapterFusionConfig.load("dynamic", value=model.fusion.value, value_initialized=False,
                                             regularization=bool(model.fusion.regularization))


def copy_fusion(ours, theirs) -> None:
    """Our fusion's weights into AdapterHub's (full width; 1/T folded into the query)."""
    rank = ours.query.out_features
    for mine, hub, scale in ((ours.query, theirs.query, 1 / ours.temperature), (ours.key, theirs.key, 1.0)):
        hub.weight.zero_()
        hub.bias.zero_()
        hub.weight[:rank] = mine.weight * scale
        if mine.bias is not None:
            hub.bias[:rank] = mine.bias * scale
    if ours.value is not None:
        theirs.value.weight.copy_(ours.value.weight)


def hub_module_name(layer_name: str) -> str:
    """Where AdapterHub keeps the adapter our layer ``model.encoder.layer.3.output.dense`` wraps: its parent,
    ``encoder.layer.3.output`` (HFEncoder holds the Hugging Face model as ``.model``)."""
    return layer_name.removeprefix("model.").removesuffix(".dense")


def save_adapterhub(model: AdaptedModel, out_dir: str | Path) -> list[Path]:
    """One AdapterHub adapter folder per trained task; returns the folders."""
    import adapters
    from transformers import AutoModel

    config, fusion_config = hub_config(model), hub_fusion_config(model)
    hub = AutoModel.from_config(model.backbone.model.config)  # only the adapters are saved: no base weights needed
    adapters.init(hub)
    places = [(hub.get_submodule(hub_module_name(name)), layer)
              for name, layer in zip(model.adapters.layer_names, model.adapters.layers)]
    folders = []
    for task in model.trained_tasks:
        name, key, folder = f"task_{task}", model.adapter_key(task), Path(out_dir) / f"task-{task}"
        hub.add_adapter(name, config=config)
        folder.mkdir(parents=True, exist_ok=True)  # AdapterHub makes only the last folder of the path
        with torch.no_grad():
            for theirs, ours in places:
                theirs.adapters[name].adapter_down[0].load_state_dict(ours.adapters[key].down.state_dict())
                theirs.adapters[name].adapter_up.load_state_dict(ours.adapters[key].up.state_dict())
        hub.save_adapter(str(folder), name)
        if fusions := model.fusions(task):
            fused = adapters.Fuse(*(f"task_{k}" for k in fusions[0].keys))
            hub.add_adapter_fusion(fused, config=fusion_config)
            with torch.no_grad():
                for (theirs, ours), fusion in zip(places, fusions):
                    copy_fusion(fusion, theirs.adapter_fusion_layer[fused.name])
            hub.save_adapter_fusion(str(folder / "fusion"), fused)
        save_head(model, task, folder / "head.safetensors")
        folders.append(folder)
    return folders
