"""Malformed configs and streams, table-driven: each stops the run with one line naming the culprit, and
nothing is left marked complete."""

import json

import pytest
import torch

from cl_adapters.errors import UserError
from cl_adapters.runs.run import run
from cl_adapters.streams import task_stream

BAD_STREAM = ["stream._target_=test_bad_input.bad_stream"]


def bad_stream(kind: str, seed: int = 0, **_):
    """Two tasks of 2 classes on 4x4 inputs, with one defect."""
    def task(n=20, k=2):
        return torch.rand(n, 1, 4, 4), torch.arange(n) % k

    train, test, n_classes = [task(), task()], [task(), task()], [2, 2]
    if kind == "nan_inputs":
        train[1][0][3] = float("nan")
    elif kind == "labels":
        train[1] = (train[1][0], train[1][1] + 3)
    elif kind == "empty":
        train[1] = (torch.zeros(0, 1, 4, 4), torch.zeros(0, dtype=torch.long))
    elif kind == "classes":
        n_classes = [2, 2, 2]
    elif kind == "crash":
        raise RuntimeError("boom")
    return task_stream(train, test, n_classes=n_classes, seed=seed)


@pytest.mark.parametrize(
    "overrides,culprit",
    [
        (["strategy.epochs=abc"], "strategy.epochs must be a positive integer, got 'abc'"),
        (["strategy.batch_size=0"], "strategy.batch_size must be a positive integer, got 0"),
        (["strategy.protocol=nope"], "strategy.protocol must be one of"),
        (["adapter.r=-4"], "adapter.r must be a positive integer, got -4"),
        (["strategy.optimizer.lr=-1"], "strategy.optimizer: Invalid learning rate: -1"),
        (["stream.n_tasks=0"], "stream.n_tasks=0 must divide the 10 classes evenly"),
        (["stream.train_per_task=0"], "per-task subsample sizes must be positive, got 0"),
        (["stream.class_order=[0,0,1,2]"], "stream.class_order must list distinct classes"),
        (["eval_stream=valid"], "eval_stream='valid' is not a stream of this scenario"),
        ([*BAD_STREAM, "+stream.kind=nan_inputs"], "task 1 train inputs contain NaN"),
        ([*BAD_STREAM, "+stream.kind=labels"], "task 1 train labels go up to 4, outside the task's 2 classes"),
        ([*BAD_STREAM, "+stream.kind=empty"], "task 1 train is empty"),
        ([*BAD_STREAM, "+stream.kind=classes"], "n_classes lists 3 tasks, the stream has 2"),
        (["seed=abc"], "seed must be an integer in [0, 2**32 - 1], got 'abc'"),
        (["seed=100000000000000000000"], "seed must be an integer in [0, 2**32 - 1], got 100000000000000000000"),
        (["seed=-1"], "seed must be an integer in [0, 2**32 - 1], got -1"),
        (["~seed"], "seed is missing from the config (removed by ~seed?)"),
        (["~stream"], "stream is missing from the config (removed by ~stream?)"),
        (["~device"], "strategy.device cannot be resolved: Interpolation key 'device' not found"),
        (["device=null"], "device must be cpu, cuda, cuda:<index>, mps or auto, got None"),
        (["device=tpu"], "device must be cpu, cuda, cuda:<index>, mps or auto, got 'tpu'"),
        (["device=cuda:99"], "device=cuda:99: this machine has "),
        (["model.dropout=-0.1"], "model.dropout must be in [0, 1), got -0.1"),
        (["model.dropout=1.0"], "model.dropout must be in [0, 1), got 1.0"),
        (["model.dropout=true"], "model.dropout must be in [0, 1), got True"),
        (["model=patch_transformer", "model.dropout=abc"], "model.dropout must be in [0, 1), got 'abc'"),
        (["scenario=class_il", "router=prototype", "router.shrinkage=abc"], "router.shrinkage must be in [0, 1], got 'abc'"),
        (["scenario=class_il", "router=learned", "router.C=abc"], "router.C must be positive, got 'abc'"),
        (["router=prototype"], "router=prototype does nothing with scenario=task_il, where every test sample comes with"),
        (["scenario=class_il", "router=entropy", "strategy=full_ft"],
         "router=entropy does nothing with this strategy: it has no per-task adapters to route between"),
        (["scenario=domain_il", "router=oracle", "strategy=lora"], "router=oracle does nothing with this strategy"),
        (["fusion.top_k=-5"], "fusion.top_k must be a positive integer or null, got -5"),  # strategy=adapter: no fusion
        (["checkpoint=maybe"], "checkpoint must be true or false, got 'maybe'"),
        (["resume=maybe"], "resume must be true or false, got 'maybe'"),
        (["strategy.optimizer.lr=fast"], "strategy.optimizer.lr='fast' is not a number"),
        (["stream.class_order=[]"], "stream.class_order lists no class"),
        (["model=patch_transformer", "model.dim=0"], "model.dim must be a positive integer, got 0"),
        (["model=hf_encoder"], "model: HFEncoder takes token ids inputs, this stream gives float inputs of shape (1, 8, 8)"),
        (["stream=sentiment_domains", "stream.train_per_task=20", "stream.test_per_task=10", "stream.cache_dir=null"],
         "model: MLP takes float inputs, this stream gives token ids inputs of shape (128,)"),
        (["stream=sentiment_domains", "model=hf_encoder", "model.name_or_path=/nope"],
         "stream.tokenizer (the encoder's, model.name_or_path): no such folder /nope"),
        (["strategy=full_ft", "plugins=[replay]", "plugins.replay.mem_size=-5"],
         "plugins.replay.mem_size must be a positive integer, got -5"),
        (["strategy=full_ft", "plugins=[ewc]", "plugins.ewc.ewc_lambda=-1"], "plugins.ewc.ewc_lambda must be a number >= 0, got -1"),
        (["strategy=full_ft", "plugins=[lwf]", "plugins.lwf.temperature=0"], "plugins.lwf.temperature must be a positive number, got 0"),
        (["strategy=full_ft", "plugins=[si]", "plugins.si.si_lambda=-1"], "plugins.si.si_lambda must be a number >= 0"),
        (["strategy=full_ft", "plugins=[ewc_online]", "plugins.ewc_online.decay_factor=2"],
         "plugins.ewc_online.decay_factor must be a number in [0, 1], got 2"),
    ],
)
def test_malformed_input_is_one_line_naming_the_culprit(make_cfg, tmp_path, overrides, culprit):
    with pytest.raises(UserError) as error:
        run(make_cfg("strategy.epochs=1", *overrides), tmp_path)
    assert culprit in str(error.value) and "\n" not in str(error.value)
    run_info = json.loads((tmp_path / "results.json").read_text())["run"]  # every failure is recorded
    assert run_info["status"] == "failed" and run_info["error"] == str(error.value)


@pytest.mark.parametrize("device,gpus,culprit", [
    ("cuda", 0, "device=cuda: this machine has no cuda device"),
    ("cuda:7", 2, "device=cuda:7: this machine has only cuda:0 to cuda:1"),
    ("mps", 0, "device=mps: this machine has no mps device"),
])
def test_a_device_this_machine_lacks_is_one_line(make_cfg, tmp_path, monkeypatch, device, gpus, culprit):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError) as error:
        run(make_cfg("strategy.epochs=1", f"device={device}"), tmp_path)
    assert str(error.value).startswith(culprit) and "\n" not in str(error.value)
