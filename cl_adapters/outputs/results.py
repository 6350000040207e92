"""results.json: written atomically after every task, so a crash or kill keeps what was measured."""

from __future__ import annotations

import json
import math
from pathlib import Path

from cl_adapters.atomic import atomic_path


def json_safe(obj):
    """JSON has no NaN: unmeasured entries become null (None), as results.json and the loggers show them."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(data, **kwargs) -> str:
    """Strict JSON (NaN and infinities as null)."""
    return json.dumps(json_safe(data), allow_nan=False, **kwargs)


def write_json_atomic(path: str | Path, data: dict) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(dumps(data, indent=2))
    return Path(path)


def flatten(node, prefix: str = "") -> dict:
    """A nested config as ``{"a.b.c": value}`` leaves (to compare two configs and name what differs)."""
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    return {k: v for key, value in node.items() for k, v in flatten(value, f"{prefix}{key}.").items()}


def without_nulls(node):
    """``node`` without the dict entries that are null, at any depth: a new option whose null default keeps
    the old behaviour then leaves the older runs' configs (resume) and reference keys as they were."""
    if isinstance(node, dict):
        return {k: without_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [without_nulls(v) for v in node]
    return node


def strategy_name(results: dict) -> str:
    """``strategy[fusion]@router+plugin+...``, e.g. ``adapter_fusion[light]``, ``full_ft+ewc``."""
    run = results["run"]
    fusion = f"[{run['fusion']}]" if run.get("fusion") else ""
    router = f"@{run['router']}" if run.get("router") else ""
    return "+".join([run["strategy"] + fusion + router, *run.get("plugins", [])])


def run_name(results: dict) -> str:
    """The strategy name; runs without task labels at test are prefixed with their scenario
    (``class_il: adapter@prototype``), so that no name is mistaken for its task-IL twin."""
    scenario = results.get("scenario", "task_il")
    return strategy_name(results) if scenario == "task_il" else f"{scenario}: {strategy_name(results)}"
