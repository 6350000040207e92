"""The baselines end to end on split digits: LoRA forgets, LoRA per task does not, CL plugins run."""

import pytest
import torch
from avalanche.core import SupervisedPlugin
from hydra.utils import instantiate
from torch.utils.data import TensorDataset

from cl_adapters.errors import UserError
from cl_adapters.models import MLP
from cl_adapters.runs.run import run
from cl_adapters.streams import split_digits
from cl_adapters.strategies import EWC

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


def test_every_plugin_is_called_on_each_step_event_it_acts_on(make_cfg):
    """Step callbacks go only to the plugins that override them (Avalanche calls every no-op too), in order."""
    from cl_adapters.strategies.continual import STEP_EVENTS

    calls = []

    class Recorder(SupervisedPlugin):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def before_forward(self, strategy, **kwargs):
            calls.append((self.name, "before_forward"))

        def after_eval_forward(self, strategy, **kwargs):
            calls.append((self.name, "after_eval_forward"))

    class Silent(SupervisedPlugin):
        pass

    strategy = instantiate(make_cfg(*QUICK, "strategy.batch_size=128").strategy, backbone=MLP((1, 8, 8)),
                           monitors=[Recorder("a"), Silent(), Recorder("b")])
    exp = split_digits(n_tasks=5, seed=0).train_stream[0]
    strategy.train(exp)
    steps = 3 * -(-len(exp.dataset) // 128)
    assert calls == [(name, "before_forward") for _ in range(steps) for name in "ab"]
    assert strategy._listeners["before_forward"] == strategy.plugins[:3:2]
    assert not any(isinstance(p, Silent) for event in STEP_EVENTS for p in strategy._listeners[event])
    calls.clear()
    strategy.eval([split_digits(n_tasks=5, seed=0).test_stream[0]])
    assert calls == [(name, "after_eval_forward") for name in "ab"]  # one batch of 256 test samples


def held_by(cfg, plugin) -> float:
    """How far the backbone moves on split digits' second task with ``plugin``, relative to without it."""
    stream = split_digits(n_tasks=5, seed=0).train_stream
    moved = []
    for plugins in ([plugin], []):
        torch.manual_seed(0)
        strategy = instantiate(cfg.strategy, backbone=MLP((1, 8, 8)), plugins=plugins)
        strategy.train(stream[0])
        before = {n: p.detach().clone() for n, p in strategy.model.backbone.named_parameters()}
        strategy.train(stream[1])
        moved.append(sum(float((p - before[n]).pow(2).sum()) for n, p in strategy.model.backbone.named_parameters()))
    return moved[0] / moved[1]


def test_synaptic_intelligence_measures_importance_and_holds_the_weights(make_cfg):
    """Avalanche's SI on a CPU kept views of the weights: a zero path integral and an anchor that moves with
    them, so no penalty. Ours: importances after a task, and a penalty that holds the next task's weights."""
    cfg = make_cfg(*QUICK, "strategy=full_ft", "plugins=[si]", "plugins.si.si_lambda=10000")
    si = instantiate(cfg.plugins.si)
    assert held_by(cfg, si) < 0.5
    importance = si.ewc_data[1]["backbone.layers.0.fc.weight"].data
    assert importance.abs().sum() > 0 and importance.max() > 0.001  # unclipped (clip_to: null)


def test_per_sample_fisher_is_the_expected_squared_score_of_a_softmax_regression():
    """Softmax regression z = Wx + b: d log p_c / dW = (e_c - p) x^T, so the Fisher is
    mean_n sum_c p_c (e_c - p)^2 x^2 (and without x for b)."""
    torch.manual_seed(0)
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    model = torch.nn.Linear(4, 3)
    plugin = EWC(1.0, fisher="per_sample", chunk=16)  # chunks of 16, 16, 16, 2
    found = plugin.compute_importances(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), 0.0),
                                       TensorDataset(x, y, torch.zeros_like(y)), "cpu", 10)
    p = torch.softmax(model(x), -1).detach()
    score2 = (p[:, :, None] * (torch.eye(3)[None] - p[:, None, :]) ** 2).sum(1)  # (n, k): sum_c p_c (e_c - p)_k^2
    torch.testing.assert_close(found["weight"].data, torch.einsum("nk,nd->kd", score2, x ** 2) / 50)
    torch.testing.assert_close(found["bias"].data, score2.mean(0))
    sampled = EWC(1.0, fisher="per_sample", fisher_samples=20).compute_importances(
        model, None, None, TensorDataset(x, y, torch.zeros_like(y)), "cpu", 10)
    assert not torch.allclose(sampled["bias"].data, found["bias"].data)  # 20 of the 50 samples
    with pytest.raises(UserError, match="fisher must be one of"):
        EWC(1.0, fisher="empirical")


def test_per_sample_fisher_in_a_run_holds_the_weights(make_cfg):
    """plugins.ewc.fisher=per_sample through the strategy's multi-task model: importances per task, a
    penalty that holds the next task's weights."""
    cfg = make_cfg(*QUICK, "strategy=full_ft", "plugins=[ewc]", "plugins.ewc.fisher=per_sample",
                   "plugins.ewc.ewc_lambda=1e6", "plugins.ewc.fisher_samples=200")
    ewc = instantiate(cfg.plugins.ewc)
    assert held_by(cfg, ewc) < 0.5
    assert ewc.importances[0]["backbone.layers.0.fc.weight"].data.sum() > 0
