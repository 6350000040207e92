"""The configuration reference, read from the one place a setting is described: its YAML file.

An option's leading comment says what the option is; a key's trailing comment (or the comment lines
right above it) says what the key does. Nothing here is written twice: ``generate.py`` renders these
into ``docs/reference/config.md`` and ``undocumented()`` is what the docs test asserts is empty.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

CONF = Path(__file__).resolve().parent.parent / "cl_adapters" / "conf"
SELF_DOCUMENTING = {"_target_", "_partial_"}  # the constructor, and "build it later with more arguments"
LINE = re.compile(r"^(?P<indent>\s*)(?P<item>- )?(?P<key>[\w./+-]+):(?:\s+(?P<rest>.*)|\s*)$")


@dataclass
class Key:
    path: str  # dotted, as on the command line: strategy.optimizer.lr
    default: str  # the YAML text ("" for a node with keys below it)
    comment: str
    leaf: bool = True


@dataclass
class Option:
    group: str  # "" for config.yaml; "experiment/quickstart" for nested options
    name: str
    file: Path
    header: str
    header_lines: list[str] = field(default_factory=list)
    defaults: list[tuple[str, str]] = field(default_factory=list)  # (entry, its comment)
    keys: list[Key] = field(default_factory=list)

    @property
    def choice(self) -> str:
        return f"{self.group}={self.name}" if self.group else "config.yaml"


def split_comment(text: str) -> tuple[str, str]:
    """``value  # comment`` -> (value, comment); a ``#`` inside quotes or a word (``file://a#b``) is kept."""
    quote = None
    for i, ch in enumerate(text):
        if ch in "'\"":
            quote = None if quote == ch else (quote or ch)
        elif ch == "#" and quote is None and (i == 0 or text[i - 1].isspace()):
            return text[:i].strip(), text[i + 1:].strip()
    return text.strip(), ""


def parse(file: Path, group: str) -> Option:
    lines = file.read_text().splitlines()
    header, i = [], 0
    while i < len(lines) and lines[i].startswith("#"):
        if not lines[i].startswith("# @package"):
            header.append(lines[i][2:].rstrip())
        i += 1
    package_global = "# @package _global_" in lines[:2]
    prefix = "" if package_global or not group else group.replace("/", ".") + "."
    option = Option(group, file.stem, file, " ".join(h.strip() for h in header), header)
    stack: list[tuple[int, str]] = []  # (indent, dotted path) of the open nodes
    counters: dict[str, int] = {}  # list node -> items so far
    above: list[str] = []  # comment lines right above the next key
    in_defaults = False
    for raw in lines[i:]:
        if not raw.strip():
            above = []
            continue
        if raw.lstrip().startswith("#"):
            above.append(raw.strip()[1:].strip())
            continue
        indent = len(raw) - len(raw.lstrip())
        if in_defaults and (indent > 0 or raw.startswith("- ")):
            entry, comment = split_comment(raw.strip()[2:])
            option.defaults.append((entry, comment))
            continue
        in_defaults = False
        match = LINE.match(raw)
        if not match:  # "- scalar" under a key: a list value
            if raw.strip().startswith("- ") and option.keys:
                value, _ = split_comment(raw.strip()[2:])
                option.keys[-1].default = (option.keys[-1].default + ", " if option.keys[-1].default else "") + value
                option.keys[-1].leaf = True
            continue
        if match["item"]:  # "- key: value": a new dict in a list (it closes the one before)
            indent += 2
        while stack and stack[-1][0] >= indent - bool(match["item"]):
            stack.pop()
        parent = stack[-1][1] if stack else ""
        if match["item"]:
            counters[parent] = counters.get(parent, -1) + 1
            stack.append((indent - 1, f"{parent}.{counters[parent]}" if parent else str(counters[parent])))
            parent = stack[-1][1]
        key = match["key"]
        if not parent and key == "defaults":
            in_defaults = True
            continue
        path = f"{parent}.{key}" if parent else key
        value, comment = split_comment(match["rest"] or "")
        comment = comment or " ".join(above)
        above = []
        option.keys.append(Key(prefix + path, value, comment, leaf=bool(value)))
        if not value:
            stack.append((indent, path))
    return option


def options() -> list[Option]:
    """config.yaml first, then every group's options (nested folders as ``group/sub``), by name."""
    found = [parse(CONF / "config.yaml", "")]
    for file in sorted(CONF.glob("**/*.yaml")):
        if file.parent == CONF:
            continue
        found.append(parse(file, str(file.parent.relative_to(CONF))))
    for option in found:
        explain(option)
    return found


def _inherited(option: Option, by_choice: dict[str, Option]) -> list[Option]:
    """The options of the same group that ``option``'s defaults list builds on (``- full``, ``- adapter``)."""
    out = []
    for entry, _ in option.defaults:
        name = entry.strip()
        if ":" in name or name == "_self_":
            continue
        base = by_choice.get(f"{option.group}={name.lstrip('/').split('/')[-1]}") if not name.startswith("/") else \
            by_choice.get("{}={}".format(*name.lstrip("/").rsplit("/", 1)))
        if base:
            out += [base, *_inherited(base, by_choice)]
    return out


def field_help(target: str, name: str) -> str:
    """The ``help`` of field ``name`` of the dataclass ``target`` (an adapter or fusion config), or ""."""
    module, _, attr = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        return ""
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    return fields[name].metadata.get("help", "") if name in fields else ""


def explain(option: Option) -> None:
    """Fill in a key without a comment from its constructor's field help (the code's one description)."""
    targets = {k.path.rsplit(".", 1)[0]: k.default for k in option.keys if k.path.endswith("._target_")}
    for key in option.keys:
        node, _, name = key.path.rpartition(".")
        if not key.comment and node in targets:
            key.comment = field_help(targets[node], name)


def documented(key: Key) -> bool:
    if key.comment or key.path.rsplit(".", 1)[-1] in SELF_DOCUMENTING:
        return True
    return bool(re.fullmatch(r"\$\{[^}]+\}", key.default))  # passes another key on: documented there


def undocumented(found: list[Option] | None = None) -> list[str]:
    """``file: key`` for every key no comment explains: not its own, not the option's it builds on, not (for
    an experiment, which only sets values) the option that defines it; the arguments of a ``torch.*``
    constructor are torch's."""
    found = found or options()
    by_choice = {o.choice: o for o in found}
    missing, explained = {}, set()
    for option in found:
        inherited = {k.path for base in _inherited(option, by_choice) for k in base.keys if documented(k)}
        torch_nodes = {k.path.rsplit(".", 1)[0] for k in option.keys
                       if k.path.endswith("._target_") and k.default.startswith("torch.")}
        for key in option.keys:
            if not key.leaf or documented(key) or key.path in inherited or key.path.rsplit(".", 1)[0] in torch_nodes:
                explained.add(key.path)
            else:
                missing[f"{option.file.relative_to(CONF.parent.parent)}: {key.path}"] = option.group, key.path
    return [where for where, (group, path) in missing.items()
            if not (group.startswith("experiment") and path in explained)]
