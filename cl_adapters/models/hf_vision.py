"""Pretrained Hugging Face image models (ViT, DeiT, BEiT, DINOv2, the CLIP vision tower, ...) as backbones.

``name_or_path`` is a hub id or a local folder holding the model and its image processor config
(``preprocessor_config.json``): the input size (its crop size if it centre-crops), resample, mean and std
of the preprocessing (``images.py``) are that config's. A vision-language checkpoint (a config with a
``vision_config``: CLIP, SigLIP) loads its vision tower (``CLIPVisionModel``). Features: the first token of the
last hidden state (``cls``; CLIP: before its ``post_layernorm``) or the mean of the patch tokens (``mean``:
after the CLS, distillation or register tokens). ``quantize`` and ``dropout`` as ``HFEncoder``.
"""

from __future__ import annotations

import torch
from torch import nn

from cl_adapters.errors import UserError
from cl_adapters.hub import from_pretrained
from cl_adapters.models.backbones import check_dropout
from cl_adapters.models.hf_encoder import set_dropout
from cl_adapters.models.images import ImagePreprocess, check_image_shape
from cl_adapters.models.quantize import check_kind, quantize_pretrained

POOLINGS = ("cls", "mean")
DEFAULT = "google/vit-base-patch16-224-in21k"  # ViT-B/16, ImageNet-21k (the original JAX weights)


def processor_settings(processor) -> dict:
    """The preprocessing a Hugging Face image processor describes: size, interpolation, mean, std."""
    size = processor.crop_size if getattr(processor, "do_center_crop", False) else getattr(processor, "size", None)
    size = dict(size or {})
    if "height" in size and "width" in size:
        hw = (size["height"], size["width"])
    elif "shortest_edge" in size:
        hw = (size["shortest_edge"],) * 2
    else:
        raise UserError(f"the image processor config gives no input size (size={size})")
    normalize = getattr(processor, "do_normalize", True)
    return {"size": hw, "interpolation": int(getattr(processor, "resample", 3)),
            "mean": list(processor.image_mean) if normalize else [0.0] * 3,
            "std": list(processor.image_std) if normalize else [1.0] * 3}


class HFVision(nn.Module):
    pretrained = True
    inputs = "float"

    def __init__(self, input_shape: tuple[int, ...] | None = None, name_or_path: str = DEFAULT, pooling: str = "cls",
                 quantize: str | None = None, dropout: float | None = None, augment: bool = True,
                 normalize: bool = True, crop_pct: float | None = None):
        super().__init__()
        from transformers import MODEL_MAPPING, AutoConfig, AutoImageProcessor, AutoModel

        if pooling not in POOLINGS:
            raise UserError(f"model.pooling must be one of {POOLINGS}, got {pooling!r}")
        check_dropout(dropout, null="the checkpoint's own")
        check_kind(quantize)
        check_image_shape(input_shape, "hf_vision")
        self.name_or_path = name_or_path or DEFAULT
        where = f"model.name_or_path={self.name_or_path!r}"
        try:
            config = from_pretrained(AutoConfig, self.name_or_path)
        except (OSError, ValueError) as e:  # a missing folder, a bad id, or a hub id with no network
            raise UserError(f"{where} could not be loaded: {str(e).splitlines()[0]}") from e
        config = getattr(config, "vision_config", None) or config  # a vision-language model: its vision tower
        model_class = MODEL_MAPPING[type(config)] if type(config) in MODEL_MAPPING else None
        if getattr(model_class, "main_input_name", None) != "pixel_values" or not isinstance(
                getattr(config, "hidden_size", None), int):
            raise UserError(f"{where} is a {config.model_type} checkpoint, not an image transformer: model=hf_vision "
                            "loads ViT, DeiT, BEiT, DINOv2, CLIP, ... (text encoders: model=hf_encoder)")
        try:
            self.model = from_pretrained(AutoModel, self.name_or_path, config=set_dropout(config, dropout))
            processor = from_pretrained(AutoImageProcessor, self.name_or_path, use_fast=False)
        except (OSError, ValueError) as e:  # no weights, or no preprocessor_config.json beside them
            raise UserError(f"{where} could not be loaded: {str(e).splitlines()[0]}") from e
        self.preprocess = ImagePreprocess(**processor_settings(processor), augment=augment, normalize=normalize,
                                          crop_pct=crop_pct)
        self.family = config.model_type
        self.pooling = pooling
        self.patch_size = getattr(config, "patch_size", None)
        self.out_features = config.hidden_size
        quantize_pretrained(self, quantize)  # a pretrained base is quantized as it loads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x)
        hidden = self.model(pixel_values=x).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        first = 0
        if self.patch_size is not None:  # the patch tokens come after the CLS (distillation, register) tokens
            ph, pw = (self.patch_size,) * 2 if isinstance(self.patch_size, int) else self.patch_size
            first = hidden.shape[1] - (x.shape[-2] // ph) * (x.shape[-1] // pw)
        return hidden[:, first:].mean(1)
