"""The image data path's throughput on CPU against a PILOT-style loop, same model and batch.

    .venv/bin/python benchmarks/image_path.py            # ~3 min on 2 idle CPU cores
    .venv/bin/python benchmarks/image_path.py --quick    # a smoke run

``platform``: the stream's dataset as a run loads it (``cifar100``: uint8 tensors in memory, batched by
``TensorBatches``; ``image_folder``: JPEGs decoded to uint8 in the loader's workers, training images with
PILOT's random resized crop + flip there, test images resized and centre-cropped) through the loader a run
builds (Avalanche's, ``TensorBatches.wrap``), then the backbone's ``ImagePreprocess`` on the whole batch
(CIFAR training: random resized crop + flip; eval: resize; then normalisation). ``pilot``: as LAMDA-PILOT / RevisitingCIL load data (utils/data_manager.py ``DummyDataset``:
``Image.fromarray`` per CIFAR sample, ``pil_loader`` per JPEG; utils/data.py ``build_transform``: train
``RandomResizedCrop(224, scale=(0.05, 1), ratio=(3/4, 4/3))`` + ``RandomHorizontalFlip()`` + ``ToTensor()``,
test ``Resize(256, bicubic)`` + ``CenterCrop(224)`` + ``ToTensor()``) in a ``DataLoader`` with ``w0`` or
``w2`` worker processes (persistent: their start-up is not timed, which favours it).

Rows: ``data``: the loader and the preprocessing only, one epoch; ``train``: that + a training step (full
fine-tuning, SGD) of a random-weight ``vit_tiny_patch16_224`` at 224 px with a linear head; ``eval``: that
+ the model's features (no grad). The same model object serves both sides: the PILOT side's batches are
already the model's input (its preprocessing is set to the identity for them). Synthetic CIFAR-100 in its
python format (the tests' writer) and a small ImageFolder of JPEGs of 256-500 px. Configs of a row in
rotating order in one process, medians over rounds; images/s and the ratio platform / PILOT-style (the
faster PILOT-style config). ``*_1thread``: the CIFAR data rows again with one torch thread and no workers
on either side: each path's own work, which a busy machine cannot stall by descheduling a second thread.
``decode_ms``: one process's milliseconds per JPEG for decoding alone, PILOT's train and test transforms and the
platform's workers' (the folder rows' floor: both sides decode every image). Writes
benchmarks/results/image_path.{md,json}.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).resolve().parent.parent / "tests")]
from adapter_speed import arguments, environment, environment_line, timed_rotation, write  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import cl_adapters  # noqa: E402,F401  (before torchvision: its CPU shim)
from avalanche.benchmarks.utils.data_loader import TaskBalancedDataLoader  # noqa: E402
from conftest import write_cifar100, write_image_folder  # noqa: E402  (the real formats, as the tests write them)
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset, Subset  # noqa: E402
from torchvision import transforms  # noqa: E402

from cl_adapters.models import TimmBackbone  # noqa: E402
from cl_adapters.strategies.batches import TensorBatches  # noqa: E402
from cl_adapters.streams.images import cifar100, image_folder  # noqa: E402

TRAIN_BATCH, EVAL_BATCH, WORKERS = 32, 64, 2
MODEL = "vit_tiny_patch16_224"


class PilotImages(Dataset):
    """PILOT's ``DummyDataset``: a PIL image per sample (from a uint8 HWC array, or a file), then the transform."""

    def __init__(self, images, labels, transform, use_path: bool):
        self.images, self.labels, self.transform, self.use_path = images, labels, transform, use_path

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        if self.use_path:
            with open(self.images[i], "rb") as f:
                image = Image.open(f).convert("RGB")
        else:
            image = Image.fromarray(self.images[i])
        return self.transform(image), self.labels[i]


def pilot_transform(train: bool) -> transforms.Compose:
    """PILOT's ``build_transform(is_train)`` for 224 px (no normalisation)."""
    if train:
        return transforms.Compose([transforms.RandomResizedCrop(224, scale=(0.05, 1.0), ratio=(3 / 4, 4 / 3)),
                                   transforms.RandomHorizontalFlip(p=0.5), transforms.ToTensor()])
    return transforms.Compose([transforms.Resize(int(256 / 224 * 224), interpolation=3), transforms.CenterCrop(224),
                               transforms.ToTensor()])


def platform_loader(dataset, batch: int, shuffle: bool, workers: int):
    """The loader a run builds: Avalanche's (with the strategy's worker options), sliced from tensors where it can be."""
    options = {"num_workers": workers, "persistent_workers": True} if workers else {}
    return TensorBatches.wrap(TaskBalancedDataLoader(dataset, oversample_small_groups=True, batch_size=batch,
                                                     shuffle=shuffle, **options))


def pilot_loader(dataset, batch: int, shuffle: bool, workers: int):
    return DataLoader(dataset, batch_size=batch, shuffle=shuffle, num_workers=workers, persistent_workers=workers > 0)


class Bench:
    """The model (a timm ViT through ``TimmBackbone`` + a linear head) and the epochs of every config."""

    def __init__(self, classes: int):
        torch.manual_seed(0)
        self.backbone = TimmBackbone(name=MODEL, pretrained=False)
        self.preprocess = self.backbone.preprocess
        self.head = nn.Linear(self.backbone.out_features, classes)
        params = [*self.backbone.parameters(), *self.head.parameters()]
        self.optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)  # PILOT's optimizer for full fine-tuning

    def _inputs(self, platform: bool):
        """The backbone with its own preprocessing (platform) or none (PILOT's batches are the model's input)."""
        self.backbone.preprocess = self.preprocess if platform else nn.Identity()

    def data_epoch(self, loader, platform: bool, train: bool):
        self.preprocess.train(train)

        def epoch():
            with torch.no_grad():
                for x, *_ in loader:
                    if platform:
                        self.preprocess(x)
        return epoch

    def train_epoch(self, loader, platform: bool):
        def epoch():
            self._inputs(platform)
            self.backbone.train()
            for x, y, *_ in loader:
                self.optimizer.zero_grad()
                F.cross_entropy(self.head(self.backbone(x)), torch.as_tensor(y)).backward()
                self.optimizer.step()
        return epoch

    def eval_epoch(self, loader, platform: bool):
        def epoch():
            self._inputs(platform)
            self.backbone.eval()
            with torch.no_grad():
                for x, *_ in loader:
                    self.backbone(x)
        return epoch


def cifar_sides(root: Path, n_train: int, n_eval: int):
    """(platform train, platform eval, PILOT train, PILOT eval) datasets of the same CIFAR images (PILOT's: uint8
    HWC arrays, as torchvision's ``CIFAR100.data``)."""
    stream = cifar100(str(root), initial_classes=100, increment=100)  # one task of the 100 classes
    train, test = stream.train_stream[0].dataset.train(), stream.test_stream[0].dataset.eval()
    y_tr = [int(train[i][1]) for i in range(n_train)]
    y_te = [int(test[i][1]) for i in range(n_eval)]
    hwc = {split: np.ascontiguousarray(torch.stack([d[i][0] for i in range(n)]).permute(0, 2, 3, 1).numpy())
           for split, d, n in (("train", train, n_train), ("test", test, n_eval))}
    return (train.subset(range(n_train)), test.subset(range(n_eval)),
            PilotImages(hwc["train"], y_tr, pilot_transform(True), False),
            PilotImages(hwc["test"], y_te, pilot_transform(False), False))


def folder_sides(root: Path, classes: int, n_train: int, n_eval: int):
    stream = image_folder("bench", str(root), n_classes=classes, initial_classes=classes, increment=classes,
                          class_order="natural", image_size=224)
    train, test = stream.train_stream[0].dataset.train(), stream.test_stream[0].dataset.eval()
    files = {split: sorted(str(p) for p in (root / split).rglob("*.jpg")) for split in ("train", "test")}
    label = {split: [int(Path(f).parent.name.split("_")[1]) for f in files[split]] for split in files}
    return (train.subset(range(n_train)), test.subset(range(n_eval)),
            PilotImages(files["train"][:n_train], label["train"][:n_train], pilot_transform(True), True),
            PilotImages(files["test"][:n_eval], label["test"][:n_eval], pilot_transform(False), True))


def measure(bench: Bench, sides, pilot_workers: tuple[int, ...], platform_workers: int, rounds: int,
            model_batches: int, data_rows: bool, suffix: str = "") -> dict:
    """Seconds per epoch and images/s of each row's configs, ``platform`` first (rows named ``<row><suffix>``)."""
    p_train, p_eval, q_train, q_eval = sides
    rows = {}
    n_model_train, n_model_eval = min(model_batches * TRAIN_BATCH, len(p_train)), min(model_batches * EVAL_BATCH, len(p_eval))
    for row, (p_set, q_set, batch, train) in {
        "data_train": (p_train, q_train, TRAIN_BATCH, True), "data_eval": (p_eval, q_eval, EVAL_BATCH, False),
        "train": (p_train.subset(range(n_model_train)), Subset(q_train, range(n_model_train)), TRAIN_BATCH, True),
        "eval": (p_eval.subset(range(n_model_eval)), Subset(q_eval, range(n_model_eval)), EVAL_BATCH, False),
    }.items():
        if row.startswith("data") != data_rows:
            continue
        loaders = {"platform": platform_loader(p_set, batch, train, platform_workers),
                   **{f"pilot_w{w}": pilot_loader(q_set, batch, train, w) for w in pilot_workers}}
        if row.startswith("data"):
            epochs = {name: bench.data_epoch(loader, name == "platform", train) for name, loader in loaders.items()}
        else:
            make = bench.train_epoch if train else bench.eval_epoch
            epochs = {name: make(loader, name == "platform") for name, loader in loaders.items()}
        print(f"{row}:", flush=True)
        seconds = timed_rotation(epochs, rounds, 1, 1)
        n = len(p_set)
        best_pilot = min(s for name, s in seconds.items() if name != "platform")
        rows[row + suffix] = {"images": n, "batch": batch,
                     "configs": {name: {"s_per_epoch": s, "images_per_s": n / s} for name, s in seconds.items()},
                     "platform_vs_pilot": best_pilot / seconds["platform"]}
    return rows


def main():
    args = arguments("image_path")
    quick = args.quick
    data_rounds, model_rounds, model_batches = (1, 1, 1) if quick else (5, 3, 2)
    n_cifar_train, n_cifar_eval = (128, 128) if quick else (512, 256)
    folder_classes, folder_train, folder_test = (2, 16, 16) if quick else (4, 32, 32)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        cifar_root = write_cifar100(Path(tmp) / "cifar", train_per_class=max(2, -(-n_cifar_train // 100)),
                                    test_per_class=max(2, -(-n_cifar_eval // 100)))
        folder_root = write_image_folder(Path(tmp) / "folder", folder_classes, folder_train, folder_test, sides=(256, 501),
                                         photo_like=True)
        bench = Bench(100)
        results = {}
        for name, sides, pilot_workers, platform_workers in (
                ("cifar100", cifar_sides(cifar_root, n_cifar_train, n_cifar_eval), (0, WORKERS), 0),
                ("image_folder", folder_sides(folder_root, folder_classes, folder_classes * folder_train,
                                              folder_classes * folder_test), (WORKERS,), WORKERS)):
            bench.preprocess.augment = name == "cifar100"  # as a run sets it: folder streams augment in the loader
            results[name] = {**measure(bench, sides, pilot_workers, platform_workers, data_rounds, model_batches, True),
                             **measure(bench, sides, pilot_workers, platform_workers, model_rounds, model_batches, False)}
            if name == "cifar100":  # the data paths' own work, where busy cores cannot stall a second thread
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                results[name].update(measure(bench, sides, (0,), 0, data_rounds, model_batches, True, "_1thread"))
                torch.set_num_threads(threads)
        results["image_folder"]["decode_ms"] = decode_ms(folder_root)
    res = {**environment("cl-adapters", "torch", "torchvision", "timm", "pillow", "avalanche-lib"),
           "cpu": cpu_model(),
           "setup": {"model": f"{MODEL} (random weights, 224 px) + linear head; train: full fine-tuning, SGD",
                     "train_batch": TRAIN_BATCH, "eval_batch": EVAL_BATCH, "workers": WORKERS,
                     "data_rounds": data_rounds, "model_rounds": model_rounds, "quick": quick,
                     "cifar100": f"synthetic, python format, {n_cifar_train} train / {n_cifar_eval} test images",
                     "image_folder": f"{folder_classes} classes x {folder_train} train / {folder_test} test JPEGs, 256-500 px"},
           "datasets": results}
    write(res, markdown(res), Path(args.out) / "image_path")


def decode_ms(root: Path) -> dict:
    """Milliseconds per train JPEG in this process (one torch thread): decoding alone, and with each side's
    per-image transform."""
    from cl_adapters.streams.images import preprocess

    files = sorted(root.glob("train/*/*.jpg"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    work = {"decode": lambda image: image, "pilot_train": pilot_transform(True), "pilot_eval": pilot_transform(False),
            "platform_train": preprocess(224, True, augment=True), "platform_eval": preprocess(224, train=False)}
    seconds = timed_rotation({name: lambda t=transform: [t(Image.open(f).convert("RGB")) for f in files]
                              for name, transform in work.items()}, 3, 1, 1)
    torch.set_num_threads(threads)
    return {name: 1000 * s / len(files) for name, s in seconds.items()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


ROWS = {"data_train": "data path, train", "data_eval": "data path, eval", "train": "data + training step",
        "eval": "data + features (eval)", "data_train_1thread": "data path, train, 1 thread, no workers",
        "data_eval_1thread": "data path, eval, 1 thread, no workers"}


def markdown(res: dict) -> str:
    s = res["setup"]
    lines = [f"# The image data path vs a PILOT-style loop ({s['model'].split(' ')[0]}, batch {s['train_batch']} "
             f"train / {s['eval_batch']} eval, CPU)", "", environment_line(res) + f" CPU: {res['cpu']}.",
             f"Medians over {s['data_rounds']} rounds (data rows) and {s['model_rounds']} rounds (model rows, "
             f"{s['train_batch'] * 2} train / {s['eval_batch'] * 2} eval images each), configs in rotating order in "
             "one process; `pilot_wN`: PILOT-style with N DataLoader workers; the ratio is the platform's images/s "
             "over the faster PILOT-style config's.", "",
             "| data | row | platform images/s | PILOT-style images/s | platform / PILOT-style |",
             "| --- | --- | --- | --- | --- |"]
    for dataset, rows in res["datasets"].items():
        for row, r in rows.items():
            if row == "decode_ms":
                continue
            pilot = ", ".join(f"{c['images_per_s']:,.0f} ({name.removeprefix('pilot_')})"
                              for name, c in r["configs"].items() if name != "platform")
            lines.append(f"| {dataset} | {ROWS[row]} | {r['configs']['platform']['images_per_s']:,.0f} | {pilot} "
                         f"| {r['platform_vs_pilot']:.2f}x |")
    ms = res["datasets"]["image_folder"]["decode_ms"]
    lines += ["", "Milliseconds per 256-500 px JPEG in one process (one thread): " + ", ".join(
        f"{name.replace('_', ' ')} {value:.2f}" for name, value in ms.items()) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
