"""Pretrained timm models as backbones, by name, as PILOT and RevisitingCIL create theirs
(``timm.create_model("vit_base_patch16_224_in21k", pretrained=True, num_classes=0)``, utils/inc_net.py).

Weights: ``pretrained: true`` downloads timm's (a network), or ``checkpoint_path`` names a local safetensors
file of the model's weights (a classifier head in it is dropped; any other tensor that does not fit is an
error, none is left at random). Names timm has retired still load, under their current name (timm 1.x:
``vit_base_patch16_224_in21k`` is ``vit_base_patch16_224.augreg_in21k``, the AugReg ImageNet-21k weights).
``model_kwargs`` go to ``timm.create_model`` (e.g. ``img_size``, ``drop_path_rate``); the preprocessing's
size, interpolation, mean and std are timm's ``resolve_data_config`` for the model and those kwargs.
Features: the CLS token of ``forward_features`` (``cls``, what ``num_classes=0`` returns for a ViT) or the
mean of the patch tokens (``mean``; a CNN's feature map: its spatial mean). ``quantize``, ``dropout`` (every
``nn.Dropout``'s probability), ``augment`` and ``normalize`` as ``HFVision``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cl_adapters.errors import UserError
from cl_adapters.models.backbones import check_dropout
from cl_adapters.models.hf_vision import POOLINGS
from cl_adapters.models.images import ImagePreprocess, check_image_shape
from cl_adapters.models.quantize import check_kind, quantize_pretrained

DEFAULT = "vit_base_patch16_224_in21k"  # PILOT's ViT-B/16-IN21K


def current_name(name: str) -> str:
    """``name`` as timm knows it now: a retired name maps to its replacement (said once, on stdout)."""
    import timm
    from timm.models import get_deprecated_models

    renamed = get_deprecated_models()
    if name in renamed:
        if renamed[name] is None:
            raise UserError(f"model.name={name!r} was removed from timm {timm.__version__} without a replacement")
        print(f"model.name={name}: timm {timm.__version__} calls it {renamed[name]}; loading that")
        return renamed[name]
    if not timm.is_model(name.split(".", 1)[0]):
        raise UserError(f"model.name={name!r} is not a timm {timm.__version__} model "
                        "(timm.list_models('vit_*') lists some)")
    return name


def load_weights(model: nn.Module, path: str) -> None:
    """Every tensor of ``model`` from the safetensors file ``path`` (its classifier head, if any, dropped)."""
    import safetensors
    import safetensors.torch

    if Path(path).suffix != ".safetensors" or not Path(path).is_file():
        raise UserError(f"model.checkpoint_path={path!r} must be a .safetensors file (cl-adapters loads no pickles)")
    try:
        state = safetensors.torch.load_file(path)
    except (OSError, safetensors.SafetensorError) as e:  # a truncated or foreign file
        raise UserError(f"model.checkpoint_path={path!r} could not be read: {' '.join(str(e).split())}") from e
    heads = model.pretrained_cfg.get("classifier") or ()
    for head in [heads] if isinstance(heads, str) else heads:
        if not any(k.startswith(f"{head}.") for k in model.state_dict()):
            state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        why = " ".join(lines[1:2] or lines[:1])
        raise UserError(f"model.checkpoint_path={path!r} does not fit the model: {why}") from e


class TimmBackbone(nn.Module):
    inputs = "float"

    def __init__(self, input_shape: tuple[int, ...] | None = None, name: str = DEFAULT, pretrained: bool = True,
                 checkpoint_path: str | None = None, model_kwargs: dict | None = None, pooling: str = "cls",
                 quantize: str | None = None, dropout: float | None = None, augment: bool = True,
                 normalize: bool = True, crop_pct: float | None = None):
        super().__init__()
        import timm
        from timm.data import resolve_data_config

        if pooling not in POOLINGS:
            raise UserError(f"model.pooling must be one of {POOLINGS}, got {pooling!r}")
        check_dropout(dropout, null="the model's own")
        check_kind(quantize)
        check_image_shape(input_shape, "timm")
        self.name = current_name(name)
        kwargs = dict(model_kwargs or {})
        download = bool(pretrained) and not checkpoint_path
        try:
            self.model = timm.create_model(self.name, pretrained=download, num_classes=0, **kwargs)
        except (TypeError, AssertionError) as e:  # a keyword the architecture does not take, or a bad value
            raise UserError(f"model.model_kwargs={kwargs}: {' '.join(str(e).split()) or type(e).__name__}") from e
        except (OSError, RuntimeError) as e:  # no network, or no weights for this name
            if not download:
                raise
            why = " ".join(str(e).split())[:200]
            raise UserError(f"model.name={self.name!r}: pretrained weights could not be loaded ({why}); without a "
                            "network give model.checkpoint_path (a .safetensors file)") from e
        if checkpoint_path:
            load_weights(self.model, checkpoint_path)
        if dropout is not None:
            for module in self.model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = float(dropout)
        size = kwargs.get("img_size")  # the model's own size where it was given one
        data = resolve_data_config({"input_size": (3, *size)} if isinstance(size, (list, tuple)) else {"img_size": size},
                                   model=self.model)
        self.preprocess = ImagePreprocess(data["input_size"][1:], data["mean"], data["std"], data["interpolation"],
                                          augment=augment, normalize=normalize, crop_pct=crop_pct)
        self.prefix_tokens = getattr(self.model, "num_prefix_tokens", 0)
        if pooling == "cls" and not self.prefix_tokens:
            raise UserError(f"model.pooling=cls: {self.name} has no CLS token; use model.pooling=mean")
        self.pooling = pooling
        vit = isinstance(self.model, timm.models.VisionTransformer)  # its preset; another architecture: targets
        self.family = "timm_vit" if vit else f"timm_{type(self.model).__name__.lower()}"
        self.pretrained = bool(pretrained or checkpoint_path)
        self.out_features = self.model.num_features
        quantize_pretrained(self, quantize)  # a pretrained base is quantized as it loads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_features(self.preprocess(x))
        if features.dim() == 4:  # a CNN's (B, C, H, W) map
            return features.mean((2, 3))
        return features[:, 0] if self.pooling == "cls" else features[:, self.prefix_tokens:].mean(1)
