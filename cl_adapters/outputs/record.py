"""What a run record (results.json) must hold for the report to read it: ``RECORD``, one table of fields,
types and ranges, checked by ``read_results``. A file that fails is listed by the report with the field, and
the other runs are reported; a finite, in-range number is required where a mean over seeds will be taken."""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Callable
from pathlib import Path

from cl_adapters.metrics.spec import BY_KEY, DEFINITIONS
from cl_adapters.streams.base import SCENARIOS


def read_results(path: Path) -> dict:
    """A results.json, and if it completed, one that ``RECORD`` accepts; ValueError says what is wrong (the
    report lists the file and goes on)."""
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"unreadable, not valid JSON ({e.msg}, line {e.lineno})") from e
    except RecursionError as e:
        raise ValueError("unreadable, nested too deeply to parse") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"unreadable, {e}") from e
    if not _str(_field(results, "run.status")):
        raise ValueError("unreadable, no run.status")
    if results["run"]["status"] == "complete" and (problems := invalid(results)):
        raise ValueError(f"left out, {'; '.join(problems)}")
    return results


def invalid(results: dict) -> list[str]:
    """What in a complete run's record ``RECORD`` does not accept, one entry per field."""
    problems = []
    for field, (what, ok) in RECORD.items():
        value = _field(results, field.rstrip("?"))
        if value is _MISSING:
            if not field.endswith("?"):
                problems.append(f"{field} is missing ({what})")
        elif not ok(value):
            problems.append(f"{field.rstrip('?')} must be {what}, got {reprlib.repr(value)}")
    tasks = len(results.get("accuracy_matrix") or ())
    if not problems and (curve := results.get("accuracy_curve")) and len(curve) != tasks:  # averaged over seeds
        problems.append(f"accuracy_curve must have one entry per row of accuracy_matrix ({tasks}), got {len(curve)}")
    return problems


_MISSING = object()


def _field(results: dict, field: str):
    for key in field.split("."):
        if not isinstance(results, dict) or key not in results:
            return _MISSING
        results = results[key]
    return results


def _str(x) -> bool:
    return isinstance(x, str)


def _dict(x) -> bool:
    return isinstance(x, dict)


def _number(x, low: float = -math.inf, high: float = math.inf) -> bool:
    """A finite number in [low, high] (NaN, inf and 1e999 are not)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and low <= x <= high


def _depth(node) -> int:
    """How many containers deep ``node`` is, counted without recursion (a deep one would exhaust the stack)."""
    depth, level = 0, [node]
    while level := [child for n in level if isinstance(n, (dict, list)) for child in (n.values() if _dict(n) else n)]:
        depth += 1
    return depth


def _accuracy_matrix(R) -> bool:
    square = isinstance(R, list) and bool(R) and all(isinstance(row, list) and len(row) == len(R) for row in R)
    return square and all(_number(x, 0, 1) or (j > i and x is None) for i, row in enumerate(R) for j, x in enumerate(row))


def _costs(costs) -> bool:
    return isinstance(costs, list) and bool(costs) and all(
        _dict(c) and all(_number(c.get(k), 0) for k in COSTS) and all(_number(c[k], 0) for k in COUNTED_LATER if k in c)
        for c in costs)


def _accuracies(v) -> bool:
    return isinstance(v, list) and all(_number(x, 0, 1) for x in v)


def _metric(key: str) -> tuple[str, Callable]:
    """An accuracy in [0, 1] or a difference of two in [-1, 1]; null (not measured) except for acc."""
    low, what = (0, "an accuracy in [0, 1]") if BY_KEY[key].accuracy else (-1, "a difference of accuracies in [-1, 1]")
    if key == "acc":
        return what, lambda v: _number(v, low, 1)
    return f"{what} or null", lambda v: v is None or _number(v, low, 1)


MAX_DEPTH = 32  # a results.json is a few levels deep; the report recurses through config
COSTS = ("trainable_params", "bytes_per_task", "train_seconds")
COUNTED_LATER = ("optimizer_steps", "train_samples", "train_flops")  # absent from runs recorded before
MACHINE = ("platform", "cpus", "torch_threads", "device")
RECORD = {  # what the report reads of a complete run: field -> (what it must be, test); "?": it may be absent
    "run.stream": ("a string", _str),
    "run.strategy": ("a string", _str),
    "run.plugins?": ("a list of strings", lambda v: isinstance(v, list) and all(map(_str, v))),
    "run.fusion?": ("a string or null", lambda v: v is None or _str(v)),
    "run.router?": ("a string or null", lambda v: v is None or _str(v)),
    "run.started?": ("a string", _str),
    "scenario?": (f"one of {', '.join(SCENARIOS)}", lambda v: _str(v) and v in SCENARIOS),
    "config": (f"an object nested at most {MAX_DEPTH} deep", lambda v: _dict(v) and _depth(v) <= MAX_DEPTH),
    "config.seed": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "metric_definitions?": (f"an object nested at most {MAX_DEPTH} deep or null",
                            lambda v: v is None or _dict(v) and _depth(v) <= MAX_DEPTH),
    "metrics": ("an object", _dict),
    **{f"metrics.{key}{'' if key == 'acc' else '?'}": _metric(key) for key in DEFINITIONS},
    "accuracy_matrix": ("a square, non-empty list of rows of accuracies in [0, 1], null only above the diagonal",
                        _accuracy_matrix),
    "accuracy_curve?": ("a list of accuracies in [0, 1]", _accuracies),  # empty: resumed from a chain without one
    "costs": (f"a non-empty list of objects whose {', '.join(COSTS)} (and {', '.join(COUNTED_LATER)} if there) are "
              "finite numbers >= 0", _costs),
    "not_applicable?": ("an object or null", lambda v: v is None or _dict(v)),
    "references_missing?": ("an object of paths or null",
                            lambda v: v is None or _dict(v) and all(map(_str, v.values()))),
    "versions?": ("an object", _dict),
    "machine?": (f"an object with {', '.join(MACHINE)}, or null",
                 lambda v: v is None or _dict(v) and set(MACHINE) <= set(v)),
}
