"""Serving: the Predictor keeps the base once and at most ``capacity`` task adapters (LRU), and answers
as the whole reloaded run does; cl-adapters-predict writes the same predictions from JSON lines."""

import json

import pytest
import torch

from cl_adapters.errors import UserError
from cl_adapters.runs.inference import export, load_run, predict
from cl_adapters.runs.predictor import Predictor, main, read_inputs
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
    path.write_text('{"text": "a fine film", "task": 0}\n{"text": "dull", "task": 1}\n')
    ids, tasks = read_inputs(path, {"model": {"name_or_path": None}, "stream": {"max_length": 16}})
    assert tasks == [0, 1] and torch.equal(ids, tokenize(["a fine film", "dull"], None, 16))
