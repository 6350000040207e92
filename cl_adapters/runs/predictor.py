"""Serving a run: the base model once, task adapters loaded on demand from an export folder.

    export("outputs/...", "served/")                 # base.safetensors, task-<t>.safetensors, config.json
    predictor = Predictor("served/", capacity=8)     # capacity=None (default): every task of the run
    labels = predictor.predict(x, task_labels)       # a batch may mix tasks; no labels: the router's tasks

At most ``capacity`` tasks have their adapter resident; a task that is not is read from its file
(verified against its digest) and the least recently used one is dropped first. Heads (a few KB each)
stay. ``cl-adapters-predict <run or export dir> <inputs.jsonl>`` writes predictions (``main``): every line
of the inputs is checked first (at most ``MAX_LINE`` bytes, the run's input shape, finite numbers, a task
index), and ``--out`` is checked before any model is loaded and written whole or not at all.
"""

from __future__ import annotations

import argparse
import json
import os
import reprlib
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from cl_adapters.atomic import atomic_path
from cl_adapters.errors import UserError, one_line
from cl_adapters.models import checkpoint
from cl_adapters.models.adapted import AdaptedModel, task_key
from cl_adapters.routers import OracleRouter
from cl_adapters.runs.inference import RUN_CONFIG, build_model, export, read_export
from cl_adapters.streams.text import tokenize

MAX_LINE = 16 << 20  # bytes in one input line (a 3x224x224 image is ~1.5 MB): longer is refused unread
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


class Predictor:
    """A run's model with only its most recently used tasks' adapters in memory."""

    def __init__(self, directory: str | Path, capacity: int | None = None, device: str = "cpu",
                 allow: Iterable[str] = ()):
        self.directory = Path(directory)
        if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1):
            raise UserError(f"capacity must be a positive integer or None (every task of the run), got {capacity!r}")
        self._capacity = capacity
        self.export = info = read_export(self.directory)  # config, input_shape, the files' digests
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

    @property
    def capacity(self) -> int:
        """Task adapters resident at once: as given, else every task of the run."""
        return len(self.tasks) if self._capacity is None else self._capacity

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
            self._make_all_resident()
            return self.model.classify(x).argmax(1)
        self._make_resident(sorted({int(t) for t in torch.as_tensor(task_labels).reshape(-1).tolist()}))
        with self.model.given_task_labels():  # the labels given pick the adapters, not a router
            return self.model(x, task_labels).argmax(1)

    def _make_all_resident(self) -> None:
        """What serving without task labels needs: a router, and every task it may pick in memory."""
        if why := labels_needed(self.model):
            raise UserError(f"{self.directory}: {why}: give each sample's task label")
        if len(self.tasks) > self.capacity:
            raise UserError(f"{self.directory}: inputs without task labels need every task resident (the router may "
                            f"pick any): capacity must be at least its {len(self.tasks)} tasks, it is {self.capacity}")
        self._make_resident(self.tasks)


def labels_needed(model: AdaptedModel) -> str | None:
    """Why ``model`` cannot predict without task labels (None: it can)."""
    if model.labels_at_test:
        return "a task-IL run picks each sample's adapter and head by its task label"
    if isinstance(model.router, OracleRouter):
        return "router=oracle routes each sample by its true task label"
    return None


class Inputs(NamedTuple):
    x: torch.Tensor  # the samples as the model takes them
    tasks: list[int] | None  # each sample's task label; None: no line gives one
    lines: list[int]  # each sample's line number in the file


def read_inputs(path: Path, config: dict, input_shape: Sequence[int], text: bool = False,
                dtype: str = "float32") -> Inputs:
    """A JSON-lines file, one sample per line: ``{"text": a string}`` for a text model (tokenised as its
    stream was, truncated to its max_length) or ``{"x": nested lists of numbers}`` of ``input_shape``,
    with ``"task"`` (an index) on every line or on none. Anything else is refused naming its line and field.
    ``dtype``: the run's stream's; ``uint8`` (images kept as pixels) takes integers 0..255 and gives uint8,
    since the backbones scale uint8 to 0..1 and take floats as they are (a float 255 is not a uint8 255)."""
    field, other = ("text", "x") if text else ("x", "text")
    shape, pixels = tuple(input_shape), dtype == "uint8" and not text
    what = ("a string" if text else f"nested lists of integers in 0..255 (uint8 pixels, as the run's stream gave them), "
            f"shape {list(shape)}" if pixels else f"nested lists of finite numbers, shape {list(shape)}")
    values, tasks, lines = [], [], []
    for n, row in _objects(path):
        where = f"{path}, line {n}"
        if not isinstance(row, dict):
            raise UserError(f'{where}: must be a JSON object {{"{field}": ..., "task": ...}}, got {reprlib.repr(row)}')
        if other in row:
            raise UserError(f'{where}: "{other}": this run\'s model takes "{field}" ({what})')
        if unknown := sorted(set(row) - {field, "task"}):
            raise UserError(f'{where}: unknown field {reprlib.repr(unknown[0])} (a line holds "{field}" and maybe '
                            '"task")')
        if field not in row:
            raise UserError(f'{where}: no "{field}" ({what})')
        if problem := _text_problem(row[field]) if text else _number_problem(row[field], shape, "x", pixels):
            raise UserError(f'{where}: "{field}" must be {what}: {problem}')
        if "task" in row and (isinstance(row["task"], bool) or not isinstance(row["task"], int) or row["task"] < 0):
            raise UserError(f'{where}: "task" must be a task index (an integer >= 0), got {reprlib.repr(row["task"])}')
        values.append(row[field])
        tasks.append(row.get("task"))
        lines.append(n)
    if not values:
        raise UserError(f'{path}: no inputs (one JSON object a line: {{"{field}": ..., "task": ...}})')
    given = sum(t is not None for t in tasks)
    if given not in (0, len(tasks)):
        odd = lines[next(i for i, t in enumerate(tasks) if (t is None) != (tasks[0] is None))]
        raise UserError(f'{path}, line {odd}: "task" is on {given} of {len(tasks)} lines: give it on all or none')
    if text:
        x = tokenize(values, config["model"].get("name_or_path"), config.get("stream", {}).get("max_length", 128))
    else:
        x = torch.tensor(values, dtype=torch.uint8 if pixels else torch.float32)
    return Inputs(x, tasks if given else None, lines)


def _objects(path: Path) -> Iterator[tuple[int, object]]:
    """Each non-blank line's number and JSON value, read one line at a time (none over ``MAX_LINE`` bytes)."""
    try:
        with open(path, "rb") as f:
            for n, line in enumerate(iter(lambda: f.readline(MAX_LINE + 1), b""), 1):
                if len(line) > MAX_LINE and not line.endswith(b"\n"):
                    raise UserError(f"{path}, line {n}: longer than {MAX_LINE} bytes (the most one sample may take)")
                try:
                    line = line.decode("utf-8-sig")
                except UnicodeDecodeError:
                    raise UserError(f"{path}, line {n}: not UTF-8 text") from None
                if line.strip():
                    yield n, _json(line.rstrip("\r\n"), f"{path}, line {n}")
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror or e})") from None


def _json(line: str, where: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not valid JSON ({e.msg}, column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # an integer of over 4,300 digits; lists nested too deep
        raise UserError(f"{where}: not valid JSON ({type(e).__name__})") from None


def _number_problem(value: object, shape: tuple[int, ...], at: str, pixels: bool = False) -> str | None:
    """What keeps ``value`` from being nested lists of float32 numbers (``pixels``: uint8) of ``shape`` (None:
    nothing)."""
    if not shape:
        if pixels:
            ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255
            return None if ok else f"{at} is {reprlib.repr(value)}, not an integer in 0..255"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{at} is {reprlib.repr(value)}, not a number"
        return None if abs(value) <= FLOAT32_MAX else f"{at} is {reprlib.repr(value)}, not a finite float32"
    if not isinstance(value, list) or len(value) != shape[0]:
        got = f"{len(value)} items" if isinstance(value, list) else reprlib.repr(value)
        return f"{at} must be a list of {shape[0]}, got {got}"
    return next((p for i, v in enumerate(value) if (p := _number_problem(v, shape[1:], f"{at}[{i}]", pixels))), None)


def _text_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"got {reprlib.repr(value)}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "it holds a lone surrogate, which no tokenizer takes"
    return None


def check_tasks(path: Path, inputs: Inputs, predictor: Predictor) -> None:
    """Every line's task is one the run holds; no task on any line only where the run can route."""
    if inputs.tasks is None:
        if why := labels_needed(predictor.model):
            raise UserError(f'{path}, line {inputs.lines[0]}: no "task", but {why}: give "task" on every line')
        return
    for task, n in zip(inputs.tasks, inputs.lines):
        if task not in predictor.tasks:
            raise UserError(f'{path}, line {n}: "task" {reprlib.repr(task)} is not one of the tasks of '
                            f"{predictor.directory} ({predictor.tasks})")


def check_writable(path: Path) -> None:
    """Refuse an output path that cannot take a file before anything is computed (missing folders are made)."""
    if path.is_dir():
        raise UserError(f"--out {path}: is a directory; give a file path")
    folder = next(p for p in path.absolute().parents if p.exists())
    if not folder.is_dir():
        raise UserError(f"--out {path}: {folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"--out {path}: {folder} is not writable")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _batches(tasks: list[int] | None, n: int, size: int) -> Iterator[list[int]]:
    """Sample indices in batches of at most ``size``, each of one task (any capacity serves them in turn)."""
    groups: dict[int | None, list[int]] = {}
    for i in range(n):
        groups.setdefault(None if tasks is None else tasks[i], []).append(i)
    for group in groups.values():
        yield from (group[k : k + size] for k in range(0, len(group), size))


def predictions(served: Path, inputs_path: Path, capacity: int | None, batch_size: int,
                allow: Sequence[str]) -> list[str]:
    """One JSON line per input line of ``inputs_path``, in its order, from the export ``served``."""
    predictor = Predictor(served, capacity=capacity, allow=allow)
    info = predictor.export
    text = predictor.model.backbone.inputs == "token ids"
    inputs = read_inputs(inputs_path, info["config"], info["input_shape"], text, info["input_dtype"])
    check_tasks(inputs_path, inputs, predictor)
    tasks = inputs.tasks or [None] * len(inputs.lines)
    labels = [0] * len(tasks)
    for batch in _batches(inputs.tasks, len(tasks), batch_size):
        given = None if inputs.tasks is None else torch.tensor([tasks[i] for i in batch])
        for i, label in zip(batch, predictor.predict(inputs.x[batch], given).tolist()):
            labels[i] = label
    return [json.dumps({"task": t, "prediction": p}) + "\n" for t, p in zip(tasks, labels)]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, as every other mistake (not argparse's usage block)
        raise UserError(f"{message} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cl-adapters-predict",
                     description="Predict with a run's adapters (a run folder or a cl-adapters export).")
    parser.add_argument("source", type=Path, help="a run's output folder, or what export(run, out) wrote")
    parser.add_argument("inputs", type=Path, help=f'JSON lines: {{"text": ...}} or {{"x": [...]}} (pixels 0..255 for '
                                                  f'a run on uint8 images), and "task" (task-IL); at most {MAX_LINE} '
                                                  "bytes a line")
    parser.add_argument("--out", type=Path, help="where to write the predictions (default: stdout)")
    parser.add_argument("--capacity", type=_positive, help="task adapters resident at once (LRU; default: every "
                                                           "task, which inputs without task labels need)")
    parser.add_argument("--batch-size", type=_positive, default=64)
    parser.add_argument("--allow", action="append", default=[], metavar="PATTERN",
                        help="a _target_ pattern you trust besides the project's own (e.g. 'my_streams.*'); repeatable")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``cl-adapters-predict``: one JSON line per input, ``{"task": t, "prediction": class id}``; a mistake is
    one line on stderr (exit 2), and what can be checked before a model is loaded is checked first."""
    try:
        args = _parser().parse_args(argv)
        if args.out is not None:
            check_writable(args.out)
        if not args.inputs.exists():
            raise UserError(f"{args.inputs}: no such file")
        with tempfile.TemporaryDirectory() as scratch:
            served = args.source
            if not (served / RUN_CONFIG).is_file():  # a run folder: export it first
                served = export(args.source, Path(scratch) / "export", allow=args.allow)
            try:
                lines = predictions(served, args.inputs, args.capacity, args.batch_size, args.allow)
            except UserError as e:  # named by the folder the user gave, not the export made on the way
                raise UserError(str(e).replace(str(served), str(args.source))) from None
        if args.out is None:
            sys.stdout.write("".join(lines))
            return 0
        with atomic_path(args.out) as tmp:
            tmp.write_text("".join(lines))
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"{len(lines)} predictions: {args.out}", file=sys.stderr)
    return 0
