"""Batches sliced from a stream's tensors: the fast data path for in-memory streams.

Avalanche's loaders fetch a batch sample by sample (``dataset[i]`` through its flat-data and attribute
layers) and collate the samples: on a small model that is a third of a training step. Where a dataset is
plain tensors (the streams of ``task_stream``: no transform, ``TensorDataset`` leaves), :class:`TensorBatches`
keeps Avalanche's loader for *which* samples form each batch -- the same sampler, drawing the same random
numbers in the same order, so a run's batches and results are bit-identical -- and gathers each batch
with one index per tensor. Any other dataset (transforms, files read lazily, custom collation) goes
through Avalanche's loader unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from avalanche.benchmarks.utils.data_loader import MultiDatasetDataLoader, MultiDatasetSampler
from torch.utils.data import TensorDataset, default_collate

TASK_LABELS = "targets_task_labels"


Column = tuple[torch.Tensor, "torch.Tensor | None"]  # a tensor, and each sample's row in it (None: in order)


def tensor_columns(dataset) -> tuple[Column, Column, Column] | None:
    """Inputs, labels and task labels of every sample of an Avalanche dataset, in its order, as
    ``dataset[i]`` gives them; ``None`` where that is not plain tensors (then ``dataset[i]`` it is)."""
    flat = getattr(dataset, "_flat_data", None)
    in_getitem = [name for name, attribute in getattr(dataset, "_data_attributes", {}).items() if attribute.use_in_getitem]
    if flat is None or in_getitem != [TASK_LABELS] or _transforms(flat):
        return None
    leaves = flat._datasets
    if not all(type(leaf) is TensorDataset and len(leaf.tensors) == 2 for leaf in leaves):
        return None
    index = _index(flat)
    x, y = (_column([leaf.tensors[k] for leaf in leaves], index) for k in (0, 1))
    task_flat = getattr(dataset, TASK_LABELS).data
    if not all(isinstance(leaf, (list, tuple)) for leaf in task_flat._datasets):
        return None
    t = _column([torch.as_tensor(leaf, dtype=torch.long) for leaf in task_flat._datasets], _index(task_flat))
    return x, y, t


def tensor_rows(dataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``tensor_columns`` as three tensors, row i the dataset's sample i."""
    columns = tensor_columns(dataset)
    return None if columns is None else tuple(_materialized(c) for c in columns)


def tensor_samples(dataset, indices: list[int]) -> list[torch.Tensor] | None:
    """Samples ``indices`` of ``dataset`` (inputs, labels, task labels), each column gathered at once; ``None``
    where the dataset is not plain tensors."""
    columns = tensor_columns(dataset)
    return None if columns is None else _Rows(columns)[indices]


def _transforms(flat) -> bool:
    """Whether the dataset transforms what it returns (its active group, or a frozen one)."""
    groups = [g for g in (flat._transform_groups, flat._frozen_transform_groups) if g is not None]
    return any(g.transform_groups.get(g.current_group) is not None for g in groups)


def _index(flat) -> np.ndarray | None:
    """Each sample's row in the concatenation of the flat data's leaves (``None``: the rows in order)."""
    if flat._indices is None:
        return None
    return np.fromiter(flat._indices, dtype=np.int64, count=len(flat))


def _column(parts: list[torch.Tensor], index: np.ndarray | None) -> Column:
    """Rows ``index`` of the concatenated ``parts``. One part is indexed per batch, not copied whole (a
    loader is made for every task and every evaluation); several are gathered now, copying only those
    rows (a replay buffer indexes a few samples of many earlier tasks: their tensors are never concatenated)."""
    if len(parts) == 1:
        return parts[0], None if index is None else torch.from_numpy(index)
    if index is None:
        return torch.cat(parts), None
    ends = np.cumsum([len(part) for part in parts])
    which = np.searchsorted(ends, index, side="right")
    out = parts[0].new_empty((len(index), *parts[0].shape[1:]))
    for k in np.unique(which):
        rows = np.flatnonzero(which == k)
        out[torch.from_numpy(rows)] = parts[k][torch.from_numpy(index[rows] - (ends[k - 1] if k else 0))]
    return out, None


def _materialized(column: Column) -> torch.Tensor:
    tensor, index = column
    return tensor if index is None else tensor[index]


class _Rows:
    """The stream's columns; a batch of samples in one index per tensor."""

    def __init__(self, columns: tuple[Column, ...]):
        self.columns = columns

    def __getitem__(self, samples: list[int]) -> list[torch.Tensor]:
        i = torch.as_tensor(samples)
        composed = {}  # the batch's rows in each index, once (inputs and labels share their index's memory)

        def rows(index):
            if index is None:
                return i
            if index.data_ptr() not in composed:
                composed[index.data_ptr()] = index.index_select(0, i)
            return composed[index.data_ptr()]

        return [t.index_select(0, rows(index)) for t, index in self.columns]


class TensorBatches:
    """An Avalanche loader whose batches are gathered from the datasets' tensors (module docstring)."""

    def __init__(self, loader: MultiDatasetDataLoader, columns: tuple[Column, ...]):
        self.loader, self.rows = loader, _Rows(columns)
        tasks = _materialized(columns[2]).unique()
        self.task = int(tasks[0]) if len(tasks) == 1 else None  # every batch's task, known on the host

    @classmethod
    def wrap(cls, loader):
        """``loader`` itself where its datasets are not plain tensors or it collates its own way."""
        if not isinstance(loader, MultiDatasetDataLoader) or loader.loader_kwargs.get("num_workers", 0) \
                or loader.loader_kwargs.get("collate_fn") is not default_collate:
            return loader
        columns = [tensor_columns(dataset) for dataset in loader.datasets]
        if any(c is None for c in columns):
            return loader
        if len(columns) == 1:
            return cls(loader, columns[0])
        return cls(loader, tuple((torch.cat([_materialized(c) for c in parts]), None) for parts in zip(*columns)))

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        """The loader's own batch sampler, fresh each epoch as the loader makes it, each batch gathered at
        once (a DataLoader around it costs ~8% of a small model's epoch). The one random number a
        DataLoader draws first (its workers' base seed) is drawn too: the random number stream is the same."""
        torch.empty((), dtype=torch.int64).random_()
        pin = self.loader.loader_kwargs.get("pin_memory", False) and torch.accelerator.is_available()
        for indices in self._batch_sampler():
            batch = self.rows[indices]
            yield [t.pin_memory() for t in batch] if pin else batch

    def _batch_sampler(self):
        """The batch sampler the loader's ``_get_loader`` builds each epoch, without the rest of it: its FFCV
        check walks every leaf dataset (~0.1 s a call, a sixth of a split MNIST epoch) and it builds a DataLoader."""
        loader = self.loader
        if type(loader)._get_loader is not MultiDatasetDataLoader._get_loader:  # a loader of its own kind
            return loader._get_loader().batch_sampler
        samplers = loader._create_samplers(loader.datasets, loader.batch_sizes, loader.distributed_sampling,
                                           loader.loader_kwargs)
        if len(samplers) == 1 and samplers[0] is not None and not loader.never_ending:
            return samplers[0]  # the batches MultiDatasetSampler yields for one dataset, without its numpy round trip
        return MultiDatasetSampler(loader.datasets, samplers, termination_dataset_idx=loader.termination_dataset,
                                   oversample_small_datasets=loader.oversample_small_datasets,
                                   never_ending=loader.never_ending)
