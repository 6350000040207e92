"""What a pretrained image backbone does to a batch before its first layer, on the batch's device: the
checkpoint's own input size, interpolation, mean and std (read from it by ``HFVision`` and ``TimmBackbone``,
never assumed), and, while training, PILOT's train-time augmentation.

Images come as uint8 (0..255) or float (0..1), (B, 3, H, W) of any size (1 channel: grey, repeated). In
training mode with ``augment``, each sample gets its own random resized crop and horizontal flip, as in
PILOT / RevisitingCIL's ``build_transform(is_train=True)`` (utils/data.py): ``RandomResizedCrop(224,
scale=(0.05, 1.0), ratio=(3/4, 4/3))`` + ``RandomHorizontalFlip(p=0.5)``; the crop is resampled straight to
the model's size (bilinear, torchvision's default there; ``resized_crops`` says how). Otherwise (eval mode:
evaluation and the feature passes of NCM, routers and probes) the whole image is resized to the model's
size, or with ``crop_pct`` its shorter side to ``size / crop_pct`` and the centre cropped (PILOT's eval
transform, ``Resize(256)`` + ``CenterCrop(224)``: crop_pct 0.875). Then ``(x - mean) / std``; with
``normalize=False``, 0..1 pixels as PILOT feeds them (its transforms end at ``ToTensor()``, no
``Normalize``). Where a small image is resampled by matrix products (training; evaluation of CIFAR-sized
images) the normalisation comes first: a resample is a weighted sum with weights summing to 1, so the values
are the same, and a CIFAR image has 49x fewer pixels before it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cl_adapters.errors import UserError
from cl_adapters.models.contract import unit_float
from cl_adapters.streams.images import RATIO, SCALE
MODES = {"nearest": "nearest", "bilinear": "bilinear", "bicubic": "bicubic"}  # others resize bicubic
PIL_MODES = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # a Hugging Face processor's ``resample`` (PIL's codes)


class ImagePreprocess(nn.Module):
    """uint8 or float images (B, C, H, W) -> the model's float input (B, 3, *size)."""

    def __init__(self, size: tuple[int, int], mean, std, interpolation: str | int = "bicubic", augment: bool = True,
                 normalize: bool = True, crop_pct: float | None = None):
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise UserError(f"the checkpoint's image mean/std must be 3 values each, std > 0: got {mean}, {std}")
        if crop_pct is not None and (isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float))
                                     or not 0 < crop_pct <= 1):
            raise UserError(f"model.crop_pct must be in (0, 1] or null, got {crop_pct!r}")
        self.size, self.augment, self.normalize = (int(size[0]), int(size[1])), augment, normalize
        self.crop_pct = crop_pct
        self.interpolation = (PIL_MODES if isinstance(interpolation, int) else MODES).get(interpolation, "bicubic")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        return (f"size={self.size}, interpolation={self.interpolation}, mean={self.mean.flatten().tolist()}, "
                f"std={self.std.flatten().tolist()}, augment={self.augment}, normalize={self.normalize}, "
                f"crop_pct={self.crop_pct}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise UserError(f"an image backbone takes (B, 3, H, W) images (or 1 channel), got shape {tuple(x.shape)}")
        x = unit_float(x).float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.training and self.augment:
            return random_resized_crop_flip(self._normalized(x), self.size)
        resized = self.size if self.crop_pct is None else self._resized_for_crop(x.shape[-2:])
        top, left = round((resized[0] - self.size[0]) / 2), round((resized[1] - self.size[1]) / 2)  # CenterCrop's
        smooth = self.interpolation != "nearest"
        if tuple(x.shape[-2:]) != resized:
            if smooth and by_products(x, self.size):  # only the kept rows and columns; normalised first
                rows, columns = (axis_weights(full, out, self.interpolation, x.device)[start: start + crop]
                                 for full, out, start, crop in zip(x.shape[-2:], resized, (top, left), self.size))
                return rows @ self._normalized(x) @ columns.T
            x = F.interpolate(x, resized, mode=self.interpolation, antialias=smooth,
                              **({"align_corners": False} if smooth else {}))
        return self._normalized(x[..., top: top + self.size[0], left: left + self.size[1]])

    def _resized_for_crop(self, shape) -> tuple[int, int]:
        """torchvision's ``Resize(int(size / crop_pct))``: the shorter side to that length, the aspect kept
        (PILOT's eval: ``Resize(256)`` then ``CenterCrop(224)``, crop_pct 0.875)."""
        short = int(max(self.size) / self.crop_pct)
        height, width = int(shape[0]), int(shape[1])
        if height <= width:
            return short, max(int(short * width / height), self.size[1])
        return max(int(short * height / width), self.size[0]), short

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
    """Image i's box (top, left, h, w, whole pixels), mirrored where ``flip[i]``, resampled to ``size`` by PIL's
    antialiased bilinear filter (how PILOT's ``RandomResizedCrop`` resizes its PIL crops). Images of at most a
    quarter of the output's pixels (CIFAR to 224), or on an accelerator: two batched matrix products (every
    output row, then column, a weighted sum of the input's), a few kernels for the batch. Larger images on a
    CPU: each crop through ``F.interpolate``, which reads only the crop where the products read every pixel.
    Both are 2-4x faster on a CPU than one ``grid_sample``, and far less hurt by busy cores (fewer parallel
    regions; benchmarks/image_path.py)."""
    if not by_products(x, size):
        out = x.new_empty((len(x), x.shape[1], *size))
        for i, ((top, left, h, w), mirror) in enumerate(zip(boxes.long().tolist(), flip.tolist())):
            crop = x[i : i + 1, :, top : top + h, left : left + w]
            out[i : i + 1] = F.interpolate(crop.flip(-1) if mirror else crop, size, mode="bilinear",
                                           align_corners=False, antialias=True)
        return out
    top, left, h, w = boxes.unbind(1)
    rows = filter_weights(top, h, size[0], x.shape[-2], torch.zeros_like(flip)).to(x.dtype)
    columns = filter_weights(left, w, size[1], x.shape[-1], flip).to(x.dtype)
    return rows.unsqueeze(1) @ x @ columns.transpose(1, 2).unsqueeze(1)


def by_products(x: torch.Tensor, size: tuple[int, int]) -> bool:
    """Resample ``x`` to ``size`` as two matrix products: on an accelerator, or for images of at most a quarter
    of the output's pixels (CIFAR to 224) on a CPU, where the products' reading every input pixel per output
    row costs less than ``F.interpolate``'s passes."""
    return x.device.type != "cpu" or 4 * x.shape[-2] * x.shape[-1] <= size[0] * size[1]


def axis_weights(full: int, out: int, interpolation: str, device) -> torch.Tensor:
    """(out, full): the whole axis resized from ``full`` to ``out`` positions (PIL's filters, as torch's
    antialiased ``F.interpolate`` computes them)."""
    zero = torch.zeros(1, device=device)
    return filter_weights(zero, zero + full, out, full, zero.bool(), interpolation)[0].to(device)


def filter_weights(start: torch.Tensor, length: torch.Tensor, out: int, full: int, flip: torch.Tensor,
                   interpolation: str = "bilinear") -> torch.Tensor:
    """(n, out, full): each output position of image k as weights over the ``full`` input positions of one
    axis, reading only its crop ``[start, start + length)``: PIL's bilinear (triangle) or bicubic (Keys, a =
    -0.5) filter, widened by the scale when shrinking (its antialiasing), each row summing to 1; mirrored
    where ``flip``. On a CPU in numpy: one thread, where torch's two-thread small ops waited ~100x longer on a
    busy machine."""
    xp = np if start.device.type == "cpu" else torch
    start, length, flip = (t.numpy() if xp is np else t for t in (start.double(), length.double(), flip))
    arange = np.arange if xp is np else (lambda n: torch.arange(n, device=start.device))
    scale = (length / out).reshape(-1, 1, 1)
    i = arange(out).reshape(1, -1, 1)
    i = xp.where(flip.reshape(-1, 1, 1), out - 1 - i, i)
    j = arange(full).reshape(1, 1, -1) - start.reshape(-1, 1, 1)
    d = abs(j + 0.5 - (i + 0.5) * scale) / xp.where(scale > 1, scale, 1)
    weights = cubic(d) if interpolation == "bicubic" else 1 - d
    weights = weights * ((d < (2 if interpolation == "bicubic" else 1)) & (j >= 0) & (j < length.reshape(-1, 1, 1)))
    weights = weights / weights.sum(-1, keepdims=True)
    return torch.from_numpy(weights.astype(np.float32)) if xp is np else weights.float()


def cubic(d, a: float = -0.5):
    """Keys' cubic convolution kernel at distances ``d`` >= 0 (PIL's and antialiased torch's a = -0.5)."""
    return (d < 1) * (((a + 2) * d - (a + 3)) * d * d + 1) + (d >= 1) * (((d - 5) * d + 8) * d - 4) * a


def check_image_shape(input_shape: tuple[int, ...] | None, model: str) -> None:
    """The stream's sample shape fits an RGB image model: (3, H, W), or (1, H, W) (grey, repeated)."""
    if input_shape is not None and (len(input_shape) != 3 or input_shape[0] not in (1, 3)):
        raise UserError(f"model={model} takes (3, H, W) images (or 1 channel), the stream gives samples of shape "
                        f"{tuple(input_shape)}")
