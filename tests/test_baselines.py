"""The baselines end to end on split digits: LoRA forgets, LoRA per task does not, CL plugins run."""

import pytest
import torch
from avalanche.core import SupervisedPlugin
from hydra.utils import instantiate

from cl_adapters.errors import UserError
from cl_adapters.models import MLP
from cl_adapters.runs.run import run
from cl_adapters.streams import split_digits

QUICK = ("stream=split_digits", "strategy.epochs=3")


def test_shared_lora_forgets_and_lora_per_task_does_not(make_cfg, tmp_path):
    shared = run(make_cfg(*QUICK, "strategy=lora"), tmp_path / "lora")
    per_task = run(make_cfg(*QUICK, "strategy=lora_per_task"), tmp_path / "per_task")
    assert shared["metrics"]["bwt"] < -0.02
    assert per_task["metrics"]["bwt"] == 0.0 and per_task["metrics"]["forgetting"] == 0.0
    assert per_task["metrics"]["acc"] > shared["metrics"]["acc"]
    # after the first (from-scratch) task: the LoRA (+ heads) only; per task the same size each time
    assert per_task["costs"][1]["trainable_params"] == per_task["costs"][4]["trainable_params"]
    assert per_task["costs"][1]["trainable_params"] < per_task["costs"][0]["trainable_params"] / 5


@pytest.mark.parametrize("plugin", ["ewc", "ewc_online", "si", "lwf", "replay"])
@pytest.mark.parametrize("strategy", ["full_ft", "lora"])
def test_cl_plugins_run_with_the_baselines(make_cfg, tmp_path, strategy, plugin):
    results = run(make_cfg(*QUICK, f"strategy={strategy}", f"plugins=[{plugin}]"), tmp_path)
    assert results["run"]["plugins"] == [plugin] and results["run"]["status"] == "complete"
    assert results["metrics"]["acc"] > 0.6


def test_replay_reduces_full_fine_tuning_forgetting(make_cfg, tmp_path):
    plain = run(make_cfg(*QUICK, "strategy=full_ft"), tmp_path / "plain")
    replay = run(make_cfg(*QUICK, "strategy=full_ft", "plugins=[replay]"), tmp_path / "replay")
    assert replay["metrics"]["forgetting"] < plain["metrics"]["forgetting"]


def test_a_plugin_with_nothing_to_act_on_is_refused(make_cfg, tmp_path):
    with pytest.raises(UserError, match="nothing to act on"):
        run(make_cfg(*QUICK, "strategy=adapter", "plugins=[ewc]"), tmp_path)


def test_every_experience_starts_with_a_fresh_optimizer(make_cfg):
    class OptimizerState(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.sizes = []

        def before_training_exp(self, strategy, **kwargs):
            self.sizes.append(len(strategy.optimizer.state))

    record = OptimizerState()
    strategy = instantiate(make_cfg(*QUICK, "strategy=full_ft").strategy, backbone=MLP((1, 8, 8)), monitors=[record])
    for exp in split_digits(n_tasks=5, seed=0).train_stream[:3]:
        strategy.train(exp)
    assert record.sizes == [0, 0, 0] and len(strategy.optimizer.state) > 0
    assert torch.is_tensor(next(iter(strategy.optimizer.state.values()))["exp_avg"])


def test_synaptic_intelligence_measures_importance_and_holds_the_weights(make_cfg):
    """Avalanche's SI on a CPU kept views of the weights: a zero path integral and an anchor that moves with
    them, so no penalty. Ours: importances after a task, and a penalty that holds the next task's weights."""
    cfg = make_cfg(*QUICK, "strategy=full_ft", "plugins=[si]", "plugins.si.si_lambda=10000")
    stream = split_digits(n_tasks=5, seed=0).train_stream
    si, moved = instantiate(cfg.plugins.si), {}
    for plugins in ([si], []):
        torch.manual_seed(0)
        strategy = instantiate(cfg.strategy, backbone=MLP((1, 8, 8)), plugins=plugins)
        strategy.train(stream[0])
        before = {n: p.detach().clone() for n, p in strategy.model.backbone.named_parameters()}
        strategy.train(stream[1])
        moved[bool(plugins)] = sum(float((p - before[n]).pow(2).sum()) for n, p in strategy.model.backbone.named_parameters())
    importance = si.ewc_data[1]["backbone.layers.0.fc.weight"].data
    assert importance.abs().sum() > 0 and importance.max() > 0.001  # unclipped (clip_to: null)
    assert moved[True] < 0.5 * moved[False]
