"""Avalanche's private API, used only through ``cl_adapters/avalanche_compat.py``: each private name it reads
exists on real Avalanche objects (a failure names the attribute an upgrade moved), and no other module names one."""

import re
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from avalanche.benchmarks.utils.data_loader import MultiDatasetDataLoader, TaskBalancedDataLoader
from avalanche.models import MultiHeadClassifier
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.storage_policy import ExperienceBalancedBuffer, ReservoirSamplingBuffer
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from cl_adapters import avalanche_compat as compat
from cl_adapters.strategies.continual import ContinualStrategy, _Unmeasured
from cl_adapters.streams.base import task_dataset

PACKAGE = Path(compat.__file__).parent


def _dataset():
    return task_dataset(torch.randn(6, 3), torch.arange(6) % 3, 0)


def _strategy():
    model = nn.Linear(3, 3)
    return SupervisedTemplate(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu")


OWNERS = {  # what has each private name compat reads: a real Avalanche object built here
    "AvalancheDataset": _dataset,
    "FlatData": lambda: _dataset()._flat_data,
    "FlatData of a subset": lambda: _dataset().subset([4, 1])._flat_data,
    "MultiDatasetDataLoader": lambda: TaskBalancedDataLoader(_dataset(), batch_size=2),
    "ReservoirSamplingBuffer": lambda: ReservoirSamplingBuffer(4),
    "ExperienceBalancedBuffer": lambda: ExperienceBalancedBuffer(8),
    "DynamicModule": lambda: MultiHeadClassifier(3),
    "SupervisedTemplate": _strategy,
}
PRIVATE = [  # (owner, name): every private Avalanche name avalanche_compat.py reads or writes
    ("AvalancheDataset", "_flat_data"), ("AvalancheDataset", "_data_attributes"),
    ("FlatData", "_datasets"), ("FlatData", "_indices"), ("FlatData", "_transform_groups"),
    ("FlatData", "_frozen_transform_groups"), ("FlatData of a subset", "_indices"),
    ("MultiDatasetDataLoader", "_get_loader"), ("MultiDatasetDataLoader", "_create_samplers"),
    ("ReservoirSamplingBuffer", "_buffer_weights"), ("ExperienceBalancedBuffer", "_num_exps"),
    ("DynamicModule", "_adaptation_device"), ("SupervisedTemplate", "_stop_training"),
]
HOOKS = [(SupervisedTemplate, ContinualStrategy, compat.TEMPLATE_HOOKS),
         (EvaluationPlugin, _Unmeasured, compat.EVALUATOR_HOOKS)]


@pytest.mark.parametrize(("owner", "name"), PRIVATE, ids=[f"{o}.{n}" for o, n in PRIVATE])
def test_private_name_exists(owner, name):
    obj = OWNERS[owner]()
    assert hasattr(obj, name), (
        f"avalanche-lib {version('avalanche-lib')}: {owner} ({type(obj).__name__}) has no {name!r}; "
        f"cl_adapters/avalanche_compat.py was checked against {compat.AVALANCHE}: update it")


@pytest.mark.parametrize(("base", "ours", "hooks"), HOOKS, ids=[b.__name__ for b, _, _ in HOOKS])
def test_overridden_hooks_exist(base, ours, hooks):
    """An override of a hook Avalanche renamed would never be called: each one we override still exists,
    and every private method we define that Avalanche also has is listed (so it is checked here)."""
    missing = [h for h in hooks if not callable(getattr(base, h, None))]
    assert not missing, f"avalanche-lib {version('avalanche-lib')}: {base.__name__} has no {missing}"
    assert all(h in vars(ours) for h in hooks), f"{ours.__name__} no longer overrides {[h for h in hooks if h not in vars(ours)]}"
    unlisted = [n for n, f in vars(ours).items() if n.startswith("_") and not n.startswith("__") and callable(f)
                and hasattr(base, n) and n not in hooks]
    assert not unlisted, f"{ours.__name__} overrides {base.__name__}'s private {unlisted}: list them in avalanche_compat.py"


def test_every_private_name_the_module_reads_is_checked():
    source = (PACKAGE / "avalanche_compat.py").read_text()
    read = set(re.findall(r"\._([a-z]\w*)\b", source)) | set(re.findall(r"\"_([a-z]\w*)\"", source))
    read = {"_" + n for n in read} - set(compat.TEMPLATE_HOOKS) - set(compat.EVALUATOR_HOOKS)
    assert read == {name for _, name in PRIVATE}


def test_no_other_module_names_them():
    names = {name for _, name in PRIVATE}
    pattern = re.compile(r"\.(%s)\b|[\"'](%s)[\"']" % ("|".join(names), "|".join(names)))
    found = [f"{path.relative_to(PACKAGE.parent)}:{i}: {line.strip()}"
             for path in sorted(PACKAGE.rglob("*.py")) if path.name != "avalanche_compat.py"
             for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, "Avalanche's private API outside cl_adapters/avalanche_compat.py:\n" + "\n".join(found)


def test_accessors_read_real_objects():
    dataset, plain = _dataset(), torch.utils.data.TensorDataset(torch.zeros(2, 1))
    flat = compat.flat_data(dataset)
    assert compat.flat_data(plain) is None and compat.data_attributes(plain) == {}
    assert set(compat.data_attributes(dataset)) >= {"targets", "targets_task_labels"}
    assert [len(leaf) for leaf in compat.leaves(flat)] == [6] and compat.indices(flat) is None
    assert list(compat.indices(compat.flat_data(dataset.subset([4, 1])))) == [4, 1]
    assert len(compat.transform_groups(flat)) == 2
    loader = TaskBalancedDataLoader(dataset, batch_size=2)
    assert not compat.builds_own_loader(loader) and isinstance(loader, MultiDatasetDataLoader)
    assert len(compat.samplers(loader)) == 1 and compat.epoch_loader(loader) is not None
    group, policy = ReservoirSamplingBuffer(4), ExperienceBalancedBuffer(8)
    compat.set_buffer_weights(group, torch.ones(2))
    compat.set_experiences_seen(policy, 3)
    assert compat.buffer_weights(group).tolist() == [1.0, 1.0] and compat.experiences_seen(policy) == 3
    assert compat.adaptation_device(MultiHeadClassifier(3)) == torch.device("cpu")
    strategy = _strategy()
    strategy.stop_training()
    compat.keep_training(strategy)
    assert strategy._stop_training is False
