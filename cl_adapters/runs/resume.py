"""A run's checkpoints: a hash chain of task files (``models/checkpoint.py``, the one format), and
resuming from its newest link.

After task i the run writes ``<run dir>/checkpoint/task-<i>.safetensors``, one task file, atomically:
task i's own parts, as ``shared.*`` what else changed during it (task 0's: the whole model; the backbone
whenever it trains), and what is not the model: the RNG states and the CL plugins' state as tensors;
in the metadata the run id, ``previous`` (task i-1's digest), the record (input shape, RNG, plugin
info, results so far) and, in task 0's only, the run's config (later links are bound to it by the chain).

A chain is read from task 0 on and ends before the first file that is missing, corrupt, of another run
(run id) or of another attempt (``previous``); what is after it is not used. Files that are not
``task-<i>.safetensors`` are ignored. A resume rebuilds the run's objects from the (current, compared)
config, restores links 0..i, the RNG and plugin state and goes on with task i+1: on CPU it ends with
the accuracy matrix of a run that was never stopped, bit for bit. ``cl_adapters.runs.inference`` reads
the same chain, and instantiates the stored config only through ``allowlist.check``.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cl_adapters.errors import UserError
from cl_adapters.models import checkpoint
from cl_adapters.outputs.results import dumps, flatten, without_nulls
from cl_adapters.runs import plugin_state

UNCHECKED = ("logger", "resume", "cache_dir", "cache_gb")  # config that may change between a run and its resume
NAME = re.compile(r"^task-(0|[1-9][0-9]*)\.safetensors$")


@dataclass
class Link:
    """One verified checkpoint file of a run."""

    file: checkpoint.TaskFile
    run_id: str
    previous: str  # the digest of the link before it ("" for task 0)
    record: dict  # input_shape, input_dtype, rng, plugins, results
    config: dict | None  # task 0 only

    @property
    def task(self) -> int:
        return self.file.task

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def digest(self) -> str:
        return self.file.digest

    def run_state(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors that are not the model: ``rng.`` or ``plugin.``."""
        return {k: v for k, v in self.file.tensors.items() if k.startswith(prefix)}


def read_link(path: Path) -> Link:
    """A run's checkpoint file, verified against its own digest; ValueError says what is wrong with it."""
    file = checkpoint.read(path)
    meta = file.metadata
    if file.task is None or "run_id" not in meta:
        raise ValueError("not a run's checkpoint (an exported model?)")
    try:
        link = Link(file, meta["run_id"], meta["previous"], json.loads(meta["record"]),
                    json.loads(meta["config"]) if "config" in meta else None)
        _check_record(link)
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"malformed metadata ({type(e).__name__}: {e})") from e
    return link


def _check_record(link: Link) -> None:
    """What the chain's readers take from a link has the type they read it as (TypeError names the field)."""
    record, shape = link.record, link.record.get("input_shape") if isinstance(link.record, dict) else None
    checks = {
        "record": isinstance(record, dict),
        "record.input_shape": isinstance(shape, list) and all(isinstance(n, int) and n > 0 for n in shape),
        "record.input_dtype": isinstance(record.get("input_dtype", ""), (str, type(None))),
        "record.results": isinstance(record.get("results"), dict) and isinstance(record["results"].get("accuracy_matrix", []), list),
        "record.rng": isinstance(record.get("rng"), dict),
        "config": link.config is None or (isinstance(link.config, dict) and isinstance(link.config.get("model"), dict)
                                          and isinstance(link.config.get("strategy"), dict)
                                          and isinstance(link.config["strategy"].get("model"), dict)),
    } if isinstance(record, dict) else {"record": False}
    if bad := [name for name, ok in checks.items() if not ok]:
        raise TypeError(f"{bad[0]} is not what a run's checkpoint holds there")


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
    """The checkpoint chain of one run directory (see the module docstring)."""

    def __init__(self, run_dir: str | Path, config: dict | None = None, input_shape: tuple[int, ...] | None = None,
                 run_id: str | None = None, input_dtype: str | None = None):
        self.dir = Path(run_dir) / "checkpoint"
        self.config = {k: v for k, v in (config or {}).items() if k not in UNCHECKED}
        self.input_shape, self.input_dtype = input_shape, input_dtype
        self.run_id = run_id
        self._previous = ""  # the digest of the newest link: the next one points at it
        self._last: dict[str, torch.Tensor] = {}  # the weights as last saved: later files hold what changed

    def files(self) -> dict[int, Path]:
        """task -> its file; anything else in the folder is not ours and is left alone."""
        if not self.dir.is_dir():
            if os.path.lexists(self.dir):  # no checkpoint could be written there: stop before anything is
                raise UserError(f"{self.dir} is not a folder: move it away (the run's checkpoints go there), "
                                "or run with checkpoint=false")
            return {}
        return {int(m[1]): p for p in self.dir.iterdir() if (m := NAME.match(p.name))}

    def clear(self, after: int = -1) -> None:
        """Remove the checkpoints of tasks after ``after`` (all by default): a run that starts over, or
        goes on from an earlier task, must not leave later files of another attempt in its chain."""
        for task, path in self.files().items():
            if task > after:
                path.unlink()

    def save(self, task: int, model, results: dict, plugins: list = ()) -> Path:
        state = model.state_dict()
        own = model.task_state_names(task) if task in model.trained_tasks else set()
        changed = {k: v for k, v in state.items()
                   if k not in own and (k not in self._last or not torch.equal(v, self._last[k]))}
        rng_tensors, rng = _rng_state()
        plugin_tensors, plugins_info = plugin_state.state(plugins)
        record = {"input_shape": self.input_shape, "input_dtype": self.input_dtype, "rng": rng, "plugins": plugins_info,
                  "results": {k: v for k, v in results.items() if k != "config"}}
        metadata = {"run_id": self.run_id, "previous": self._previous, "record": dumps(record)}
        if task == 0:
            metadata["config"] = dumps(self.config)
        path = self.dir / f"task-{task}.safetensors"
        self._previous = checkpoint.write(path, model, task, shared=changed, extra=rng_tensors | plugin_tensors,
                                          metadata=metadata)
        self._last = {k: v.detach().clone() for k, v in state.items()}
        return path

    def chain(self) -> list[Link]:
        """The verified links from task 0 on, up to the first bad one (warned about, with the reason)."""
        files, links = self.files(), []
        for task in range(len(files)):
            path = files.get(task, self.dir / f"task-{task}.safetensors")
            try:
                if task not in files:
                    raise ValueError("missing")
                link = read_link(path)
                if link.task != task:
                    raise ValueError(f"it holds task {link.task}")
                if links and link.run_id != links[0].run_id:
                    raise ValueError(f"it belongs to run {link.run_id}, the chain to run {links[0].run_id}")
                if link.previous != (links[-1].digest if links else ""):
                    raise ValueError(f"it does not follow task-{task - 1}.safetensors (another attempt's, or edited)"
                                     if links else "it does not start a chain")
            except ValueError as e:
                later = sorted(t for t in files if t > task)
                print(f"warning: checkpoint {path} is unusable: {e}; using the tasks before it"
                      + (f" and not the later files (tasks {later})" if later else ""), file=sys.stderr)
                break
            links.append(link)
        return links

    def load(self, model, links: list[Link]) -> None:
        """Rebuild tasks 0..i's parts in ``model`` and load the links' weights, task 0's first; refused if a
        task it claims trained has no link, or a tensor of the model is in none of them."""
        trained = json.loads(links[-1].file.metadata["trained_tasks"])
        if unlinked := sorted(set(trained) - {link.task for link in links}):
            raise UserError(f"{links[-1].path}: it says tasks {unlinked} were trained, but the chain holds no file for them")
        loaded: set[str] = set()
        for link in links:
            checkpoint.restore(model, link.file)
            loaded |= link.file.role("shared.").keys()
        checkpoint.check_complete(model, loaded, trained, links[0].path)
        model.trained_tasks[:] = trained

    def resume(self, model, plugins: list = ()) -> dict | None:
        """Restore the newest good link into ``model`` (just built, before any training), the CL plugins'
        state and the RNG states; returns its record (``results`` holds what was measured), or None if
        there is none. Sets ``run_id`` to the chain's."""
        links = self.chain()
        if not links:
            return None
        stored = links[0].config or {}
        if without_nulls(stored) != without_nulls(self.config):  # a null option added since: the same run
            old, new = flatten(stored), flatten(self.config)
            differ = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
            raise UserError(f"{self.dir} was written by a run with another config ({'; '.join(differ[:5])}); "
                            "resume it with the same config, or start over with resume=false or another run dir")
        plugin_state.check(plugins)
        self.load(model, links)
        last = links[-1]
        plugin_state.restore(plugins, model, last.run_state("plugin."), last.record["plugins"])
        _set_rng_state(last.run_state("rng."), last.record["rng"])
        self.run_id, self._previous = last.run_id, last.digest
        self._last = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.clear(after=last.task)
        return {"task": last.task, **last.record}
