"""An in-memory stream's datasets as tensor columns: every sample's inputs, labels and task labels, in the
dataset's order, as ``dataset[i]`` gives them, read from the plain tensors beneath an Avalanche dataset
(the streams of ``task_stream``: no transform, ``TensorDataset`` leaves). ``None`` for any other dataset:
its samples are read one by one. The training loop's batches (``strategies/batches.py``) and the fusion
probe's samples (``models/fusion_choice.py``) are gathered from these columns.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from cl_adapters import avalanche_compat as compat

TASK_LABELS = "targets_task_labels"


Column = tuple[torch.Tensor, "torch.Tensor | None"]  # a tensor, and each sample's row in it (None: in order)


def tensor_columns(dataset) -> tuple[Column, Column, Column] | None:
    """Inputs, labels and task labels of every sample of an Avalanche dataset, in its order, as
    ``dataset[i]`` gives them; ``None`` where that is not plain tensors (then ``dataset[i]`` it is)."""
    flat = compat.flat_data(dataset)
    in_getitem = [name for name, attribute in compat.data_attributes(dataset).items() if attribute.use_in_getitem]
    if flat is None or in_getitem != [TASK_LABELS] or _transforms(flat):
        return None
    leaves = compat.leaves(flat)
    if not all(type(leaf) is TensorDataset and len(leaf.tensors) == 2 for leaf in leaves):
        return None
    index = _index(flat)
    x, y = (_column([leaf.tensors[k] for leaf in leaves], index) for k in (0, 1))
    task_flat = getattr(dataset, TASK_LABELS).data
    if not all(isinstance(leaf, (list, tuple)) for leaf in compat.leaves(task_flat)):
        return None
    t = _column([torch.as_tensor(leaf, dtype=torch.long) for leaf in compat.leaves(task_flat)], _index(task_flat))
    return x, y, t


def tensor_rows(dataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``tensor_columns`` as three tensors, row i the dataset's sample i."""
    columns = tensor_columns(dataset)
    return None if columns is None else tuple(materialized(c) for c in columns)


def tensor_samples(dataset, indices: list[int]) -> list[torch.Tensor] | None:
    """Samples ``indices`` of ``dataset`` (inputs, labels, task labels), each column gathered at once; ``None``
    where the dataset is not plain tensors."""
    columns = tensor_columns(dataset)
    return None if columns is None else Rows(columns)[indices]


def _transforms(flat) -> bool:
    """Whether the dataset transforms what it returns (its active group, or a frozen one)."""
    groups = [g for g in compat.transform_groups(flat) if g is not None]
    return any(g.transform_groups.get(g.current_group) is not None for g in groups)


def _index(flat) -> np.ndarray | None:
    """Each sample's row in the concatenation of the flat data's leaves (``None``: the rows in order)."""
    index = compat.indices(flat)
    if index is None:
        return None
    return np.fromiter(index, dtype=np.int64, count=len(flat))


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


def materialized(column: Column) -> torch.Tensor:
    """A column's rows in the dataset's order."""
    tensor, index = column
    return tensor if index is None else tensor[index]


class Rows:
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
