"""The image streams of class-incremental learning with pre-trained models (PTM-CIL): CIFAR-100, and the
ImageFolder datasets of RevisitingCIL (CUB-200, ImageNet-R, ImageNet-A, ObjectNet, OmniBenchmark, VTAB),
split ``B{b} Inc{i}`` in an explicit, recorded class order (``scenario.classes_per_task``).

CIFAR-100 is read from its python pickles into memory as uint8 (N, 3, 32, 32), the fast tensor path. The
folder datasets are read lazily: each JPEG is decoded with PIL where it is loaded (in the DataLoader's
workers, ``strategy.num_workers``) into uint8 (3, S, S), S = ``image_size``. Evaluation (Avalanche's
``eval`` group: test and validation streams, and class means fitted on training data) resizes the shorter
side to ``int(256 / 224 * S)`` (bicubic) and centre-crops S, PILOT's test transform. Training (``augment``)
takes PILOT's train transform there too, a random resized crop of the whole image and a flip, in uint8:
the workers' per-image work is then PILOT's (a decoded image resized once), and the backbone, told by the
scenario's ``augmented`` flag, does not augment these batches again (it does for in-memory images, which
it augments on whole batches). Without ``augment``, training resizes the shorter side to S and centre-crops.

What this follows (RevisitingCIL = github.com/zhoudw-zdw/RevisitingCIL @ a2e6b71; PILOT =
github.com/sun-hailong/LAMDA-PILOT @ 2647455):
- layout: ``<root>/train/<class>/<image>`` and ``<root>/test/<class>/<image>``, each read by torchvision's
  ImageFolder (RevisitingCIL utils/data.py:186-195 imagenet-r, 207-216 imagenet-a, 229-238 cub, 250-259
  objectnet, 271-280 omnibenchmark, 293-305 vtab; PILOT utils/data.py:226-345, VTAB under vtab-cil/vtab/):
  a class id is its folder's index in sorted order, as ImageFolder numbers them.
- classes: 200 CUB, ImageNet-R, ImageNet-A, ObjectNet; 300 OmniBenchmark; 50 VTAB (RevisitingCIL
  utils/data.py:184, 205, 227, 248, 269, 291); CIFAR-100 via torchvision (:107-115). Downloads: RevisitingCIL
  README.md:83-89.
- class order: ``np.random.seed(seed); order = np.random.permutation(n)`` (PILOT utils/data_manager.py:
  154-157, RevisitingCIL :151-158), seed 1993 (PILOT exps/simplecil.json:7,13); a sample's label is its
  class's position in the order (``_map_new_class_index``, PILOT :212-213).
- splits: ``init_cls`` classes, then ``increment`` while classes remain (PILOT utils/data_manager.py:14-20).
- transforms: PILOT utils/data.py:95-119 (``build_transform``; RevisitingCIL :69-93): test ``Resize(int(256 /
  224 * 224), interpolation=3)``, ``CenterCrop(224)``, ``ToTensor()``; train ``RandomResizedCrop(224,
  scale=(0.05, 1), ratio=(3/4, 4/3))``, ``RandomHorizontalFlip()``, ``ToTensor()``; no normalisation.
  Class means are fitted on training data under the test transform (PILOT models/simplecil.py:66).

Deviations:
- images are uint8 in [0, 255], not ``ToTensor``'s float in [0, 1]: backbones divide by 255 (the same values);
- CIFAR-100 stays 32x32 (PILOT's ``cifar224`` resizes each image to 224 in its transform): the backbone resizes;
- ``initial_classes: 0`` means a first task of ``increment`` classes (PILOT's configs write B0 Inc10 as
  ``init_cls: 10``); a split that does not cover the classes exactly is refused (PILOT adds a smaller last task);
- train/ and test/ must hold the same class folders (ImageFolder numbers each tree on its own: a class
  missing from test/ would shift every later test label);
- PILOT's ``seed`` fixes the class order and the run; here ``class_order: seed1993`` fixes the order and
  ``seed`` the rest (validation split, training);
- ``val_fraction`` carves a random fraction of each task's training images (as every stream here), not
  PILOT's ``val_samples_per_class`` (data_manager.py:81-135); they are evaluated under the test transform.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.datasets.utils import download_and_extract_archive

from cl_adapters.errors import UserError
from cl_adapters.streams.base import (ArraysOnly, Split, check_scenario, check_val_fraction, class_offsets,
                                      labelled_dataset, scenario_of, task_stream, val_split)

SCENARIOS = ("class_il", "task_il")
SCALE, RATIO = (0.05, 1.0), (3 / 4, 4 / 3)  # PILOT's RandomResizedCrop (build_transform, above)
CIFAR = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"  # torchvision's CIFAR100.tgz_md5
README = "https://github.com/zhoudw-zdw/RevisitingCIL#dataset"
DATASETS = {  # stream.dataset -> (its name, its classes, where it comes from: RevisitingCIL README.md:84-89)
    "cub200": ("CUB-200", 200, "https://drive.google.com/file/d/1XbUpnWpJPnItt5zQ6sHJnsjPncnNLvWb"),
    "imagenet_r": ("ImageNet-R", 200, "https://drive.google.com/file/d/1SG4TbiL8_DooekztyCVK8mPmfhMo8fkR"),
    "imagenet_a": ("ImageNet-A", 200, "https://drive.google.com/file/d/19l52ua_vvTtttgVRziCZJjal0TPE9f2p"),
    "objectnet": ("ObjectNet", 200, "https://entuedu-my.sharepoint.com/:u:/g/personal/n2207876b_e_ntu_edu_sg/"
                                    "EZFv9uaaO1hBj7Y40KoCvYkBnuUZHnHnjMda6obiDpiIWw"),
    "omnibenchmark": ("OmniBenchmark", 300, "https://drive.google.com/file/d/1AbCP3zBMtv_TDXJypOCnOgX8hJmvJm3u"),
    "vtab": ("VTAB", 50, "https://drive.google.com/file/d/1xUiwlnx4k0oDhYi26KL5KwrCAya-mvJ_"),
}


def cifar100(
    root: str | None = None,
    initial_classes: int = 0,
    increment: int = 10,
    class_order="seed1993",
    seed: int = 0,
    scenario: str = "class_il",
    val_fraction: float = 0.0,
    download: bool = False,
):
    """CIFAR-100 (50k train, 10k test, 32x32) as ``B{initial_classes} Inc{increment}`` in ``class_order``;
    inputs uint8 (3, 32, 32). ``root`` holds ``cifar-100-python/`` (``download``: fetched there first)."""
    check_scenario(scenario, SCENARIOS, "cifar100")
    (x_tr, y_tr), (x_te, y_te) = load_cifar100(root, download)
    order, sizes = class_order_of(class_order, 100), task_sizes(100, initial_classes, increment)
    tasks = [[(x[torch.from_numpy(idx)], torch.from_numpy(local)) for idx, local in split_classes(y.numpy(), order, sizes)]
             for x, y in ((x_tr, y_tr), (x_te, y_te))]
    return task_stream(*tasks, sizes, val_fraction, seed, scenario, chunks(order, sizes))


def image_folder(
    dataset: str,
    root: str | None = None,
    n_classes: int | None = None,
    initial_classes: int = 0,
    increment: int = 10,
    class_order="seed1993",
    seed: int = 0,
    scenario: str = "class_il",
    image_size: int = 224,
    val_fraction: float = 0.0,
    augment: bool = True,
):
    """An ImageFolder dataset (``root/train/<class>/*``, ``root/test/<class>/*``) of ``n_classes`` classes
    (default: ``dataset``'s in ``DATASETS``; any other name is your own dataset) as ``B{initial_classes}
    Inc{increment}`` in ``class_order``; images decoded lazily to uint8 (3, image_size, image_size), training
    images with PILOT's augmentation where ``augment``."""
    check_scenario(scenario, SCENARIOS, dataset)
    check_val_fraction(val_fraction)
    name, expected, link = DATASETS.get(dataset, (dataset, None, None))
    n_classes = _positive("n_classes", expected if n_classes is None else n_classes, f"the class count of {name}")
    size = _positive("image_size", image_size, "the side of the square images")
    if not isinstance(augment, bool):
        raise UserError(f"stream.augment must be true or false (PILOT's train augmentation in the loader), got {augment!r}")
    source = f"{name} ({n_classes} classes) comes from {link} (links in {README}); " if link else ""
    root = _existing_root(root, f"{source}stream.root must hold {name}'s train/ and test/ ImageFolder trees "
                                "(<class>/<image>)")
    train, test = _folders(root, name, n_classes)
    order, sizes = class_order_of(class_order, n_classes), task_sizes(n_classes, initial_classes, increment)
    offsets = class_offsets(sizes, scenario)
    streams = {"train": [], "test": [], **({"valid": []} if val_fraction else {})}
    for split, (files, labels) in (("train", train), ("test", test)):
        for t, (idx, local) in enumerate(split_classes(labels, order, sizes)):
            parts = {split: np.arange(len(idx))}
            if split == "train" and val_fraction:
                kept, held = val_split(len(idx), val_fraction, seed + t)
                parts = {"train": kept.numpy(), "valid": held.numpy()}
            for stream, rows in parts.items():
                data = _task_data([files[i] for i in idx[rows]], (local[rows] + offsets[t]).tolist(), t, size, augment)
                streams[stream].append(data if stream == "train" else data.eval())  # test, valid: evaluated
    built = scenario_of(streams, sizes, scenario, chunks(order, sizes))
    built.augmented = augment is True  # the loader augments: the backbone must not again
    return built


class ImageFiles(Dataset):
    """Image files decoded when a sample is read (in a DataLoader worker): ``(PIL RGB image, label)``."""

    def __init__(self, files: list[str], labels: list[int]):
        self.files, self.labels = files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        with Image.open(self.files[i]) as image:
            return image.convert("RGB"), self.labels[i]


def preprocess(size: int, train: bool, augment: bool = False) -> transforms.Compose:
    """PIL image -> uint8 (3, size, size): PILOT's train transform where ``train`` and ``augment``, else its
    test transform (evaluation), or for training a resize + centre crop."""
    if train and augment:
        return transforms.Compose([transforms.RandomResizedCrop(size, scale=SCALE, ratio=RATIO),
                                   transforms.RandomHorizontalFlip(), transforms.PILToTensor()])
    shorter = size if train else int((256 / 224) * size)  # PILOT's expression, as written
    return transforms.Compose([transforms.Resize(shorter, interpolation=transforms.InterpolationMode.BICUBIC),
                               transforms.CenterCrop(size), transforms.PILToTensor()])


def _task_data(files: list[str], labels: list[int], task: int, size: int, augment: bool):
    groups = {"train": preprocess(size, True, augment), "eval": preprocess(size, train=False)}
    return labelled_dataset(ImageFiles(files, labels), labels, task, groups)


def _folders(root: Path, name: str, n_classes: int):
    """``(train files, labels), (test files, labels)`` from the two ImageFolder trees."""
    splits, names = [], None
    for split in ("train", "test"):
        path = root / split
        if not path.is_dir():
            raise UserError(f"{path} is not a folder: stream.root must hold {name}'s train/ and test/ ImageFolder trees")
        try:
            classes, class_to_idx = find_classes(str(path))
            samples = make_dataset(str(path), class_to_idx, extensions=IMG_EXTENSIONS)
        except FileNotFoundError as e:  # no class folder, or a class without an image
            raise UserError(f"{path}: {' '.join(str(e).split())}") from None
        if len(classes) != n_classes:
            raise UserError(f"{path} has {len(classes)} class folders, {name} has {n_classes} (stream.n_classes)")
        if names is not None and classes != names:
            odd = sorted(set(classes) ^ set(names))[:3]
            raise UserError(f"{root}: train/ and test/ hold different class folders (e.g. {', '.join(odd)})")
        names = classes
        splits.append(([f for f, _ in samples], np.array([c for _, c in samples], dtype=np.int64)))
    return splits


def load_cifar100(root: str | None, download: bool = False) -> tuple[Split, Split]:
    """CIFAR-100's python version: ((50k uint8 (N, 3, 32, 32), fine labels), (10k, ...)), read from
    ``root/cifar-100-python/{train,test,meta}`` (or ``root`` itself holding them)."""
    where = "CIFAR-100 (python version) comes from https://www.cs.toronto.edu/~kriz/cifar.html, or set stream.download=true"
    if root is not None and download and not _cifar_folder(Path(root).expanduser()):
        download_and_extract_archive(CIFAR, str(Path(root).expanduser()), md5=CIFAR_MD5)
    root = _existing_root(root, f"stream.root must hold cifar-100-python/; {where}")
    folder = _cifar_folder(root)
    if folder is None:
        raise UserError(f"{root} holds no cifar-100-python/{{train,test,meta}}: {where}")
    meta = _unpickled(folder / "meta", "fine_label_names")
    if len(meta["fine_label_names"]) != 100:
        raise UserError(f"{folder / 'meta'} names {len(meta['fine_label_names'])} classes, CIFAR-100 has 100")
    return _cifar_split(folder / "train"), _cifar_split(folder / "test")


def _cifar_folder(root: Path) -> Path | None:
    for folder in (root / "cifar-100-python", root):
        if all((folder / name).is_file() for name in ("train", "test", "meta")):
            return folder
    return None


def _cifar_split(path: Path) -> Split:
    d = _unpickled(path, "data", "fine_labels")
    x, y = np.asarray(d["data"]), np.asarray(d["fine_labels"])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or y.shape != (len(x),):
        raise UserError(f"{path}: data must be uint8 (N, 3072) with N fine_labels, got {x.dtype} {x.shape} and {y.shape}")
    if len(y) == 0 or y.min() < 0 or y.max() > 99 or len(np.unique(y)) != 100:
        raise UserError(f"{path}: fine_labels hold {len(np.unique(y))} classes in [{y.min(initial=0)}, {y.max(initial=0)}], "
                        "CIFAR-100 has 100 (0..99)")
    return torch.from_numpy(x.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(y.astype(np.int64))


def _unpickled(path: Path, *keys: str) -> dict:
    """A CIFAR pickle (Python 2's, protocol 2) as a dict with str keys, numpy arrays and nothing else."""
    try:
        with path.open("rb") as f:
            d = ArraysOnly(f, encoding="latin1").load()
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as e:
        raise UserError(f"{path}: not a CIFAR-100 python pickle: {' '.join(str(e).split())}") from None
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()} if isinstance(d, dict) else {}
    if missing := [k for k in keys if k not in d]:
        raise UserError(f"{path}: not a CIFAR-100 python pickle (no {missing[0]!r})")
    return d


def _existing_root(root: str | None, where: str) -> Path:
    if root is None:
        raise UserError(f"stream.root is not set: {where}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UserError(f"stream.root={root} is not a folder: {where}")
    return path


def _positive(key: str, value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"stream.{key} must be a positive integer ({what}), got {value!r}")
    return value


def class_order_of(class_order, n: int) -> list[int]:
    """``seed<N>``: PILOT's shuffle, ``np.random.seed(N); np.random.permutation(n)`` (``seed1993`` is theirs);
    ``natural``: 0..n-1; or a list naming each of the n classes once."""
    if isinstance(class_order, str):
        if class_order == "natural":
            return list(range(n))
        if (m := re.fullmatch(r"seed(\d+)", class_order)) and int(m[1]) < 2**32:
            return np.random.RandomState(int(m[1])).permutation(n).tolist()  # what np.random.seed(N) seeds
    elif class_order is not None and not isinstance(class_order, (bytes, dict)):
        order = list(class_order)
        if all(isinstance(c, int) and not isinstance(c, bool) for c in order) and sorted(order) == list(range(n)):
            return order
        raise UserError(f"stream.class_order must list each of the {n} classes 0..{n - 1} once, got {len(order)} ids "
                        f"{order[:5]}{' ...' if len(order) > 5 else ''}")
    raise UserError(f"stream.class_order must be seed<N> (PILOT's: seed1993), natural or a list of the {n} class ids, "
                    f"got {class_order!r}")


def task_sizes(n: int, initial_classes: int, increment: int) -> list[int]:
    """``B{initial_classes} Inc{increment}``: a first task of ``initial_classes`` (0: ``increment``), then
    ``increment`` each, covering the ``n`` classes exactly."""
    for key, value, least in (("initial_classes", initial_classes, 0), ("increment", increment, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UserError(f"stream.{key} must be an integer >= {least}, got {value!r}")
    first = initial_classes or increment
    if first > n or (n - first) % increment:
        raise UserError(f"stream.initial_classes={initial_classes} and stream.increment={increment} do not cover the "
                        f"{n} classes exactly (a first task of {first}, then {increment} each)")
    return [first] + [increment] * ((n - first) // increment)


def split_classes(labels: np.ndarray, order: list[int], sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per task: its samples (indices, in their order) and their task-local labels (position in the task)."""
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    pos = position[labels]
    tasks = []
    for start, size in zip(np.cumsum([0, *sizes[:-1]]).tolist(), sizes):
        idx = np.flatnonzero((pos >= start) & (pos < start + size))
        tasks.append((idx, pos[idx] - start))
    return tasks


def chunks(order: list[int], sizes: list[int]) -> list[list[int]]:
    ends = np.cumsum(sizes).tolist()
    return [order[end - size : end] for end, size in zip(ends, sizes)]
