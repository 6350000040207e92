"""Serving: the Predictor keeps the base once and at most ``capacity`` task adapters (LRU), and answers
as the whole reloaded run does; cl-adapters-predict writes the same predictions from JSON lines, and refuses
a bad input line, argument or output path in one line (exit 2), losing no earlier output."""

import errno
import json
import re
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cl_adapters.errors import UserError
from cl_adapters.runs.inference import export, load_run, predict
from cl_adapters.runs.predictor import MAX_LINE, Predictor, main, read_inputs
from cl_adapters.runs.run import run


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A per-task adapter run on split_digits (5 tasks, one epoch) and its cl-adapters export."""
    from hydra import compose, initialize_config_dir

    from cl_adapters import CONFIG_DIR

    out = tmp_path_factory.mktemp("run")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["logger=console", f"references.dir={out}/refs", "strategy.epochs=1",
                                           "probe_samples=0"])
    run(cfg, out / "run")
    return out / "run", export(out / "run", out / "export")


def samples_of(tasks, n=5):
    from cl_adapters.streams import split_digits

    stream = split_digits(n_tasks=5, seed=0).test_stream
    samples = [stream[t].dataset[i] for t in tasks for i in range(n)]
    return torch.stack([s[0] for s in samples]), torch.tensor([s[2] for s in samples])


def test_only_the_most_recently_used_adapters_stay_resident(served):
    run_dir, exported = served
    whole = load_run(run_dir)
    predictor = Predictor(exported, capacity=2)
    assert predictor.tasks == [0, 1, 2, 3, 4] and predictor.model.adapters.keys() == []
    for tasks, resident in (([0, 1], [0, 1]), ([2], [1, 2]), ([1], [2, 1]), ([3, 0], [0, 3])):
        x, t = samples_of(tasks)
        assert torch.equal(predictor.predict(x, t), predict(whole, x, t))  # mixed batches: each its own adapter
        assert list(predictor.resident) == resident and sorted(predictor.model.adapters.keys()) == [str(k) for k in sorted(resident)]
    x, t = samples_of([0, 1, 2])
    with pytest.raises(UserError, match="a batch of 3 tasks needs capacity >= 3"):
        predictor.predict(x, t)
    with pytest.raises(UserError, match=r"task\(s\) \[7\] are not in"):
        predictor.predict(x[:1], 7)


def test_a_tampered_task_file_is_refused_when_it_is_loaded(served, tmp_path):
    import shutil

    _, exported = served
    copy = shutil.copytree(exported, tmp_path / "export")
    path = copy / "task-2.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    predictor = Predictor(copy, capacity=2)
    x, t = samples_of([1])
    predictor.predict(x, t)
    with pytest.raises(UserError, match="task-2.safetensors: its contents do not match its digest"):
        predictor.predict(*samples_of([2]))
    (copy / "config.json").write_text("{")
    with pytest.raises(UserError, match="config.json: not a cl-adapters export's run config"):
        Predictor(copy)


def test_the_command_writes_what_predict_gives(served, tmp_path, capsys):
    run_dir, exported = served
    x, t = samples_of([0, 3, 1])
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"x": xi.tolist(), "task": int(ti)}) + "\n" for xi, ti in zip(x, t)))
    expected = predict(load_run(run_dir), x, t).tolist()
    for source in (run_dir, exported):  # a run folder is exported on the way
        assert main([str(source), str(inputs), "--out", str(tmp_path / "out.jsonl"), "--capacity", "2", "--batch-size", "4"]) == 0
        lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert [r["prediction"] for r in lines] == expected and [r["task"] for r in lines] == t.tolist()
    inputs.write_text(json.dumps({"x": x[0].tolist(), "task": 0}) + "\n" + json.dumps({"x": x[1].tolist()}) + "\n")
    assert main([str(exported), str(inputs)]) == 2
    assert '"task" is on 1 of 2 lines' in capsys.readouterr().err


def test_text_inputs_are_tokenised_as_the_stream_was(tmp_path):
    from cl_adapters.streams.text import tokenize

    path = tmp_path / "texts.jsonl"
    long = "a fine film " * 20_000  # 240 KB: cut to max_length tokens
    rows = [{"text": "a fine film", "task": 0}, None, {"text": "dull", "task": 1}, {"text": long, "task": 1}]
    path.write_text("".join("\n" if r is None else json.dumps(r) + "\n" for r in rows))  # line 2 blank
    config = {"model": {"name_or_path": None}, "stream": {"max_length": 16}}
    ids, tasks, lines = read_inputs(path, config, [16], text=True)
    assert tasks == [0, 1, 1] and lines == [1, 3, 4] and torch.equal(ids, tokenize(["a fine film", "dull", long], None, 16))


def one_error(capsys) -> str:
    """The one line a refusal writes (after any note of the export made on the way), nothing on stdout."""
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert out == "" and len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    return errors[0]


def sample_line(task=0, **fields) -> str:
    """A valid line for the split_digits runs with ``task`` (``...``: none) and ``fields``."""
    return json.dumps({"x": torch.rand(1, 8, 8).tolist(), **({} if task is ... else {"task": task}), **fields})


BAD_LINES = [  # line 2 of an inputs file to the split_digits export (x of shape (1, 8, 8), tasks 0..4)
    ('{"x": 3, "task": 0}', r'"x" must be nested lists of finite numbers, shape \[1, 8, 8\]: x must be a list of 1, got 3'),
    (json.dumps({"x": [[[0.5] * 8] * 7], "task": 0}), r"x\[0\] must be a list of 8, got 7 items"),
    (json.dumps({"x": [[[0.5] * 8] * 7 + [[0.5] * 7 + ["0.5"]]], "task": 0}), r"x\[0\]\[7\]\[7\] is '0.5', not a number"),
    (json.dumps({"x": [[[float("nan")] * 8] * 8], "task": 0}), r"x\[0\]\[0\]\[0\] is nan, not a finite float32"),
    (json.dumps({"x": [[[0.5] * 8] * 7 + [[0.5] * 7 + [-float("inf")]]], "task": 0}), r"x\[0\]\[7\]\[7\] is -inf, not a"),
    (json.dumps({"x": [[[1e308] * 8] * 8], "task": 0}), r"x\[0\]\[0\]\[0\] is 1e\+308, not a finite float32"),
    (json.dumps({"x": [[[True] * 8] * 8], "task": 0}), r"x\[0\]\[0\]\[0\] is True, not a number"),
    ('{"text": "a fine film", "task": 0}', r'"text": this run\'s model takes "x" \(nested lists of finite numbers'),
    (sample_line(text=None), r'"text": this run\'s model takes "x"'),
    (sample_line(taks=1), r"unknown field 'taks' \(a line holds \"x\" and maybe \"task\"\)"),
    ('{"task": 0}', r'no "x" \(nested lists of finite numbers, shape \[1, 8, 8\]\)'),
    ("[1, 2]", r'must be a JSON object \{"x": \.\.\., "task": \.\.\.\}, got \[1, 2\]'),
    ('{"x": [', r"not valid JSON \(Expecting value, column 8\)"),
    ("[" * 100_000, r"not valid JSON \(RecursionError\)"),
    *((sample_line(task), rf'"task" must be a task index \(an integer >= 0\), got {re.escape(shown)}')
      for task, shown in (("abc", "'abc'"), (None, "None"), ([0], "[0]"), (1e30, "1e+30"), (1.7, "1.7"), (True, "True"),
                          (-1, "-1"))),
    (sample_line(7), r'"task" 7 is not one of the tasks of .*export \(\[0, 1, 2, 3, 4\]\)'),
    (sample_line(10**30), r'"task" 1000000000000000000000000000000 is not one of the tasks'),
    (sample_line(text="a" * MAX_LINE), rf"longer than {MAX_LINE} bytes"),
]


@pytest.mark.parametrize("line, message", BAD_LINES, ids=range(len(BAD_LINES)))
def test_a_bad_input_line_is_one_line_naming_it(served, tmp_path, capsys, line, message):
    _, exported = served
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_bytes(f"{sample_line()}\n{line}\n".encode("utf-8", "surrogatepass"))
    assert main([str(exported), str(inputs)]) == 2
    assert re.fullmatch(rf"error: {re.escape(str(inputs))}, line 2: (.*: )?{message}.*", one_error(capsys))


def test_bad_arguments_and_unlabelled_inputs_to_a_task_il_run_are_one_line(served, tmp_path, capsys):
    _, exported = served
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(f"{sample_line()}\n")
    for flag in ("--batch-size", "--capacity"):
        for value in ("0", "-1", "abc"):
            assert main([str(exported), str(inputs), flag, value]) == 2
            assert one_error(capsys) == (f"error: argument {flag}: must be a positive integer, got {value!r} "
                                         "(see cl-adapters-predict --help)")
    inputs.write_text(f"\n{sample_line(...)}\n{sample_line(...)}\n")
    assert main([str(exported), str(inputs)]) == 2
    assert one_error(capsys) == (f'error: {inputs}, line 2: no "task", but a task-IL run picks each sample\'s adapter and '
                                 'head by its task label: give "task" on every line')
    for content in (b"", b"\n  \n"):
        inputs.write_bytes(content)
        assert main([str(exported), str(inputs)]) == 2
        assert one_error(capsys) == f'error: {inputs}: no inputs (one JSON object a line: {{"x": ..., "task": ...}})'
    inputs.write_bytes(b'{"x": "\xff"}\n')
    assert main([str(exported), str(inputs)]) == 2
    assert one_error(capsys) == f"error: {inputs}, line 1: not UTF-8 text"


@pytest.fixture(scope="module")
def text_export(tmp_path_factory, tiny_bert):
    """A cl-adapters export of an adapter model on a (tiny) Hugging Face encoder: what a text run serves."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from cl_adapters import CONFIG_DIR
    from cl_adapters.runs.inference import build_model, save_export

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = OmegaConf.to_container(compose("config", overrides=["model=hf_encoder", f"model.name_or_path={tiny_bert}"]),
                                        resolve=True)
    return save_export(build_model(config, [16]), config, [16], tmp_path_factory.mktemp("text") / "export")


@pytest.mark.parametrize("line, message", [
    ('{"x": [101, 2023, 102], "task": 0}', r'"x": this run\'s model takes "text" \(a string\)'),
    ('{"text": null, "task": 0}', r'"text" must be a string: got None'),
    ('{"text": ["a fine film"], "task": 0}', r"\"text\" must be a string: got \['a fine film'\]"),
    ('{"text": "\\ud800", "task": 0}', r'"text" must be a string: it holds a lone surrogate'),
    (json.dumps({"text": "a fine film " * (MAX_LINE // 12), "task": 0}), rf"longer than {MAX_LINE} bytes"),
])
def test_a_text_run_takes_text_only(text_export, tmp_path, capsys, line, message):
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(f'{{"text": "a fine film", "task": 0}}\n{line}\n')
    assert main([str(text_export), str(inputs)]) == 2
    assert re.fullmatch(rf"error: {re.escape(str(inputs))}, line 2: (.*: )?{message}.*", one_error(capsys))


def test_out_is_checked_before_any_model_is_loaded(served, tmp_path, capsys, monkeypatch):
    import os

    from cl_adapters.runs import predictor

    run_dir, exported = served
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(f"{sample_line()}\n")
    (tmp_path / "a file").write_text("")
    (tmp_path / "locked").mkdir()
    writable = os.access
    monkeypatch.setattr(predictor.os, "access", lambda p, mode: Path(p).name != "locked" and writable(p, mode))
    for name in ("export", "build_model"):
        monkeypatch.setattr(predictor, name, lambda *a, **k: pytest.fail("a model was loaded"))
    for out, why in ((tmp_path, "is a directory; give a file path"),
                     (tmp_path / "a file" / "out.jsonl", f"{tmp_path / 'a file'} is not a directory"),
                     (tmp_path / "locked" / "new" / "out.jsonl", f"{tmp_path / 'locked'} is not writable")):
        for source in (run_dir, exported):
            assert main([str(source), str(inputs), "--out", str(out)]) == 2
            assert one_error(capsys) == f"error: --out {out}: {why}"


def test_a_full_disk_keeps_the_earlier_predictions(served, tmp_path, capsys, monkeypatch):
    from cl_adapters import atomic

    _, exported = served
    inputs, out = tmp_path / "inputs.jsonl", tmp_path / "new" / "pred.jsonl"
    inputs.write_text(f"{sample_line()}\n{sample_line(3)}\n")
    assert main([str(exported), str(inputs), "--out", str(out)]) == 0  # a missing folder is made
    before = out.read_bytes()
    assert [json.loads(line)["task"] for line in before.decode().splitlines()] == [0, 3]
    capsys.readouterr()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    inputs.write_text(f"{sample_line(1)}\n" * 3)
    assert main([str(exported), str(inputs), "--out", str(out)]) == 2
    assert one_error(capsys) == f"error: cannot write {out}: No space left on device (what was written before is intact)"
    assert out.read_bytes() == before and [p.name for p in out.parent.iterdir()] == ["pred.jsonl"]


@pytest.fixture(scope="module")
def bits_run(tmp_path_factory):
    """A domain-IL run (9 tasks, a prototype router) of the README's own stream, my_streams.noisy_bits
    (given a scenario), which the allowlist refuses unless --allow names it."""
    import sys

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from cl_adapters import CONFIG_DIR

    out = tmp_path_factory.mktemp("bits")
    (out / "my_streams.py").write_text('''import torch
from cl_adapters.streams import task_stream


def noisy_bits(n_tasks: int = 3, n: int = 200, seed: int = 0, scenario: str = "task_il"):
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for t in range(n_tasks):
        for split in (train, test):
            x = torch.rand(n, 1, 4, 4, generator=g)
            split.append((x, (x.flatten(1)[:, t] > 0.5).long()))
    return task_stream(train, test, n_classes=[2] * n_tasks, seed=seed, scenario=scenario)
''')
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["logger=console", f"references.dir={out}/refs", "strategy.epochs=1",
                                           "probe_samples=0", "scenario=domain_il", "router=prototype"])
    cfg.stream = OmegaConf.create({"_target_": "my_streams.noisy_bits", "n_tasks": 9, "n": 40, "seed": 0,
                                   "scenario": "domain_il"})
    sys.path.insert(0, str(out))
    try:
        run(cfg, out / "run")
    finally:
        sys.path.remove(str(out))
        sys.modules.pop("my_streams", None)
    return out / "run"


def test_allow_serves_a_run_of_your_own_stream_with_every_task_resident(bits_run, tmp_path, capsys):
    x = torch.rand(6, 1, 4, 4)
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"x": xi.tolist()}) + "\n" for xi in x))
    assert main([str(bits_run), str(inputs)]) == 2
    assert one_error(capsys).startswith(f"error: {bits_run}/checkpoint/task-0.safetensors: refusing to load: "
                                        "stream._target_='my_streams.noisy_bits' is not one of cl-adapters' constructors")
    assert main([str(bits_run), str(inputs), "--allow", "other.*", "--allow", "my_streams.*"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = predict(load_run(bits_run, allow=["my_streams.*"]), x).tolist()
    assert [r["prediction"] for r in lines] == expected and {r["task"] for r in lines} == {None}
    assert main([str(bits_run), str(inputs), "--allow", "my_streams.*", "--capacity", "8"]) == 2
    assert one_error(capsys) == (f"error: {bits_run}: inputs without task labels need every task resident (the router "
                                 "may pick any): capacity must be at least its 9 tasks, it is 8")  # not the export's folder


def test_errors_name_the_run_folder_and_any_capacity_serves_labelled_inputs(served, tmp_path, capsys):
    run_dir, exported = served
    x, t = samples_of([4, 0, 2, 0, 4])
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"x": xi.tolist(), "task": int(ti)}) + "\n" for xi, ti in zip(x, t)))
    assert main([str(exported), str(inputs), "--capacity", "1", "--batch-size", "3"]) == 0  # one task a batch
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prediction"] for r in lines] == predict(load_run(run_dir), x, t).tolist()
    assert [r["task"] for r in lines] == t.tolist()
    inputs.write_text(f"{sample_line(9)}\n")
    assert main([str(run_dir), str(inputs)]) == 2
    assert one_error(capsys) == f'error: {inputs}, line 1: "task" 9 is not one of the tasks of {run_dir} ([0, 1, 2, 3, 4])'


def test_an_oracle_run_without_task_labels_is_one_line(make_cfg, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run(make_cfg("scenario=class_il", "router=oracle", "strategy.epochs=1", "probe_samples=0", "stream.n_tasks=2",
                 "stream.class_order=[0,1,2,3]", "stream.train_per_task=40"), run_dir)
    capsys.readouterr()
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(f"{sample_line(...)}\n")
    assert main([str(run_dir), str(inputs)]) == 2
    assert one_error(capsys) == (f'error: {inputs}, line 1: no "task", but router=oracle routes each sample by its true '
                                 'task label: give "task" on every line')
    with pytest.raises(UserError, match=f"{re.escape(str(tmp_path))}/export: router=oracle routes each sample by its true"):
        Predictor(export(run_dir, tmp_path / "export")).predict(torch.rand(2, 1, 8, 8))


NUMBER = st.floats() | st.integers() | st.sampled_from([1e308, -1e39, 10**40, 2**63, float("nan"), float("inf")])
JSON = st.recursive(st.none() | st.booleans() | NUMBER | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=10)
SAMPLE = st.lists(st.floats(0, 1), min_size=64, max_size=64).map(lambda v: [[v[i : i + 8] for i in range(0, 64, 8)]])
RAGGED = st.recursive(NUMBER, lambda inner: st.lists(inner, max_size=9), max_leaves=70)
VALID = st.builds(lambda x, task: json.dumps({"x": x, "task": task}).encode(), SAMPLE, st.integers(0, 4))
ROW = st.fixed_dictionaries({}, optional={"x": SAMPLE | RAGGED | JSON, "task": st.integers(-1, 6) | JSON, "text": JSON}) | \
    st.dictionaries(st.sampled_from(["x", "task", "text"]) | st.text(max_size=5), SAMPLE | RAGGED | JSON, max_size=4)
MALFORMED = (ROW.map(json.dumps) | JSON.map(json.dumps) | st.sampled_from(["{", "[" * 3000, '{"x": NaN, "task": 0}'])
             ).map(str.encode) | st.binary(max_size=30)
AROUND = st.lists(VALID | st.just(b""), max_size=3)
SPOILT = st.tuples(AROUND, st.lists(MALFORMED, min_size=1, max_size=2), AROUND).map(lambda parts: sum(parts, []))
FILE = st.one_of(st.lists(VALID, min_size=1, max_size=4), SPOILT, SPOILT, SPOILT)  # a quarter of the files valid


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=FILE.map(b"\n".join))
def test_any_inputs_file_gives_predictions_or_one_error_line(served, tmp_path, capsys, content):
    _, exported = served
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_bytes(content)
    capsys.readouterr()
    rc = main([str(exported), str(inputs)])
    out, err = capsys.readouterr()
    if rc == 0:
        rows = [json.loads(line) for line in out.splitlines()]
        assert len(rows) == sum(bool(line.decode("utf-8-sig").strip()) for line in content.split(b"\n")) and err == ""
        assert all(type(r["prediction"]) is int and r["task"] in range(5) for r in rows)
    else:
        assert rc == 2 and out == "" and len(err.splitlines()) == 1 and err.startswith("error: "), err


def test_uint8_image_inputs_are_read_as_the_stream_gave_them(make_cfg, tmp_path, cifar100_root, capsys):
    """A run on a uint8 image stream (CIFAR-100: pixels 0..255, which the backbone scales to 0..1): the command
    reads each line's pixels as uint8, as the stream gave them in training, so its predictions are the run's
    evaluation's; a pixel that is no integer in 0..255 is one line."""
    from cl_adapters.streams import cifar100

    run(make_cfg("stream=cifar100", f"stream.root={cifar100_root}", "stream.increment=50", "scenario=task_il",
                 "model=mlp", "strategy=adapter", "strategy.epochs=1", "probe_samples=0"), tmp_path / "run")
    test = cifar100(str(cifar100_root), increment=50, scenario="task_il").test_stream
    samples = [test[t].dataset[i] for t in (0, 1) for i in range(10)]
    x, t = torch.stack([s[0] for s in samples]), torch.tensor([s[2] for s in samples])
    assert x.dtype == torch.uint8
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"x": xi.tolist(), "task": int(ti)}) + "\n" for xi, ti in zip(x, t)))
    exported = export(tmp_path / "run", tmp_path / "export")
    info = Predictor(exported).export
    assert info["input_dtype"] == "uint8"
    assert torch.equal(read_inputs(inputs, info["config"], info["input_shape"], dtype=info["input_dtype"]).x, x)
    assert main([str(tmp_path / "run"), str(inputs), "--out", str(tmp_path / "out.jsonl")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in lines] == predict(load_run(tmp_path / "run"), x, t).tolist()
    capsys.readouterr()
    for bad, message in ((0.5, "x[0][0][0] is 0.5, not an integer in 0..255"), (256, "x[0][0][0] is 256, not an integer in 0..255")):
        pixels = x[0].tolist()
        pixels[0][0][0] = bad
        inputs.write_text(json.dumps({"x": pixels, "task": 0}) + "\n")
        assert main([str(exported), str(inputs)]) == 2
        assert one_error(capsys) == (f'error: {inputs}, line 1: "x" must be nested lists of integers in 0..255 (uint8 '
                                     f"pixels, as the run's stream gave them), shape [3, 32, 32]: {message}")
