"""The flat module walks (models/walks.py) against nn.Module's own, and exactly what trains per policy."""

import pytest
import torch
from torch import nn

from cl_adapters.adapters import AdapterConfig, FusionConfig
from cl_adapters.models import MLP, AdaptedModel
from cl_adapters.models.walks import all_on, parameters, set_training


class OwnTrain(nn.Module):
    """A module with a ``train`` of its own (as Hugging Face's models have): it keeps its child in eval mode."""

    def __init__(self):
        super().__init__()
        self.child = nn.Dropout(0.5)
        self.calls = []

    def train(self, mode=True):
        self.calls.append(mode)
        self.training = mode
        self.child.training = False
        return self


def nested():
    tied = nn.Linear(3, 3)
    return nn.Sequential(tied, nn.Sequential(nn.ReLU(), tied, nn.LayerNorm(3)), OwnTrain(), nn.Linear(3, 2, bias=False))


@pytest.mark.parametrize("mode", [False, True])
def test_set_training_sets_what_module_train_sets_and_calls_a_modules_own_train(mode):
    ours, theirs = nested(), nested()
    ours.train(not mode), theirs.train(not mode)
    set_training(ours, mode)
    ours.training = mode
    theirs.train(mode)
    assert [m.training for m in ours.modules()] == [m.training for m in theirs.modules()]
    assert ours[2].calls[-1] is mode and ours[2].child.training is False
    with pytest.raises(ValueError, match="boolean"):
        set_training(ours, "eval")


def test_parameters_lists_module_parameters_in_order_each_once():
    model = nested()
    model[1].register_parameter("absent", None)
    assert [id(p) for p in parameters(model)] == [id(p) for p in model.parameters()]
    assert len(list(parameters(model))) == 5  # the tied Linear's two counted once


def test_all_on_is_false_for_one_tensor_elsewhere():
    model = nested()
    assert all_on(model, torch.device("cpu"))
    model[1][2].register_buffer("elsewhere", torch.zeros(1, device="meta"))
    assert not all_on(model, torch.device("cpu")) and all_on(model[0], torch.device("cpu"))


def trainable_after(model, tasks, stage_two=False):
    for t in tasks:
        model.add_task(t, 2)
    if stage_two:
        model.next_stage()
    return {n for n, p in model.named_parameters() if p.requires_grad}


def names(model, *patterns):
    return {n for n, _ in model.named_parameters() if any(p in n for p in patterns)}


def adapted(**kwargs):
    torch.manual_seed(0)
    return AdaptedModel(MLP((1, 8, 8), hidden=(16, 16)), AdapterConfig(r=4), **kwargs)


def test_set_trainable_gives_each_policy_exactly_its_parameters():
    model = adapted(train_backbone="first")
    assert trainable_after(model, [0]) == names(model, "")  # task 0: the backbone, its adapter, its head
    assert trainable_after(model, [1, 2]) == names(model, ".adapters.2.", "heads.2.")

    model = adapted(train_backbone="all")  # the backbone trains (every head with it), the other adapters stay frozen
    assert trainable_after(model, [0, 1, 2]) == names(model, "") - names(model, ".adapters.0.", ".adapters.1.")

    model = adapted(train_backbone="never", train_biases=True)  # BitFit beside per-task adapters
    got = trainable_after(model, [0, 1, 2])
    base_biases = {n for n in names(model, "bias") if ".adapters." not in n and not n.startswith("heads.")}
    assert got == base_biases | names(model, ".adapters.2.", "heads.")  # the shared biases train: every head too

    model = adapted(train_backbone="never", per_task=False)
    assert trainable_after(model, [0, 1]) == names(model, ".adapters.shared.", "heads.")

    model = adapted(train_backbone="never", fusion=FusionConfig(mode="two_stage"))
    assert trainable_after(model, [0, 1, 2]) == names(model, ".adapters.2.", "heads.2.")
    assert trainable_after(model, [], stage_two=True) == names(model, ".fusions.2.", "heads.2.")
    model = adapted(train_backbone="never", fusion=FusionConfig(mode="joint"))
    assert trainable_after(model, [0, 1, 2]) == names(model, ".adapters.2.", ".fusions.2.", "heads.2.")
