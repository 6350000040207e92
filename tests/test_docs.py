"""The documentation cannot rot: the generated pages are current, every config key, strategy, router,
adapter, plugin and metric is documented, and every snippet in README.md and docs/ is tested (the
markers are explained in docs/contributing.md)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from cl_adapters import CONFIG_DIR
from conftest import ROOT

sys.path.insert(0, str(ROOT / "docs"))
import conf_reference  # noqa: E402
import generate  # noqa: E402

PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if "_generated" not in p.parts)]
LANGUAGES = {"bash", "python", "yaml", "text"}
MARK = re.compile(r"<!-- test: (?:(fast)|(?P<error>error)|skip \((?P<skip>[^)]+)\)|with (?P<args>.+?)|files from (?P<files>.+?)) -->")
FILE = re.compile(r"^# ([\w./-]+\.(?:py|ya?ml|jsonl?|txt))\b")
OPERATOR = re.compile(r"\s(\|\||&&|\||;|>|2>)\s")


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    code: str
    fast: bool = False
    error: bool = False  # its cl-adapters commands show a mistake: they must not compose
    skip: str | None = None
    args: str = ""
    files: list[Path] = field(default_factory=list)

    @property
    def file(self) -> str | None:
        """The path a file block is written to (its first comment lines name it), else None."""
        for line in self.code.splitlines()[:2]:
            if found := FILE.match(line):
                return found.group(1)
        return None

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    lines, found = page.read_text().splitlines(), []
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```(\S*)", lines[i])
        if not fence:
            i += 1
            continue
        assert not fence.group(1), f"{page}:{i + 1}: an indented code fence (the snippet tests collect fences at column 0)"
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        block = Block(page, i + 1, fence.group(2), "\n".join(lines[i + 1:end]) + "\n")
        k = i - 1
        while k >= 0 and (mark := MARK.fullmatch(lines[k].strip())):
            block.fast |= bool(mark.group(1))
            block.error |= bool(mark.group("error"))
            block.skip = mark.group("skip") or block.skip
            block.args = mark.group("args") or block.args
            block.files += [ROOT / p for p in (mark.group("files") or "").split()]
            k -= 1
        found.append(block)
        i = end + 1
    return found


ALL = [b for page in PAGES for b in blocks(page)]


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def commands(block: Block) -> list[str]:
    """A bash block's command lines (continuations joined, comments and blank lines dropped)."""
    joined = block.code.replace("\\\n", " ")
    return [line for line in (conf_reference.split_comment(raw)[0] for raw in joined.splitlines()) if line]


def with_args(line: str, args: str) -> str:
    """``args`` appended to a ``cl-adapters`` command, before any shell operator after it."""
    if not args or not line.startswith("cl-adapters "):
        return line
    cut = OPERATOR.search(line)
    return f"{line[:cut.start()]} {args}{line[cut.start():]}" if cut else f"{line} {args}"


def write_files(blocks_: list[Block], folder: Path) -> None:
    for block in blocks_:
        if block.file:
            path = folder / block.file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.code)


def files_for(block: Block) -> list[Block]:
    return [b for page in block.files for b in blocks(page) if b.file]


def page_files(page: Path) -> list[Block]:
    """The files a page's snippets use: the pages its markers name first, then its own."""
    mine = blocks(page)
    return [f for b in mine for f in files_for(b)] + [b for b in mine if b.file]


def environment() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def execute(block: Block, folder: Path) -> None:
    """Run one block in ``folder`` as a user would: a bash script, or a Python file."""
    if block.lang == "bash":
        script = "set -euo pipefail\n" + "\n".join(with_args(line, block.args) for line in commands(block)) + "\n"
        argv = ["bash", "-c", script]
    else:
        snippet = folder / f"snippet_{block.line}.py"
        snippet.write_text(block.code)
        argv = [sys.executable, snippet.name]
    done = subprocess.run(argv, cwd=folder, env=environment(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{block} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang in ("bash", "python") and not b.file and not b.skip]


# --- one source for each fact ------------------------------------------------------------------------------------


def test_generated_docs_are_current(monkeypatch):
    """A renamed config key, a new metric, a changed command or a re-run suite without `python
    docs/generate.py` fails here. A result's date comes from git: in a shallow clone (no history to read it
    from) every date is compared as "a date", the rest exactly."""
    shallow = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--is-shallow-repository"], capture_output=True, text=True)
    if shallow.stdout.strip() == "false":
        assert generate.stale() == [], "stale generated docs: run python docs/generate.py"
        return
    monkeypatch.setattr(generate, "committed", lambda path: "2000-01-01")
    day = re.compile(r"\d{4}-\d{2}-\d{2}")
    fresh = {path: day.sub("<date>", text) for path, text in generate.outputs().items()}
    stale = [path for path, text in fresh.items() if not path.exists() or day.sub("<date>", path.read_text()) != text]
    assert stale == [], "stale generated docs: run python docs/generate.py"


def test_a_renamed_key_makes_the_config_reference_stale(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    for path in Path(CONFIG_DIR).rglob("*.yaml"):
        target = conf / path.relative_to(CONFIG_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    before = generate.config_page()
    pfeiffer = conf / "adapter" / "pfeiffer.yaml"
    pfeiffer.write_text(pfeiffer.read_text().replace("\nr: 64", "\nrank: 64"))
    monkeypatch.setattr(conf_reference, "CONF", conf)
    after = generate.config_page()
    assert after != before and "`adapter.rank`" in after and "`adapter.rank`" not in before


def test_every_config_key_has_a_comment_or_field_help():
    assert conf_reference.undocumented() == []


def test_a_key_without_a_comment_is_reported(tmp_path, monkeypatch):
    (tmp_path / "stream").mkdir()
    (tmp_path / "config.yaml").write_text("seed: 0  # the seed\n")
    (tmp_path / "stream" / "mine.yaml").write_text("# Mine.\n_target_: my.stream\nn_tasks: 3\nseed: ${seed}\n")
    monkeypatch.setattr(conf_reference, "CONF", tmp_path)
    assert [m.split(": ", 1)[1] for m in conf_reference.undocumented()] == ["stream.n_tasks"]


SELECTORS = {"strategy": "strategy={}", "router": "router={}", "adapter": "adapter={}", "plugins": "[{}]",
             "stream": "stream={}", "model": "model={}", "fusion": "fusion={}", "logger": "logger={}"}


@pytest.mark.parametrize("group", sorted(SELECTORS))
def test_every_option_is_described_and_named_on_a_page(group):
    text = "\n".join(p.read_text() for p in PAGES)
    options = [o for o in conf_reference.options() if o.group == group]
    assert options
    assert [o.name for o in options if not o.header.strip()] == [], f"{group} options without a leading comment"
    selector = SELECTORS[group]
    assert [o.name for o in options if selector.format(o.name) not in text] == [], f"{group} options no page names"


def test_every_metric_a_run_reports_has_a_definition():
    from cl_adapters.metrics import DEFINITIONS, summarize
    from cl_adapters.outputs import report
    from cl_adapters.runs.run import COMPOSITIONS

    R = [[0.9, 0.1], [0.8, 0.9]]
    reported = set(summarize(R, sizes=[5, 5], b=[0.5, 0.5], S=[0.9, 0.9], J=[0.9, 0.9], P=[0.5, 0.6], P0=[0.5, 0.5],
                             R_til=R, Q=R)) | set(report.COLUMNS.values())
    reported |= {f"acc_{name}" for name in COMPOSITIONS}
    assert sorted(reported - set(DEFINITIONS)) == []


def test_every_generated_fragment_is_included_in_a_page():
    text = "\n".join(p.read_text() for p in PAGES)
    fragments = [p for p in generate.outputs() if generate.GENERATED in p.parents]
    assert fragments
    assert [str(p.relative_to(ROOT)) for p in fragments if f'--8<-- "{p.relative_to(ROOT)}"' not in text] == []


@pytest.mark.slow
def test_every_results_json_field_is_documented(make_cfg, tmp_path):
    from cl_adapters.runs.run import run

    results = run(make_cfg("scenario=class_il", "router=learned", "strategy=adapter_fusion", "fusion=light",
                           "strategy.epochs=1", "compositions=[average]", "stream.train_per_task=40"), tmp_path / "run")
    page = (ROOT / "docs" / "reference" / "results-json.md").read_text()
    assert [k for k in results if f"`{k}`" not in page] == []
    assert [k for k in results["run"] if f"`{k}`" not in page] == []


# --- the snippets ----------------------------------------------------------------------------------------------


def test_every_block_is_a_known_language_and_marked_sensibly():
    assert ALL
    for block in ALL:
        assert block.lang in LANGUAGES, f"{block}: ```{block.lang}: use one of {sorted(LANGUAGES)}"
        assert not (block.skip and block.fast), f"{block}: fast and skip"
        assert not block.args or any(line.startswith("cl-adapters ") for line in commands(block)), \
            f"{block}: 'with' marks a block without a cl-adapters command"
        assert all(p.exists() for p in block.files), f"{block}: files from a page that does not exist"
        if block.lang == "text":
            assert not block.fast and not block.args, f"{block}: a text block is never run"


def test_a_skip_without_a_reason_is_not_a_marker():
    assert MARK.fullmatch("<!-- test: skip () -->") is None
    assert MARK.fullmatch("<!-- test: skip (needs a GPU) -->").group("skip") == "needs a GPU"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_snippets_compile_and_their_commands_compose(page, tmp_path, monkeypatch):
    """Fast: every Python block compiles, every YAML file parses, every script a command names exists,
    and every cl-adapters command composes (a renamed option or key on a page fails here)."""
    mine = blocks(page)
    write_files(page_files(page), tmp_path)
    monkeypatch.chdir(tmp_path)  # ./conf: the page's own configs
    for block in mine:
        if block.lang == "python":
            compile(block.code, str(block), "exec")
        elif block.lang == "yaml":
            yaml.safe_load(block.code)
        elif block.lang == "bash":
            for line in commands(block):
                words = shlex.split(line)
                if words[:1] == ["python"] and words[1].endswith(".py"):
                    assert (ROOT / words[1]).exists(), f"{block}: no {words[1]}"
                if words[:1] == ["cl-adapters"]:
                    for overrides in _compositions(words[1:]):
                        _compose(overrides, block)


def _compositions(words: list[str]) -> list[list[str]]:
    """The override lists a command's sweep stands for: each option of a swept group, the others at their first."""
    args, skip = [], False
    for word in words:
        if word in ("||", "&&", "|", ";") or word.startswith((">", "2>")):
            break  # the rest is another command's
        if skip or word in ("-m", "--multirun"):
            skip = False
            continue
        skip = word in ("--cfg", "-c")
        if not skip:
            args.append(word)
    parsed = OverridesParser.create().parse_overrides(args)
    firsts = [f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override()
              else o.input_line for o in parsed]
    out = [firsts]
    for i, o in enumerate(parsed):  # other values of a swept group or top-level key (seeds, learning rates: no)
        if o.is_sweep_override() and "." not in o.get_key_element() and o.get_key_element() != "seed":
            out += [firsts[:i] + [f"{o.get_key_element()}={v}"] + firsts[i + 1:] for v in list(o.sweep_string_iterator())[1:]]
    return out


def _compose(overrides: list[str], block: Block) -> None:
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            compose("config", overrides=overrides, return_hydra_config=True)
    except Exception as e:  # noqa: BLE001 (any composition error is the page's)
        if not block.error:
            raise AssertionError(f"{block}: cl-adapters {' '.join(overrides)} does not compose: {e}") from None
    else:
        assert not block.error, f"{block}: cl-adapters {' '.join(overrides)} composes, but the page shows it as a mistake"


FAST = sorted({b.page for b in ALL if b.fast})


@pytest.mark.parametrize("page", FAST, ids=page_id)
def test_fast_snippets_run(page, tmp_path, monkeypatch):
    """The blocks marked fast, in-process (Python) in the page's own folder."""
    mine = blocks(page)
    write_files(page_files(page), tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for block in (b for b in mine if b.fast):
        if block.lang == "python":
            exec(compile(block.code, str(block), "exec"), {"__name__": "__main__"})
        else:
            execute(block, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if runnable(p)], ids=page_id)
def test_snippets_run(page, tmp_path):
    """Every block of the page that is not skipped, in order, in one fresh folder, as a user would run it."""
    write_files(page_files(page), tmp_path)
    for block in runnable(page):
        execute(block, tmp_path)
