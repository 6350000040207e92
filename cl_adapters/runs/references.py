"""Reference runs (single_task -> S, joint -> J) and their cache.

A reference is the same backbone fine-tuned whole with the same budget (epochs, batch size, and the
optimizer: the strategy's, or ``references.optimizer``) on the same stream and seed. Its key hashes
exactly those fields, so a sweep trains it once and any change to them misses the cache instead of
reusing a stale entry. The entry stores the fields themselves; a mismatch (a hash collision or an
edited file) is refused, never used.

Parallel jobs never race for a reference: a reference run holds its entry's file lock while it trains,
and a run that needs a reference not cached yet takes the same lock before looking again (so it waits
for one being trained, and with ``references.compute`` only one process trains it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from omegaconf import DictConfig, OmegaConf, open_dict

from cl_adapters.atomic import write_error
from cl_adapters.outputs import write_json_atomic
from cl_adapters.outputs.results import without_nulls
from cl_adapters.strategies.continual import REFERENCES, resolve_precision  # noqa: F401  (REFERENCES: read from here by run.py)


def reference_optimizer(cfg: DictConfig) -> DictConfig:
    """``references.optimizer`` if set (fine-tuning a pretrained backbone whole wants a smaller
    learning rate than its adapters), else the strategy's own."""
    return cfg.references.get("optimizer") or cfg.strategy.optimizer


def reference_strategy(cfg: DictConfig, protocol: str) -> DictConfig:
    """The run's budget with the reference protocol and a whole-backbone fine-tuned model."""
    ref = cfg.strategy.copy()
    with open_dict(ref):
        ref.protocol = protocol
        ref.optimizer = reference_optimizer(cfg)
        ref.model = {"_target_": "cl_adapters.models.AdaptedModel", "_partial_": True, "train_backbone": "all",
                     "scenario": cfg.scenario}
    return ref


def reference_model(cfg: DictConfig) -> dict:
    """The backbone config a reference trains: the run's, in full precision (a reference trains the
    whole backbone, a quantized base cannot train: quantized and fp32 runs share their references)."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    return {k: v for k, v in model.items() if k != "quantize"}


def key_fields(cfg: DictConfig, protocol: str) -> dict:
    """What a reference depends on (device and eval batch size change nothing but speed)."""
    s = cfg.strategy
    fields = {"protocol": protocol, "stream": OmegaConf.to_container(cfg.stream, resolve=True),  # its ${seed}, ${scenario}
              "model": reference_model(cfg), "seed": cfg.seed,
              "eval_stream": cfg.eval_stream, "strategy": s.get("_target_"), "optimizer": reference_optimizer(cfg),
              "epochs": s.epochs, "batch_size": s.batch_size,
              "precision": resolve_precision(s.get("precision"), s.device)}  # null (fp32): dropped; auto: what it is here
    return without_nulls(OmegaConf.to_container(OmegaConf.create(fields), resolve=True))  # see without_nulls


def reference_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


class ReferenceCache:
    """One JSON file per reference: ``<dir>/<protocol>-<key>.json``."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    def path(self, protocol: str, cfg: DictConfig) -> tuple[Path, dict]:
        fields = key_fields(cfg, protocol)
        return self.dir / f"{protocol}-{reference_key(fields)}.json", fields

    def load(self, protocol: str, cfg: DictConfig) -> dict | None:
        path, fields = self.path(protocol, cfg)
        if not path.exists():
            return None
        entry = json.loads(path.read_text())
        if entry.get("fields") != fields:
            print(f"reference {protocol}: {path} was made for other settings; ignored")
            return None
        return entry

    def save(self, protocol: str, cfg: DictConfig, accuracy_matrix: list, run_dir: str | Path) -> Path:
        path, fields = self.path(protocol, cfg)
        diagonal = [row[j] for j, row in enumerate(accuracy_matrix)]
        write_json_atomic(path, {"key": path.stem.split("-", 1)[1], "fields": fields, "diagonal": diagonal,
                                 "accuracy_matrix": accuracy_matrix, "run_dir": str(run_dir),
                                 "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return path

    @contextlib.contextmanager
    def locked(self, protocol: str, cfg: DictConfig) -> Iterator[None]:
        """Hold the reference's lock (``<entry>.lock``; reentrant in one process, so a reference trained
        inside a run that holds it can take it again), saying so when another process has it."""
        path, _ = self.path(protocol, cfg)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(path, e) from e
        lock = FileLock(path.with_suffix(".lock"), is_singleton=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            print(f"reference {protocol}: another run holds {lock.lock_file} (training it); waiting", flush=True)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()
