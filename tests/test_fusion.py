"""AdapterFusion: the fast form equals the paper's, two-stage training touches only the task's fusion,
earlier tasks stay bit-identical, attention is recorded and plotted, save/reload is exact."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from cl_adapters.adapters import AdapterConfig, Bottleneck, Fusion, FusionConfig, LoraConfig
from cl_adapters.errors import UserError
from cl_adapters.metrics import AccuracyPlugin, FusionAttention
from cl_adapters.models import MLP, AdaptedModel, checkpoint
from cl_adapters.runs.run import run
from cl_adapters.strategies import ContinualStrategy

D = 16


def adapters(n, in_dim=D, scaling=1.0, trained=True):
    torch.manual_seed(n)
    made = [Bottleneck(in_dim, D, AdapterConfig(r=4, scaling=scaling)) for _ in range(n)]
    if trained:  # non-zero up-projections, as after training
        for a in made:
            nn.init.normal_(a.up.weight), nn.init.normal_(a.up.bias)
    return made


def paper_fusion(f: Fusion, h, src, bottlenecks, key_bias):
    """Pfeiffer et al.'s form, literally: every adapter's output through K and V, softmax over adapters."""
    deltas = torch.stack([a(src) for a in bottlenecks], -2)  # (..., N, d)
    scores = (f.query(h).unsqueeze(-2) * (f.key(deltas) + key_bias)).sum(-1) / f.temperature
    values = f.value(deltas) if f.value is not None else deltas
    return h + (scores.softmax(-1).unsqueeze(-1) * values).sum(-2)


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("rank", [None, 3])
@pytest.mark.parametrize("mode", ["serial", "parallel"])
def test_fast_fusion_equals_the_papers_form(value, rank, mode):
    in_dim = D if mode == "serial" else 12
    bottlenecks = adapters(3, in_dim, scaling=0.5)
    f = Fusion(D, ["0", "1", "2"], FusionConfig(rank=rank, value=value, temperature=2.0))
    for p in f.parameters():
        nn.init.normal_(p, std=0.3)
    h = torch.randn(4, 5, D)
    src = h if mode == "serial" else torch.randn(4, 5, in_dim)
    expected = paper_fusion(f, h, src, bottlenecks, key_bias=torch.randn(f.key.out_features))
    got = f(h, None if mode == "serial" else src, bottlenecks)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the in-place inference path writes the same into h
        assert torch.allclose(f(h.clone(), None if mode == "serial" else src, bottlenecks, inplace=True), got, atol=1e-6)


@pytest.mark.parametrize("cfg", [FusionConfig(), FusionConfig(rank=4, value=False)])
def test_fresh_fusion_over_one_adapter_is_that_adapter(cfg):
    (a,) = adapters(1)
    h = torch.randn(3, 7, D)
    fused = Fusion(D, ["0"], cfg)(h, None, [a])
    torch.testing.assert_close(fused, a.add_to(h, h), atol=1e-6, rtol=0)


def test_fresh_fusion_is_close_to_the_average_of_its_adapters():
    bottlenecks = adapters(4, trained=False)
    for a in bottlenecks:  # small outputs, as adapters have: the scores are then tiny at init
        nn.init.normal_(a.up.weight, std=0.05)
    h = torch.randn(8, D)
    fused = Fusion(D, list("0123"), FusionConfig())(h, None, bottlenecks)
    average = h + torch.stack([a(h) for a in bottlenecks]).mean(0)
    torch.testing.assert_close(fused, average, atol=1e-3, rtol=0)


@pytest.mark.parametrize("kwargs", [dict(rank=0), dict(mode="both"), dict(temperature=0.0), dict(regularization=-1.0),
                                    dict(top_k=0), dict(top_k=True), dict(candidates=4), dict(top_k=3, candidates=2)])
def test_bad_fusion_values_are_refused(kwargs):
    with pytest.raises(UserError, match="fusion."):
        FusionConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(adapter=LoraConfig()), dict(per_task=False), dict(train_backbone="all")])
def test_fusion_needs_per_task_adapters_on_a_frozen_backbone(kwargs):
    kwargs = {"adapter": AdapterConfig(r=4), **kwargs}
    with pytest.raises(UserError, match="fusion needs per-task bottleneck adapters"):
        AdaptedModel(MLP((1, 8, 8), hidden=(D, D)), fusion=FusionConfig(), **kwargs)


def fused_model(fusion: FusionConfig, tasks=3) -> AdaptedModel:
    """An MLP with per-task Pfeiffer adapters (randomised), task t >= 1 fused over adapters 0..t."""
    torch.manual_seed(0)
    model = AdaptedModel(MLP((1, 8, 8), hidden=(D, D)), AdapterConfig(r=4), fusion=fusion)
    model.train()
    for t in range(tasks):
        model.add_task(t, classes=2)
        for a in model.adapters.layers:
            nn.init.normal_(a.adapters[str(t)].up.weight, std=0.5)
        if model.stages() == 2:
            model.next_stage()
    return model


def grads(model, task):
    model.zero_grad()
    model(torch.randn(6, 1, 8, 8), task).sum().backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("mode", ["two_stage", "joint"])
def test_gradients_reach_only_the_tasks_fusion(mode):
    model = fused_model(FusionConfig(mode=mode))
    got = grads(model, 2)
    assert got and all(".fusions.2." in n or n.startswith("heads.2.") or (mode == "joint" and ".adapters.2." in n) for n in got)
    assert any(".fusions.2.query" in n for n in got) and any(".fusions.2.value" in n for n in got)
    assert any(".adapters.2." in n for n in got) == (mode == "joint")
    assert {n for n, p in model.named_parameters() if p.requires_grad} >= got


def test_mixed_task_batches_route_each_sample_through_its_own_fusion():
    model = fused_model(FusionConfig()).eval()
    x, tasks = torch.randn(9, 1, 8, 8), torch.tensor([2, 0, 1] * 3)
    mixed = model(x, tasks)
    for t in range(3):
        torch.testing.assert_close(mixed[tasks == t], model(x[tasks == t], t), atol=1e-5, rtol=0)


def test_two_stage_trains_the_adapter_first_then_only_the_fusion():
    torch.manual_seed(0)
    model = AdaptedModel(MLP((1, 8, 8), hidden=(D, D)), AdapterConfig(r=4), fusion=FusionConfig())
    model.train()
    model.add_task(0, 2)
    assert model.stages() == 1  # nothing to fuse yet
    model.add_task(1, 2)
    assert model.stages() == 2 and not model.fusions(1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapters.1." in n or n.startswith("heads.1.") for n in trainable)
    model.next_stage()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".fusions.1." in n or n.startswith("heads.1.") for n in trainable)
    assert [f.keys for f in model.fusions(1)] == [["0", "1"]] * 2


def test_value_regulariser_is_the_distance_from_identity():
    model = fused_model(FusionConfig(regularization=0.5), tasks=2)
    assert float(model.penalty()) == 0.0  # V = I at init
    with torch.no_grad():
        for f in model.fusions(1):
            f.value.weight[0, 1] = 2.0
    assert float(model.penalty()) == pytest.approx(0.5 * 4.0 * len(model.adapters.layers))
    assert float(fused_model(FusionConfig(value=False), tasks=2).penalty()) == 0.0


def test_stream_keeps_earlier_tasks_bit_identical_and_records_attention(digits):
    torch.manual_seed(0)
    accuracy, attention = AccuracyPlugin(), FusionAttention()
    strategy = ContinualStrategy(
        backbone=MLP((1, 8, 8), hidden=(32, 32)),
        model=lambda b: AdaptedModel(b, AdapterConfig(r=8), fusion=FusionConfig(rank=8)),
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2), epochs=2, batch_size=32,
        monitors=[accuracy, attention],
    )
    snapshots, diagonal = [], []
    for i, experience in enumerate(digits.train_stream[:3]):
        strategy.train(experience)
        snapshots.append({n: p.detach().clone() for n, p in strategy.model.task_parameters(i).items()})
        strategy.eval(digits.test_stream[: i + 1])
        diagonal.append(accuracy.last[i])
    final = strategy.model.task_parameters
    for t, snapshot in enumerate(snapshots):
        assert all(torch.equal(final(t)[n], p) for n, p in snapshot.items())
    assert any(".fusions.2." in n for n in snapshots[2]) and not any(".fusions." in n for n in snapshots[0])
    assert [accuracy.last[j] for j in range(3)] == diagonal  # BWT exactly 0
    assert sorted(attention.attention) == [1, 2]
    for record in attention.attention.values():
        assert len(record["weights"]) == len(record["layers"]) == 2
        for row in record["weights"]:  # a mean of softmax rows
            assert len(row) == len(record["adapters"]) and sum(row) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("fusion", [FusionConfig(temperature=3.0), FusionConfig(rank=4, value=False, mode="joint")])
def test_save_and_reload_gives_identical_outputs(tmp_path, fusion):
    model = fused_model(fusion)
    checkpoint.save(model, tmp_path)
    torch.manual_seed(123)  # a different random init everywhere: everything must come from the files
    fresh = AdaptedModel(MLP((1, 8, 8), hidden=(D, D)), AdapterConfig(r=4), fusion=fusion)
    checkpoint.load(fresh, tmp_path)
    model.eval(), fresh.eval()
    x = torch.randn(10, 1, 8, 8)
    for task in range(3):
        assert torch.equal(fresh(x, task), model(x, task))
    assert fresh.trained_tasks == [0, 1, 2] and [f.keys for f in fresh.fusions(2)] == [["0", "1", "2"]] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.safetensors", *(f"task-{t}.safetensors" for t in range(3))]


def test_reload_with_another_fusion_config_is_refused(tmp_path):
    checkpoint.save(fused_model(FusionConfig(temperature=3.0)), tmp_path)
    other = AdaptedModel(MLP((1, 8, 8), hidden=(D, D)), AdapterConfig(r=4), fusion=FusionConfig())
    with pytest.raises(UserError, match="task-0.safetensors: saved with fusion config .*temperature.: 3.0"):
        checkpoint.load(other, tmp_path)
    with pytest.raises(UserError, match="not found"):
        checkpoint.load(other, tmp_path / "missing")


def test_run_writes_fusion_costs_attention_and_heatmap(make_cfg, tmp_path):
    results = run(make_cfg("strategy=adapter_fusion", "fusion=light", "strategy.epochs=1"), tmp_path)
    assert results["metrics"]["bwt"] == 0.0 and results["run"]["fusion"] is not None
    # every task after the first: 2 adapted layers of the 256-wide MLP x (r=64 adapter + rank-16 query
    # with bias + key), and a 2-class head; the same for every task however many adapters it fuses
    per_task = 2 * ((256 * 64 + 64 + 64 * 256 + 256) + (256 * 16 + 16 + 256 * 16)) + 256 * 2 + 2
    assert [c["trainable_params"] for c in results["costs"]][1:] == [per_task] * 4
    saved = json.loads((tmp_path / "results.json").read_text())["fusion_attention"]
    assert sorted(saved) == ["1", "2", "3", "4"] and saved["2"]["adapters"] == ["0", "1", "2"]
    assert (tmp_path / "fusion_attention.png").read_bytes()[:4] == b"\x89PNG"


def test_top_k_fuses_the_earlier_adapters_that_best_separate_the_tasks_classes(digits):
    """fusion.top_k=2: from the fourth task on, a fusion mixes 2 earlier adapters and its own: those whose
    features alone give the best nearest-class-mean accuracy on the task's training samples (recomputed
    here from the adapters); the first tasks fuse all they have. BWT stays exactly 0."""
    from cl_adapters.adapters.route import Route, Stack

    torch.manual_seed(0)
    accuracy = AccuracyPlugin()
    strategy = ContinualStrategy(
        backbone=MLP((1, 8, 8), hidden=(32, 32)),
        model=lambda b: AdaptedModel(b, AdapterConfig(r=8), fusion=FusionConfig(rank=8, top_k=2)),
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2), epochs=1, batch_size=32, monitors=[accuracy],
    )
    model, diagonal = strategy.model, []
    for i, experience in enumerate(digits.train_stream):
        strategy.train(experience)
        strategy.eval(digits.test_stream[: i + 1])
        diagonal.append(accuracy.last[i])
        if i < 3:
            assert [f.keys for f in model.fusions(i)] == ([[str(k) for k in range(i + 1)]] * 2 if i else [])
            continue
        rows = [experience.dataset[j] for j in range(0, len(experience.dataset), max(len(experience.dataset) // 256, 1))]
        x, y = (torch.stack([torch.as_tensor(row[k]) for row in rows[:256]]) for k in (0, 1))
        model.eval()
        with torch.no_grad():  # the same samples: up to 256 spread over the task's training data
            scores = {str(k): _ncm(model.features(x, Route.whole(Stack((str(k),)))), y) for k in range(i)}
        best = sorted(scores, key=lambda k: -scores[k])[:2]
        chosen = model.fusions(i)[0].keys
        assert len(chosen) == 3 and chosen[-1] == str(i) and sorted(chosen[:2]) == sorted(best), (scores, chosen)
        assert all(f.keys == chosen for f in model.fusions(i)) and model.fusion_over[i] == chosen
    assert [accuracy.last[j] for j in range(5)] == diagonal


def test_candidates_probe_only_the_tasks_with_the_nearest_data_and_survive_a_resume(digits, whole_and_resumed,
                                                                                    monkeypatch):
    """fusion.candidates=2 with top_k=1: every task keeps its data signature (the centroid of its probe
    samples through the bare backbone, taken after it trained); from the fourth task on only the 2 earlier
    tasks with the nearest signatures are probed, and the best of those is fused. A resumed run chooses
    the same: the signatures are in the checkpoints."""
    from cl_adapters.models import fusion_choice

    probed, ncm = [], fusion_choice._ncm_accuracy
    monkeypatch.setattr(fusion_choice, "_ncm_accuracy", lambda f, y: probed.append(1) or ncm(f, y))
    torch.manual_seed(0)
    strategy = ContinualStrategy(
        backbone=MLP((1, 8, 8), hidden=(32, 32)),
        model=lambda b: AdaptedModel(b, AdapterConfig(r=8), fusion=FusionConfig(rank=8, top_k=1, candidates=2)),
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2), epochs=1, batch_size=32,
    )
    model = strategy.model
    for i, experience in enumerate(digits.train_stream):
        centroid = fusion_choice.data_signature(model, experience.dataset)
        distance = {k: float(torch.dist(model.signatures[k], centroid)) for k in range(i)}
        probed.clear()
        strategy.train(experience)
        assert sorted(model.signatures) == list(range(i + 1))
        torch.testing.assert_close(model.signatures[i], fusion_choice.data_signature(model, experience.dataset), rtol=0, atol=0)
        if i >= 3:
            nearest = sorted(distance, key=distance.get)[:2]
            chosen = model.fusion_over[i]
            assert len(probed) == 2 and len(chosen) == 2 and int(chosen[0]) in nearest and chosen[1] == str(i)

    whole, resumed = whole_and_resumed("strategy=adapter_fusion", "fusion.top_k=1", "fusion.candidates=2",
                                       "strategy.epochs=2", after=2)
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    assert [a["adapters"] for a in resumed["fusion_attention"].values()] == [a["adapters"] for a in whole["fusion_attention"].values()]


def _ncm(features, labels):
    from cl_adapters.models.fusion_choice import _ncm_accuracy

    return _ncm_accuracy(features, labels)


def test_attention_of_many_fused_tasks_is_one_heatmap_of_tasks_by_adapters(tmp_path, monkeypatch):
    from cl_adapters.outputs import plots

    attention = {t: {"adapters": [str(k) for k in range(max(0, t - 2), t + 1)], "layers": ["a.0", "a.1"],
                     "weights": [[0.2, 0.3, 0.5][-min(t + 1, 3):]] * 2} for t in range(1, 12)}
    drawn = []
    monkeypatch.setattr(plots, "heatmap", lambda ax, values, **kw: drawn.append(values) or ax.imshow(values))
    assert plots.plot_fusion_attention(attention, tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    (values,) = drawn  # 11 tasks x adapters 0..11, blank where a task does not fuse that adapter
    assert values.shape == (11, 12) and values[10, 9:].tolist() == [0.2, 0.3, 0.5] and np.isnan(values[10, 0])
