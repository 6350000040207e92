"""Batches sliced from a stream's tensors: the fast data path for in-memory streams.

Avalanche's loaders fetch a batch sample by sample (``dataset[i]`` through its flat-data and attribute
layers) and collate the samples: on a small model that is a third of a training step. Where a dataset is
plain tensors (``streams/columns.py``: the streams of ``task_stream``), :class:`TensorBatches`
keeps Avalanche's loader for *which* samples form each batch -- the same sampler, drawing the same random
numbers in the same order, so a run's batches and results are bit-identical -- and gathers each batch
with one index per tensor. Any other dataset (transforms, files read lazily, custom collation) goes
through Avalanche's loader unchanged.
"""

from __future__ import annotations

import torch
from avalanche.benchmarks.utils.data_loader import MultiDatasetDataLoader, MultiDatasetSampler
from torch.utils.data import default_collate

from cl_adapters import avalanche_compat as compat
from cl_adapters.streams.columns import Column, Rows, materialized, tensor_columns


class TensorBatches:
    """An Avalanche loader whose batches are gathered from the datasets' tensors (module docstring)."""

    def __init__(self, loader: MultiDatasetDataLoader, columns: tuple[Column, ...]):
        self.loader, self.rows = loader, Rows(columns)
        tasks = materialized(columns[2]).unique()
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
        return cls(loader, tuple((torch.cat([materialized(c) for c in parts]), None) for parts in zip(*columns)))

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
        if compat.builds_own_loader(loader):  # a loader of its own kind
            return compat.epoch_loader(loader).batch_sampler
        samplers = compat.samplers(loader)
        if len(samplers) == 1 and samplers[0] is not None and not loader.never_ending:
            return samplers[0]  # the batches MultiDatasetSampler yields for one dataset, without its numpy round trip
        return MultiDatasetSampler(loader.datasets, samplers, termination_dataset_idx=loader.termination_dataset,
                                   oversample_small_datasets=loader.oversample_small_datasets,
                                   never_ending=loader.never_ending)
