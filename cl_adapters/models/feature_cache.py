"""A frozen backbone's features, computed once per sample and kept on disk for every later task and run.

SimpleCIL's class means, the routers' prototypes and features, and the linear probe only read the bare
backbone's features; on a frozen ViT-B/16 that forward is nearly all of their cost, paid again at every
task's fit and evaluation and by every run of a sweep. ``AdaptedModel.base_features`` asks this cache
instead where the base is frozen for good, in eval mode, without gradients.

Key. An entry (a folder) is named by sha256 over: the model's config (``cfg.model``: checkpoint, pooling,
...), the backbone's class, its weights (a hash of every base tensor's bytes: adapters excluded, since a
bare forward does not use them), its preprocessing (``backbone.preprocess``: size, interpolation, mean, std),
the autocast dtype and the device type. Inside it, each sample is addressed by a hash of its input's
bytes, shape and dtype: the dataset and the split are the samples themselves, so another split misses
and the same image reached through another split or class order hits. (A folder dataset's JPEGs are
still decoded on a hit: what is skipped is the model.)

Storage. ``<dir>/<key[:2]>/<key>/`` holds ``key.json`` (what the key was made of) and shards
``<sha256 of the file>.safetensors`` (``samples``: the sample hashes, ``features``), each written to a
temporary file and renamed: two sweep jobs writing the same shard write the same bytes under the same
name, and a reader sees a whole shard or none. A shard whose bytes do not match its name (torn, edited)
is dropped with a warning and recomputed. The dir is kept under ``max_gb`` by removing the least
recently used shards (a scan of the folder, redone once the bytes known pass the bound). A write the disk
refuses turns the cache's writes off for the run, with a warning: the run goes on computing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from cl_adapters.atomic import atomic_path
from cl_adapters.errors import UserError

FORMAT = "1"  # bumped when what a key or a shard means changes
SAMPLE_HASH_BYTES = 16


class FeatureCache:
    """``features(backbone, x)``: the backbone's output for ``x``, from disk where known (module docstring).
    ``identity``: what the run knows of the model that tensors do not show (its config); ``max_gb``: the
    bound on the whole ``root``. ``hits`` and ``computed`` count samples, for results.json."""

    def __init__(self, root: str | Path, identity: dict, max_gb: float = 20.0):
        if isinstance(max_gb, bool) or not isinstance(max_gb, (int, float)) or not max_gb > 0:
            raise UserError(f"cache_gb must be a positive number of gigabytes, got {max_gb!r}")
        self.root, self.identity, self.max_bytes = Path(root), identity, int(max_gb * 2**30)
        self.hits = self.computed = 0
        self.writable = True
        self._weights: tuple[tuple, str] | None = None  # (the tensors' identity, their hash)
        self._size: int | None = None  # the cache's bytes at the last scan, plus this run's writes since
        self._entries: dict[str, dict[bytes, torch.Tensor]] = {}  # key -> sample hash -> its features
        self._read: dict[str, set[str]] = {}  # key -> shard names read (or dropped)

    @torch.no_grad()
    def features(self, backbone: nn.Module, x: torch.Tensor, exclude: set[int] = frozenset()) -> torch.Tensor:
        """``backbone(x)``, each sample computed only if no run has before; ``exclude``: ids of the tensors in
        ``backbone`` its bare forward does not use (adapters)."""
        key = self.key(backbone, x, exclude)
        samples = sample_hashes(x)
        known = self._entry(key)
        missing = [i for i, s in enumerate(samples) if s not in known]
        if missing:
            self._refresh(key, known)  # another job may have written them meanwhile
            missing = [i for i, s in enumerate(samples) if s not in known]
        if missing:
            computed = backbone(x if len(missing) == len(x) else x[missing])
            new = {samples[i]: row for i, row in zip(missing, computed.detach().cpu())}
            known.update(new)
            self._write(key, new)
        self.computed += len(missing)
        self.hits += len(x) - len(missing)
        return torch.stack([known[s] for s in samples]).to(x.device)

    def key(self, backbone: nn.Module, x: torch.Tensor, exclude: set[int]) -> str:
        device = x.device.type
        autocast = str(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else None
        described = {"format": FORMAT, "model": self.identity, "class": f"{type(backbone).__module__}.{type(backbone).__qualname__}",
                     "weights": self._weights_hash(backbone, exclude), "preprocess": str(getattr(backbone, "preprocess", None)),
                     "autocast": autocast, "device": device}
        text = json.dumps(described, sort_keys=True, default=str)
        key = hashlib.sha256(text.encode()).hexdigest()
        if key not in self._entries and self.writable:
            folder = self._folder(key)
            if not (folder / "key.json").is_file():
                self._try(lambda: _write_bytes(folder / "key.json", text.encode()))
        return key

    def _weights_hash(self, backbone: nn.Module, exclude: set[int]) -> str:
        """sha256 over the base tensors' dtypes, shapes and bytes in module order (not their names: an adapter
        that wraps a layer renames its weight, ``query.weight`` -> ``query.base_layer.weight``); recomputed
        only when a tensor was replaced or changed in place (torch counts in-place writes in ``_version``)."""
        tensors = [t for t in (*backbone.parameters(), *backbone.buffers()) if id(t) not in exclude]
        state = tuple((id(t), t._version, t.data_ptr()) for t in tensors)
        if self._weights is None or self._weights[0] != state:
            h = hashlib.sha256()
            for t in tensors:
                h.update(f"{t.dtype}:{tuple(t.shape)};".encode())
                h.update(memoryview(t.detach().reshape(-1).view(torch.uint8).cpu().numpy()))
            self._weights = (state, h.hexdigest())
        return self._weights[1]

    def _folder(self, key: str) -> Path:
        return self.root / key[:2] / key

    def _entry(self, key: str) -> dict[bytes, torch.Tensor]:
        if key not in self._entries:
            self._entries[key], self._read[key] = {}, set()
            self._refresh(key, self._entries[key])
        return self._entries[key]

    def _refresh(self, key: str, known: dict[bytes, torch.Tensor]) -> None:
        """Read the entry's shards not read yet (each checked against its name; one that fails is dropped)."""
        folder = self._folder(key)
        for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else ():
            if path.name in self._read[key]:
                continue
            self._read[key].add(path.name)
            try:
                data = path.read_bytes()
                if hashlib.sha256(data).hexdigest() != path.stem:
                    raise ValueError("its bytes do not match its name")
                shard = load(data)
                samples, features = shard["samples"].numpy(), shard["features"]
                if samples.shape != (len(features), SAMPLE_HASH_BYTES):
                    raise ValueError("its sample hashes do not match its features")
            except FileNotFoundError:  # removed by another job's size bound meanwhile
                continue
            except (OSError, ValueError, KeyError, SafetensorError) as e:
                warnings.warn(f"feature cache: dropped {path} ({e}); its samples are computed again", stacklevel=2)
                path.unlink(missing_ok=True)
                continue
            known.update(zip(map(bytes, samples), features))
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: the size bound removes others first

    def _write(self, key: str, new: dict[bytes, torch.Tensor]) -> None:
        if not self.writable:
            return
        samples = np.frombuffer(b"".join(new), dtype=np.uint8).reshape(len(new), SAMPLE_HASH_BYTES)
        data = save({"samples": torch.from_numpy(samples.copy()), "features": torch.stack(list(new.values()))})
        name = f"{hashlib.sha256(data).hexdigest()}.safetensors"
        self._read[key].add(name)
        self._try(lambda: _write_bytes(self._folder(key) / name, data))
        self._bound(len(data))

    def _try(self, write) -> None:
        """A write the disk refuses turns writing off for this run (one warning); the run goes on."""
        try:
            write()
        except (OSError, UserError) as e:
            self.writable = False
            warnings.warn(f"feature cache: cannot write under {self.root} ({e}); features are computed, not kept",
                          stacklevel=3)

    def _bound(self, written: int) -> None:
        """Remove the least recently used shards until the cache holds at most ``max_bytes``. The folder is
        scanned only when the size known from the last scan plus what this run wrote since passes the bound
        (not after every write of a cold run: hundreds of shards, each scan stats every one)."""
        if self._size is not None and self._size + written <= self.max_bytes:
            self._size += written
            return
        shards = []
        for path in self.root.glob("*/*/*.safetensors"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            shards.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in shards)
        for _, size, path in sorted(shards):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
        self._size = total

    def summary(self) -> dict:
        return {"dir": str(self.root), "hits": self.hits, "computed": self.computed, "writable": self.writable}


def sample_hashes(x: torch.Tensor) -> list[bytes]:
    """A hash of each sample's bytes, shape and dtype."""
    rows = x.detach().cpu().contiguous()
    head = f"{rows.dtype}:{tuple(rows.shape[1:])}".encode()
    flat = rows.reshape(len(rows), -1).view(torch.uint8).numpy()
    return [hashlib.blake2b(head + row.tobytes(), digest_size=SAMPLE_HASH_BYTES).digest() for row in flat]


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
