"""What a pretrained image backbone does to a batch before its first layer, on the batch's device: the
checkpoint's own input size, interpolation, mean and std (read from it by ``HFVision`` and ``TimmBackbone``,
never assumed), and, while training, PILOT's train-time augmentation.

Images come as uint8 (0..255) or float (0..1), (B, 3, H, W) of any size (1 channel: grey, repeated). In
training mode with ``augment``, each sample gets its own random resized crop and horizontal flip, as in
PILOT / RevisitingCIL's ``build_transform(is_train=True)`` (utils/data.py): ``RandomResizedCrop(224,
scale=(0.05, 1.0), ratio=(3/4, 4/3))`` + ``RandomHorizontalFlip(p=0.5)``; the crop is resampled straight to
the model's size (bilinear, torchvision's default there; ``resized_crops`` says how). Otherwise (eval mode:
evaluation and the feature passes of NCM, routers and probes) the whole image is resized to the model's
size. Then ``(x - mean) / std``; with ``normalize=False``, 0..1 pixels as PILOT feeds them (its transforms
end at ``ToTensor()``, no ``Normalize``). In training the normalisation comes first: a bilinear resample
is a weighted mean, so the values are the same, and a CIFAR image has 49x fewer pixels before it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cl_adapters.errors import UserError

SCALE, RATIO = (0.05, 1.0), (3 / 4, 4 / 3)  # PILOT's RandomResizedCrop
MODES = {"nearest": "nearest", "bilinear": "bilinear", "bicubic": "bicubic"}  # others resize bicubic
PIL_MODES = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # a Hugging Face processor's ``resample`` (PIL's codes)


class ImagePreprocess(nn.Module):
    """uint8 or float images (B, C, H, W) -> the model's float input (B, 3, *size)."""

    def __init__(self, size: tuple[int, int], mean, std, interpolation: str | int = "bicubic", augment: bool = True,
                 normalize: bool = True):
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise UserError(f"the checkpoint's image mean/std must be 3 values each, std > 0: got {mean}, {std}")
        self.size, self.augment, self.normalize = (int(size[0]), int(size[1])), augment, normalize
        self.interpolation = (PIL_MODES if isinstance(interpolation, int) else MODES).get(interpolation, "bicubic")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        return (f"size={self.size}, interpolation={self.interpolation}, mean={self.mean.flatten().tolist()}, "
                f"std={self.std.flatten().tolist()}, augment={self.augment}, normalize={self.normalize}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise UserError(f"an image backbone takes (B, 3, H, W) images (or 1 channel), got shape {tuple(x.shape)}")
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.training and self.augment:
            return random_resized_crop_flip(self._normalized(x), self.size)
        if tuple(x.shape[-2:]) != self.size:
            smooth = self.interpolation != "nearest"
            x = F.interpolate(x, self.size, mode=self.interpolation, antialias=smooth,
                              **({"align_corners": False} if smooth else {}))
        return self._normalized(x)

    def _normalized(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std if self.normalize else x


def crop_boxes(n: int, height: int, width: int, device, tries: int = 10) -> torch.Tensor:
    """(n, 4) boxes (top, left, h, w) drawn as torchvision's ``RandomResizedCrop.get_params`` draws one: up to
    ``tries`` area/aspect draws, the first that fits, else the centre crop clamped to the ratio range."""
    area = height * width
    target = area * torch.empty(n, tries, device=device).uniform_(*SCALE)
    aspect = torch.exp(torch.empty(n, tries, device=device).uniform_(math.log(RATIO[0]), math.log(RATIO[1])))
    w, h = torch.sqrt(target * aspect).round(), torch.sqrt(target / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.float().argmax(1, keepdim=True)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    ratio = width / height  # the fallback, as torchvision's
    fw, fh = (width, round(width / RATIO[0])) if ratio < RATIO[0] else (
        (round(height * RATIO[1]), height) if ratio > RATIO[1] else (width, height))
    ok = fits.any(1)
    w, h = torch.where(ok, w, float(min(fw, width))), torch.where(ok, h, float(min(fh, height)))
    top = torch.where(ok, torch.floor(torch.rand(n, device=device) * (height - h + 1)), (height - h) // 2)
    left = torch.where(ok, torch.floor(torch.rand(n, device=device) * (width - w + 1)), (width - w) // 2)
    return torch.stack([top, left, h, w], 1)


def random_resized_crop_flip(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each image's own random crop (``crop_boxes``), flipped left-right with p=0.5, resampled to ``size``."""
    flip = torch.rand(len(x), device=x.device) < 0.5
    return resized_crops(x, crop_boxes(len(x), *x.shape[-2:], x.device), flip, size)


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Image i's box (top, left, h, w, whole pixels), mirrored where ``flip[i]``, resampled (bilinear) to ``size``.
    On a CPU each crop is resized on its own, antialiased as PIL resizes PILOT's crops: 3-4x faster there than
    one ``grid_sample`` for the batch (benchmarks/image_path.py). On an accelerator, that ``grid_sample``
    mapping the output's [-1, 1] square onto each box: one kernel, not a few per image."""
    if x.device.type == "cpu":
        out = x.new_empty((len(x), x.shape[1], *size))
        for i, ((top, left, h, w), mirror) in enumerate(zip(boxes.long().tolist(), flip.tolist())):
            crop = x[i : i + 1, :, top : top + h, left : left + w]
            out[i : i + 1] = F.interpolate(crop.flip(-1) if mirror else crop, size, mode="bilinear",
                                           align_corners=False, antialias=True)
        return out
    n, _, height, width = x.shape
    top, left, h, w = boxes.to(x.dtype).unbind(1)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = torch.where(flip, -w, w) / width, (2 * left + w) / width - 1
    theta[:, 1, 1], theta[:, 1, 2] = h / height, (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [n, x.shape[1], *size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def check_image_shape(input_shape: tuple[int, ...] | None, model: str) -> None:
    """The stream's sample shape fits an RGB image model: (3, H, W), or (1, H, W) (grey, repeated)."""
    if input_shape is not None and (len(input_shape) != 3 or input_shape[0] not in (1, 3)):
        raise UserError(f"model={model} takes (3, H, W) images (or 1 channel), the stream gives samples of shape "
                        f"{tuple(input_shape)}")
