"""Per-task checkpoints of a run, and resuming from the newest good one.

After task i the run writes to ``<run dir>/checkpoint/``:

- ``task-<i>.safetensors``: the tensors task i created or changed (its head, adapter and fusion; the
  backbone too when it trained), plus the RNG states; task 0's file holds the whole model, so the
  chain needs nothing else and every later file costs what that task trained;
- ``task-<i>.json``: that file's sha256, what the model needs to rebuild task i's parts, the results
  so far (rows of R, costs, metrics) and the config the run was started with.

Both are written atomically, the JSON last: a kill mid-write leaves task i-1 the newest complete
checkpoint. A resume rebuilds the run's objects from its config, overlays task files 0..i, restores the
RNG states and goes on with task i+1, so on CPU it ends with the same accuracy matrix, bit for bit, as a
run that was never stopped. ``cl_adapters.inference`` loads the same files to predict.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cl_adapters import plugin_state
from cl_adapters.atomic import atomic_path
from cl_adapters.errors import UserError
from cl_adapters.logging.results import flatten, write_json_atomic
from cl_adapters.models.adapted import task_key

UNCHECKED = ("logger", "resume")  # config that may change between a run and its resume


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    np_state = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors |= {f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    py_version, py_state, py_gauss = random.getstate()
    return tensors, {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
                     "python": [py_version, list(py_state), py_gauss]}


def _set_rng_state(tensors: dict[str, torch.Tensor], states: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))


class Checkpoints:
    """The checkpoints of one run directory (see the module docstring)."""

    def __init__(self, run_dir: str | Path, config: dict, input_shape: tuple[int, ...] | None = None):
        self.dir = Path(run_dir) / "checkpoint"
        self.config = {k: v for k, v in config.items() if k not in UNCHECKED}
        self.input_shape = input_shape
        self._last: dict[str, torch.Tensor] = {}  # the weights as last saved: later files hold what changed

    def clear(self, after: int = -1) -> None:
        """Remove the checkpoints of tasks after ``after`` (all by default): a run that starts over, or
        goes on from an earlier task, must not leave later files of another attempt in its chain."""
        for path in self.dir.glob("task-*.*"):
            if int(path.name.split(".")[0].split("-")[1]) > after:
                path.unlink()

    def save(self, task: int, model, results: dict, plugins: list = ()) -> Path:
        state = model.state_dict()
        changed = {k: v for k, v in state.items() if k not in self._last or not torch.equal(v, self._last[k])}
        rng_tensors, rng = _rng_state()
        plugin_tensors, plugins_info = plugin_state.state(plugins)
        weights = self.dir / f"task-{task}.safetensors"
        with atomic_path(weights) as tmp:
            tensors = changed | rng_tensors | plugin_tensors
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        fusions = model.fusions(task)
        record = {"task": task, "weights": weights.name, "sha256": _sha256(weights), "input_shape": self.input_shape,
                  "classes": model.heads[task_key(task)].out_features, "fusion_over": fusions[0].keys if fusions else None,
                  "trained_tasks": model.trained_tasks, "rng": rng, "plugins": plugins_info, "config": self.config,
                  "results": results}
        self._last = {k: v.detach().clone() for k, v in state.items()}
        return write_json_atomic(self.dir / f"task-{task}.json", record)

    def records(self) -> list[dict]:
        """The records of tasks 0..i whose files are intact, up to the first bad or missing one (warned)."""
        records = []
        for task in range(len(list(self.dir.glob("task-*.json")))):
            path = self.dir / f"task-{task}.json"
            try:
                record = json.loads(path.read_text())
                if _sha256(self.dir / record["weights"]) != record["sha256"]:
                    raise ValueError(f"{record['weights']} does not match its sha256")
            except (OSError, ValueError, KeyError) as e:
                print(f"warning: checkpoint of task {task} is unusable ({path}: {e}); using the ones before it")
                break
            records.append(record)
        return records

    def load(self, model, records: list[dict]) -> None:
        """Rebuild tasks 0..i's parts in ``model`` and load their weights (task 0's file first)."""
        for record in records:
            model.restore_task(record["task"], record["classes"], record["fusion_over"])
        model.trained_tasks[:] = records[-1]["trained_tasks"]
        state = model.state_dict()
        for record in records:
            path = self.dir / record["weights"]
            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():
                    if name.startswith(("rng.", "plugin.")):
                        continue
                    tensor = f.get_tensor(name)
                    if name not in state or state[name].shape != tensor.shape:
                        found = tuple(state[name].shape) if name in state else "no such tensor"
                        raise UserError(f"{path}: tensor {name} {tuple(tensor.shape)} does not fit the model ({found})")
                    with torch.no_grad():
                        state[name].copy_(tensor)

    def resume(self, model, plugins: list = ()) -> dict | None:
        """Restore the newest good checkpoint into ``model`` (just built, before any training), the CL
        plugins' state and the RNG states; returns its record (``results`` holds what was measured), or
        None if there is none."""
        records = self.records()
        if not records:
            return None
        last = records[-1]
        if last["config"] != self.config:
            old, new = flatten(last["config"]), flatten(self.config)
            differ = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
            raise UserError(f"{self.dir} was written by a run with another config ({'; '.join(differ[:5])}); "
                            "resume it with the same config, or start over with resume=false or another run dir")
        plugin_state.check(plugins)
        self.load(model, records)
        with safe_open(str(self.dir / last["weights"]), framework="pt") as f:
            plugin_state.restore(plugins, model, {k: f.get_tensor(k) for k in f.keys() if k.startswith("plugin.")},
                                 last["plugins"])
            _set_rng_state({k: f.get_tensor(k) for k in f.keys() if k.startswith("rng.")}, last["rng"])
        self._last = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.clear(after=last["task"])
        return last
