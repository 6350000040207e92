"""The fast data path: batches gathered from a stream's tensors are Avalanche's batches, bit for bit."""

import pytest
import torch
from avalanche.benchmarks.utils import DataAttribute, TaskLabels
from avalanche.benchmarks.utils.classification_dataset import TaskAwareSupervisedClassificationDataset
from avalanche.benchmarks.utils.data_loader import SingleDatasetDataLoader, TaskBalancedDataLoader
from avalanche.benchmarks.utils.transform_groups import TransformGroups
from avalanche.benchmarks.utils.utils import concat_datasets
from torch.utils.data import TensorDataset

from cl_adapters.runs.run import run
from cl_adapters.strategies.batches import TensorBatches
from cl_adapters.streams.columns import tensor_rows
from cl_adapters.streams.base import task_dataset


def _pairs(n=50, task=0, offset=0.0):
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(task)) + offset
    return x, torch.arange(n) % 3, task


def _samples(dataset):
    return [dataset[i] for i in range(len(dataset))]


def _assert_rows_are_samples(dataset):
    rows, samples = tensor_rows(dataset), _samples(dataset)
    for k, column in enumerate(rows):
        torch.testing.assert_close(column, torch.stack([torch.as_tensor(s[k]) for s in samples]), rtol=0, atol=0)


def test_rows_follow_subsets_concatenations_and_modes():
    a, b = task_dataset(*_pairs(50, 0)), task_dataset(*_pairs(30, 1, offset=10.0))
    subset = a.train().subset([7, 3, 3, 41, 0])
    for dataset in (a, a.eval(), subset, concat_datasets([subset, b]), concat_datasets([b, a]).subset([0, 35, 79, 2])):
        _assert_rows_are_samples(dataset)
    assert tensor_rows(concat_datasets([subset, b]))[2].tolist() == [0] * 5 + [1] * 30


def test_datasets_that_are_not_plain_tensors_keep_the_sample_by_sample_path():
    x, y, _ = _pairs()
    attributes = [DataAttribute(y.tolist(), "targets"), TaskLabels([0] * len(y))]
    transformed = TaskAwareSupervisedClassificationDataset(
        [TensorDataset(x, y)], data_attributes=attributes, transform_groups=TransformGroups({"train": lambda v: v * 2}))
    assert tensor_rows(transformed) is None and tensor_rows(transformed.eval()) is None

    class Lazy(TensorDataset):  # a user's dataset that computes its samples
        pass

    lazy = TaskAwareSupervisedClassificationDataset([Lazy(x, y)], data_attributes=attributes)
    assert tensor_rows(lazy) is None
    loader = SingleDatasetDataLoader(lazy, batch_size=8)
    assert TensorBatches.wrap(loader) is loader


@pytest.mark.parametrize("make", [
    lambda d: TaskBalancedDataLoader(d, oversample_small_groups=True, batch_size=8, shuffle=True),
    lambda d: SingleDatasetDataLoader(d, batch_size=16),
])
def test_batches_and_random_numbers_equal_avalanches_loader(make):
    data = concat_datasets([task_dataset(*_pairs(50, 0)), task_dataset(*_pairs(23, 1))])  # joint: two tasks, balanced
    loader = make(data)
    fast = TensorBatches.wrap(loader)
    assert isinstance(fast, TensorBatches) and len(fast) == len(loader)
    for epoch in range(2):
        torch.manual_seed(epoch)
        expected, state = list(loader), torch.get_rng_state()
        torch.manual_seed(epoch)
        got = list(fast)
        assert torch.equal(torch.get_rng_state(), state) and len(got) == len(expected)
        for mine, theirs in zip(got, expected):
            assert all(torch.equal(m, t) for m, t in zip(mine, theirs))


@pytest.mark.parametrize("overrides", [("strategy=adapter",), ("strategy=full_ft", "plugins=[replay]"), ("strategy=joint",)])
def test_a_run_gives_the_same_accuracy_matrix_with_either_path(make_cfg, tmp_path, monkeypatch, overrides):
    """Adapters (one task per batch), Replay's loader (tasks mixed) and joint's task-balanced one."""
    cfg = make_cfg("stream=split_digits", "strategy.epochs=2", *overrides)
    wrap, loaders = TensorBatches.wrap.__func__, []
    monkeypatch.setattr(TensorBatches, "wrap", classmethod(lambda cls, loader: loaders.append(wrap(cls, loader)) or loaders[-1]))
    fast = run(cfg, tmp_path / "fast")
    assert loaders and all(isinstance(loader, TensorBatches) for loader in loaders)  # training and evaluation
    monkeypatch.setattr(TensorBatches, "wrap", classmethod(lambda cls, loader: loader))
    slow = run(cfg, tmp_path / "slow")
    assert fast["accuracy_matrix"] == slow["accuracy_matrix"]
    assert fast["costs"][-1]["optimizer_steps"] == slow["costs"][-1]["optimizer_steps"]
