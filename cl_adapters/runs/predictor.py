"""Serving a run: the base model once, task adapters loaded on demand from an export folder.

    export("outputs/...", "served/")                 # base.safetensors, task-<t>.safetensors, config.json
    predictor = Predictor("served/", capacity=8)
    labels = predictor.predict(x, task_labels)       # a batch may mix tasks; no labels: the router's tasks

At most ``capacity`` tasks have their adapter resident; a task that is not is read from its file
(verified against its digest) and the least recently used one is dropped first. Heads (a few KB each)
stay. ``cl-adapters-predict <run or export dir> <inputs.jsonl>`` writes predictions (``predict_cli``).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import torch

from cl_adapters.errors import UserError
from cl_adapters.models import checkpoint
from cl_adapters.models.adapted import task_key
from cl_adapters.runs.inference import RUN_CONFIG, build_model, read_export


class Predictor:
    """A run's model with only its most recently used tasks' adapters in memory."""

    def __init__(self, directory: str | Path, capacity: int = 8, device: str = "cpu", allow: Iterable[str] = ()):
        self.directory = Path(directory)
        if not isinstance(capacity, int) or capacity < 1:
            raise UserError(f"capacity must be a positive integer, got {capacity!r}")
        self.capacity = capacity
        info = read_export(self.directory)
        self.model = build_model(info["config"], info["input_shape"], self.directory / RUN_CONFIG, allow)
        if self.model.fusion is not None:
            raise UserError("an AdapterFusion run's tasks read each other's adapters: serve it whole with load_run")
        self.base = checkpoint.read_base(self.directory)
        if self.base.digest != info["files"][checkpoint.BASE]:
            raise UserError(f"{self.base.path}: not the base {RUN_CONFIG} was written with (another export's, or edited)")
        self.tasks: list[int] = json.loads(self.base.metadata["trained_tasks"])
        checkpoint.restore(self.model, self.base)  # the backbone and what is shared; every head, empty until its task loads
        checkpoint.check_complete(self.model, set(self.base.role("shared.")), self.tasks, self.base.path)
        self.resident: OrderedDict[int, None] = OrderedDict()  # least recently used first
        self.model.trained_tasks[:] = []
        self.model.eval().to(device)

    def _make_resident(self, tasks: list[int]) -> None:
        if unknown := sorted(set(tasks) - set(self.tasks)):
            raise UserError(f"task(s) {unknown} are not in {self.directory} (it holds tasks {self.tasks})")
        if len(tasks) > self.capacity:
            raise UserError(f"a batch of {len(tasks)} tasks needs capacity >= {len(tasks)} (it is {self.capacity})")
        for task in tasks:
            if task in self.resident:
                self.resident.move_to_end(task)
                continue
            while len(self.resident) >= self.capacity:
                self._drop(next(t for t in self.resident if t not in tasks))
            checkpoint.restore(self.model, checkpoint.read_task(self.base, task))
            self.resident[task] = None

    def _drop(self, task: int) -> None:
        del self.resident[task]
        self.model.trained_tasks.remove(task)
        if self.model.adapters is not None and task_key(task) in self.model.adapters.keys():
            self.model.adapters.remove(task_key(task))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task_labels: torch.Tensor | int | None = None) -> torch.Tensor:
        """Class ids: each sample through its task's adapter and head; without ``task_labels`` (a class- or
        domain-IL run) through the router's task, with every task resident."""
        if task_labels is None:
            self._make_resident(self.tasks)
            return self.model.classify(x).argmax(1)
        self._make_resident(sorted({int(t) for t in torch.as_tensor(task_labels).reshape(-1).tolist()}))
        with self.model.given_task_labels():  # the labels given pick the adapters, not a router
            return self.model(x, task_labels).argmax(1)


def read_inputs(path: Path, config: dict) -> tuple[torch.Tensor, list[int] | None]:
    """A JSON-lines file, one sample per line: ``{"text": ...}`` for a text model (tokenised as its stream
    was) or ``{"x": nested lists}``, with ``"task"`` on every line or on none."""
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not readable as JSON lines ({e})") from None
    if not rows or not all(isinstance(r, dict) and ("text" in r) != ("x" in r) for r in rows):
        raise UserError(f'{path}: each line must be an object with "text" or "x" (and "task")')
    with_task = sum("task" in r for r in rows)
    if with_task not in (0, len(rows)):
        raise UserError(f'{path}: "task" is on {with_task} of {len(rows)} lines: give it on all or none')
    tasks = [int(r["task"]) for r in rows] if with_task else None
    if "text" in rows[0]:
        from cl_adapters.streams.text import tokenize

        stream = config.get("stream", {})
        return tokenize([str(r.get("text")) for r in rows], config["model"].get("name_or_path"), stream.get("max_length", 128)), tasks
    try:
        return torch.tensor([r.get("x") for r in rows], dtype=torch.float32), tasks
    except (TypeError, ValueError) as e:
        raise UserError(f'{path}: "x" must be nested lists of numbers of one shape ({e})') from None


def main(argv: list[str] | None = None) -> int:
    """``cl-adapters-predict``: one JSON line per input, ``{"task": t, "prediction": class id}``."""
    import argparse
    import sys
    import tempfile

    from cl_adapters.runs.inference import export

    parser = argparse.ArgumentParser(description="Predict with a run's adapters (a run folder or a cl-adapters export).")
    parser.add_argument("source", type=Path, help="a run's output folder, or what export(run, out) wrote")
    parser.add_argument("inputs", type=Path, help='JSON lines: {"text": ...} or {"x": [...]}, and "task" (task-IL)')
    parser.add_argument("--out", type=Path, help="where to write the predictions (default: stdout)")
    parser.add_argument("--capacity", type=int, default=8, help="task adapters resident at once (LRU)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            source = args.source
            if not (source / RUN_CONFIG).is_file():  # a run folder: export it first
                source = export(source, Path(scratch) / "export")
            predictor = Predictor(source, capacity=args.capacity)
            x, tasks = read_inputs(args.inputs, json.loads((source / RUN_CONFIG).read_text())["config"])
            lines = []
            for i in range(0, len(x), args.batch_size):
                batch = None if tasks is None else torch.tensor(tasks[i : i + args.batch_size])
                for j, p in enumerate(predictor.predict(x[i : i + args.batch_size], batch).tolist()):
                    lines.append(json.dumps({"task": None if tasks is None else tasks[i + j], "prediction": p}))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = "\n".join(lines) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
        print(f"{len(lines)} predictions: {args.out}", file=sys.stderr)
    return 0
