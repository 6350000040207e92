import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub retries on offline machines
os.environ.setdefault("WANDB_MODE", "offline")

import pickle  # noqa: E402
import struct  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

import cl_adapters  # noqa: E402,F401  (torchvision shim first)
from cl_adapters import CONFIG_DIR  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def make_cfg(tmp_path):
    """Compose conf/ with overrides, as the CLI would (references cached under the test's tmp dir; the
    console logger only, unless a test asks for W&B)."""

    def _compose(*overrides: str):
        defaults = {"references.dir": f"{tmp_path}/refs", "cache_dir": f"{tmp_path}/features", "logger": "console"}
        given = {o.split("=", 1)[0] for o in overrides}
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("config", overrides=[*(f"{k}={v}" for k, v in defaults.items() if k not in given), *overrides])

    return _compose


@pytest.fixture
def whole_and_resumed(make_cfg, tmp_path, monkeypatch):
    """Run the overrides whole, then again killed after task ``after`` and resumed: (whole, resumed) results."""
    from cl_adapters.runs.resume import Checkpoints
    from cl_adapters.runs.run import run

    def _runs(*overrides: str, after: int = 1) -> tuple[dict, dict]:
        whole = run(make_cfg(*overrides), tmp_path / "whole")
        save = Checkpoints.save

        def killed(self, task, *args):
            path = save(self, task, *args)
            if task == after:
                raise KeyboardInterrupt
            return path

        with monkeypatch.context() as patch:
            patch.setattr(Checkpoints, "save", killed)
            with pytest.raises(KeyboardInterrupt):
                run(make_cfg(*overrides), tmp_path / "cut")
        resumed = run(make_cfg(*overrides), tmp_path / "cut")
        assert resumed["run"]["resumed_after_task"] == [after]
        return whole, resumed

    return _runs


@pytest.fixture(scope="session")
def digits():
    from cl_adapters.streams import split_digits

    return split_digits(n_tasks=5, seed=0)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A small random BERT saved as a local Hugging Face folder (what HFEncoder and the exports load)."""
    import torch
    from transformers import AutoModel, BertConfig

    path = tmp_path_factory.mktemp("tiny_bert")
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(path)
    return str(path)


class Python2Pickler(pickle._Pickler):
    """Writes a pickle as Python 2's cPickle wrote CIFAR's (protocol 2): bytes as STRING opcodes (Python 2's
    ``str``, read back as ``str`` under ``encoding="latin1"``) and numpy's reconstructor under its old module."""

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, f):
        super().__init__(f, protocol=2)

    def save_python2_str(self, obj: bytes):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", None) == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def write_cifar100(folder: Path, train_per_class: int = 5, test_per_class: int = 2, classes: int = 100) -> Path:
    """``folder/cifar-100-python/{train,test,meta}`` as the real python version is laid out: random uint8 images
    whose first byte is their class (so a test can tell a sample's class), in shuffled order."""
    import numpy as np

    rng = np.random.default_rng(0)
    out = folder / "cifar-100-python"
    out.mkdir(parents=True)
    for split, per in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(classes), per))
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        data[:, 0] = labels
        record = {b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
                  b"batch_label": f"{split} batch".encode(),
                  b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist(), b"data": data}
        with (out / split).open("wb") as f:
            Python2Pickler(f).dump(record)
    with (out / "meta").open("wb") as f:
        Python2Pickler(f).dump({b"fine_label_names": [f"class_{c}".encode() for c in range(classes)],
                                b"coarse_label_names": [f"super_{c}".encode() for c in range(20)]})
    return folder


def write_image_folder(folder: Path, classes: int = 6, train: int = 3, test: int = 2, sides=(20, 40),
                       photo_like: bool = False) -> Path:
    """``folder/{train,test}/<class>/*.jpg``: JPEGs of varied sizes, ``sides`` [low, high) px a side (RevisitingCIL's
    layout); random pixels, or with ``photo_like`` smooth ones with a little noise, saved at quality 90 (what a
    photo's decoding costs: benchmarks/image_path.py)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            images = folder / split / f"{c:03d}.class_{c}"
            images.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(*sides, 2)
                if not photo_like:
                    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f"{i}.jpg")
                    continue
                small = Image.fromarray(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8))
                image = np.asarray(small.resize((w, h), Image.BILINEAR), dtype=np.int64) + rng.integers(-12, 13, (h, w, 3))
                Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(images / f"{i}.jpg", quality=90)
    return folder


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory):
    return write_cifar100(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="session")
def image_folder_root(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("image_folder"))


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory):
    """A small random Hugging Face ViT (32 px, patch 8, hidden 32, 2 layers) saved as a local folder with its
    image processor (32 px, bicubic, a mean and std of its own): what HFVision loads."""
    import torch
    from transformers import AutoModel, ViTConfig, ViTImageProcessor

    path = tmp_path_factory.mktemp("tiny_vit")
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}, resample=3, image_mean=[0.2, 0.3, 0.4],
                      image_std=[0.5, 0.6, 0.7]).save_pretrained(path)
    return str(path)


TINY_TIMM = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}


@pytest.fixture(scope="session")
def tiny_timm(tmp_path_factory):
    """A small random timm ViT's weights in a local safetensors file, and the TimmBackbone arguments that
    load them (as a user with the weights and no network would)."""
    import safetensors.torch
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **TINY_TIMM)
    path = tmp_path_factory.mktemp("tiny_timm") / "model.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(path))
    return {"name": "vit_tiny_patch16_224", "pretrained": False, "checkpoint_path": str(path), "model_kwargs": dict(TINY_TIMM)}
