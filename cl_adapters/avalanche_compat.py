"""Avalanche's private API: every private name of Avalanche that cl-adapters reads, writes or overrides,
each named once, here. Checked against avalanche-lib 0.6.0 (``AVALANCHE``).

``tests/test_compat.py`` builds real Avalanche objects and asserts that each name below exists on them,
failing with the name when an Avalanche upgrade moves it; it also checks that no other module of
``cl_adapters`` names them. ``ContinualStrategy`` overrides the training template's private hooks listed
in ``TEMPLATE_HOOKS`` (an override of a hook Avalanche renamed would silently never run: the test fails first).
(``compat.py`` holds the environment shims applied at import; this module imports Avalanche, so it cannot.)
"""

from __future__ import annotations

import torch
from avalanche.benchmarks.utils.data_loader import MultiDatasetDataLoader

AVALANCHE = "0.6.0"  # the avalanche-lib version these names were checked against

# -- datasets: AvalancheDataset (benchmarks/utils/data.py) and its FlatData (benchmarks/utils/flat_data.py) --


def flat_data(dataset):
    """An AvalancheDataset's flat data (its leaf datasets, index and transforms); None for any other dataset."""
    return getattr(dataset, "_flat_data", None)


def data_attributes(dataset) -> dict:
    """An AvalancheDataset's data attributes by name (``targets``, ``targets_task_labels``, ...); {} for others."""
    return getattr(dataset, "_data_attributes", {})


def leaves(flat) -> list:
    """The datasets a FlatData concatenates."""
    return flat._datasets


def indices(flat):
    """Each sample's row in the concatenation of a FlatData's leaves; None: the rows in order."""
    return flat._indices


def transform_groups(flat) -> tuple:
    """A flat data's (active, frozen) TransformGroups; either may be None."""
    return flat._transform_groups, flat._frozen_transform_groups


# -- loaders: MultiDatasetDataLoader (benchmarks/utils/data_loader.py) --


def builds_own_loader(loader) -> bool:
    """Whether ``loader``'s class builds its epoch's DataLoader its own way."""
    return type(loader)._get_loader is not MultiDatasetDataLoader._get_loader


def epoch_loader(loader):
    """The DataLoader ``loader`` builds for an epoch."""
    return loader._get_loader()


def samplers(loader) -> list:
    """The per-dataset samplers ``loader`` builds for an epoch (as its ``_get_loader`` does)."""
    return loader._create_samplers(loader.datasets, loader.batch_sizes, loader.distributed_sampling,
                                   loader.loader_kwargs)


# -- replay storage (training/storage_policy.py) --


def buffer_weights(group) -> torch.Tensor:
    """A ReservoirSamplingBuffer's sorted reservoir weights."""
    return group._buffer_weights


def set_buffer_weights(group, weights: torch.Tensor) -> None:
    group._buffer_weights = weights


def experiences_seen(policy) -> int:
    """How many experiences an ExperienceBalancedBuffer has stored."""
    return policy._num_exps


def set_experiences_seen(policy, count: int) -> None:
    policy._num_exps = count


# -- models: DynamicModule (models/dynamic_modules.py) --


def adaptation_device(module) -> torch.device:
    """The device a DynamicModule puts the parts it grows on."""
    return module._adaptation_device


# -- training: BaseSGDTemplate (training/templates/base_sgd.py) and EvaluationPlugin --


def keep_training(strategy) -> None:
    """Clear the stop a strategy's ``stop_training()`` set (Avalanche clears it only when its next epoch begins)."""
    strategy._stop_training = False


TEMPLATE_HOOKS = (  # the template's private hooks ContinualStrategy overrides
    "_before_training_exp", "_before_eval_exp", "_train_exp", "_after_training_epoch",
    "_before_training_iteration", "_before_forward", "_after_forward", "_before_backward", "_after_backward",
    "_before_update", "_after_update", "_after_training_iteration",
    "_before_eval_iteration", "_before_eval_forward", "_after_eval_forward", "_after_eval_iteration",
)
EVALUATOR_HOOKS = ("_update_metrics_and_loggers",)  # EvaluationPlugin's, overridden by the silent evaluator
