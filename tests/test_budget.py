"""Budgets: every run records its optimizer steps, samples and FLOPs; two-stage AdapterFusion splits the
adapter's steps between its stages by default (fusion.budget=equal), and strategy.iterations fixes the
steps per task."""

import pytest

from cl_adapters.errors import UserError
from cl_adapters.runs.run import run

QUICK = ("stream=split_digits", "strategy.epochs=2")


def steps(results) -> list[int]:
    return [c["optimizer_steps"] for c in results["costs"]]


def test_fusion_takes_as_many_optimizer_steps_as_an_adapter_unless_given_extra(make_cfg, tmp_path):
    adapter = run(make_cfg(*QUICK, "strategy=adapter"), tmp_path / "adapter")
    fusion = run(make_cfg(*QUICK, "strategy=adapter_fusion"), tmp_path / "fusion")
    extra = run(make_cfg(*QUICK, "strategy=adapter_fusion", "fusion.budget=extra"), tmp_path / "extra")
    assert steps(fusion) == steps(adapter) == [16] * 5  # 2 epochs x 8 batches of 32 per task
    assert [c["train_samples"] for c in fusion["costs"]] == [c["train_samples"] for c in adapter["costs"]]
    assert steps(extra) == [16] + [32] * 4  # tasks 2..5: the adapter's 2 epochs, then the fusion's 2
    assert adapter["accuracy_matrix"][0] == fusion["accuracy_matrix"][0]  # task 1 has nothing to fuse


def test_iterations_fix_the_steps_per_task_and_are_split_between_fusion_stages(make_cfg, tmp_path, monkeypatch):
    from cl_adapters.strategies import ContinualStrategy

    stages = []
    real = ContinualStrategy.stage_steps
    monkeypatch.setattr(ContinualStrategy, "stage_steps", lambda self: stages.append(real(self)) or stages[-1])
    fusion = run(make_cfg(*QUICK, "strategy=adapter_fusion", "strategy.iterations=11"), tmp_path / "fusion")
    assert steps(fusion) == [11] * 5  # 11 steps: more than one pass over a task's 8 batches
    assert stages[-1] == [6, 5]  # the adapter gets the odd step, then its fusion


def test_train_flops_count_forward_and_backward_of_the_minibatch(make_cfg, tmp_path):
    """MLP 64 -> 32 plus a 2-way head, all trained (full_ft): per sample, forward 2(64*32 + 32*2), backward
    the weight gradients 2(64*32 + 32*2) and the input gradient of the head 2(32*2) (the input needs none)."""
    results = run(make_cfg(*QUICK, "strategy=full_ft", "model.hidden=[32]"), tmp_path / "ft")
    per_sample = 2 * (64 * 32 + 32 * 2) * 2 + 2 * 32 * 2
    for c in results["costs"]:
        assert c["train_flops"] == per_sample * c["train_samples"]


@pytest.mark.parametrize("override,message", [
    ("strategy.iterations=0", "strategy.iterations must be a positive integer or null, got 0"),
    ("fusion.budget=more", "fusion.budget must be equal or extra, got 'more'"),
])
def test_bad_budgets_are_refused(make_cfg, tmp_path, override, message):
    with pytest.raises(UserError, match=message):
        run(make_cfg(*QUICK, "strategy=adapter_fusion", override), tmp_path / "bad")
