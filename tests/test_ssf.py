"""SSF (adapters/ssf/): the paper's sites on every backbone kind, identity at init, exactly 2 x channels per
wrapped layer per task, only the current task's pairs train, per-sample routing and stacking, merging into the
weights, checkpoints through the adapter-method interface, one-line refusals, and the acceptance run."""

import pytest
import torch
from torch import nn

from cl_adapters.adapters import FusionConfig, Route, Stack
from cl_adapters.adapters.ssf import SSFAdapters, SSFConfig, SSFLayer
from cl_adapters.errors import UserError
from cl_adapters.models import MLP, AdaptedModel, HFEncoder, PatchTransformer

SHAPE = (1, 8, 8)


def mlp(**kwargs):
    torch.manual_seed(0)
    return MLP(SHAPE, hidden=(32, 16), **kwargs)


def patch_transformer():
    torch.manual_seed(0)
    return PatchTransformer(SHAPE, patch_size=2, dim=16, depth=2, heads=2)


def grow(model, tasks):
    for t in tasks:
        model.add_task(t, classes=2)
    return model


def jittered(model, std=0.3):
    """Pairs away from identity, as after training, so that each task's SSF changes outputs."""
    torch.manual_seed(1)
    with torch.no_grad():
        for key in model.adapters.keys():
            for p in model.adapters.parameters(key):
                p.add_(torch.randn_like(p) * std)
    return model.eval()


def expected_params(backbone) -> int:
    return 2 * sum(layer.width for layer in backbone.modules() if isinstance(layer, SSFLayer))


def test_the_paper_sites_on_the_patch_transformer_and_identity_at_init():
    model = grow(AdaptedModel(patch_transformer(), SSFConfig(), train_backbone="never"), [0, 1])
    block = ["ln1", "ln2", "attn.qkv", "attn.proj", "ffn.fc1", "ffn.fc2"]
    assert model.adapters.layer_names == ["embed", *(f"blocks.{i}.{s}" for i in range(2) for s in block), "norm"]
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(model.features(x, Route.whole("1")), model.backbone(x), rtol=0, atol=0)
    assert SSFConfig(init_std=0.02).attach(mlp()) is not None  # the paper's jittered init is an option


@pytest.mark.parametrize("make", [mlp, patch_transformer])
def test_trainable_params_are_two_per_channel_per_wrapped_layer_per_task(make):
    model = grow(AdaptedModel(make(), SSFConfig(), train_backbone="never"), [0, 1, 2])
    per_task = 2 * sum(m.out_features if isinstance(m, nn.Linear) else m.normalized_shape[0]
                       for m in make().modules() if isinstance(m, (nn.Linear, nn.LayerNorm)))
    for t in range(3):
        ours = sum(p.numel() for n, p in model.task_parameters(t).items() if not n.startswith("heads."))
        assert ours == per_task == expected_params(model.backbone)
    trainable = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not n.startswith("heads."))
    assert trainable == per_task  # the last task's pairs only


def test_minilm_sites_skip_the_unused_pooler_and_count_exactly(tiny_bert):
    model = grow(AdaptedModel(HFEncoder(name_or_path=tiny_bert), SSFConfig()), [0])
    names = model.adapters.layer_names
    assert names[0] == "model.embeddings.LayerNorm" and not any("pooler" in n for n in names)
    per_layer = 3 * 32 + 32 + 32 + 64 + 32 + 32  # q, k, v, attention output + its norm, intermediate, output + norm
    assert sum(p.numel() for p in model.adapters.parameters("0")) == 2 * (32 + 2 * per_layer)


def test_only_the_current_tasks_pairs_train():
    model = grow(AdaptedModel(mlp(), SSFConfig(), train_backbone="never"), [0, 1])
    own = set(map(id, model.adapters.parameters("1")))
    assert all(p.requires_grad == (id(p) in own) for n, p in model.backbone.named_parameters())
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    nn.functional.cross_entropy(model(torch.randn(8, *SHAPE), 1), torch.randint(0, 2, (8,))).backward()
    opt.step()
    moved = {n for n, p in model.backbone.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(".ssf.1." in n for n in moved)


def test_a_mixed_batch_routes_each_sample_through_its_own_tasks_pairs():
    model = jittered(grow(AdaptedModel(patch_transformer(), SSFConfig(), train_backbone="never"), [0, 1]))
    x, t = torch.randn(6, *SHAPE), torch.tensor([1, 0, 1, 0, 0, 1])
    with torch.no_grad():
        mixed = model(x, t)
        for task in (0, 1):
            torch.testing.assert_close(mixed[t == task], model(x[t == task], task), rtol=1e-5, atol=1e-6)
        routed = model.features(x, Route.whole("0"))
        assert not torch.allclose(routed, model.features(x, Route.whole("1")))
        torch.testing.assert_close(model.backbone(x), model.features(x, Route.whole("9")))  # no pair: bare
    assert all(layer.route == Route() for layer in model.adapters.layers)  # nothing outlives the forward


def test_a_stack_applies_the_pairs_in_order():
    model = jittered(grow(AdaptedModel(mlp(), SSFConfig(targets=[r"layers\.0\.fc"]), train_backbone="never"), [0, 1]))
    x = torch.randn(4, *SHAPE)
    fc, (a, b) = model.backbone.layers[0].fc.base, (model.adapters.layers[0].ssf[k] for k in "01")
    h = b.scale * (a.scale * fc(x.flatten(1)) + a.shift) + b.shift
    expected = model.backbone.layers[1](torch.relu(h))
    with torch.no_grad():
        torch.testing.assert_close(model.features(x, Route.whole(Stack(("0", "1")))), expected)


@pytest.mark.parametrize("make", [mlp, patch_transformer])
def test_merging_a_task_into_the_weights_gives_its_routed_outputs(make):
    model = jittered(grow(AdaptedModel(make(), SSFConfig(), train_backbone="never"), [0, 1]))
    x = torch.randn(5, *SHAPE)
    with torch.no_grad():
        routed = model.features(x, Route.whole("1"))
        model.adapters.merge("1")
        torch.testing.assert_close(model.backbone(x), routed)
        torch.testing.assert_close(model.features(x, Route.whole("1")), routed)
    with pytest.raises(UserError, match=r"^SSF 1 is merged into the base weights: cannot route to tasks \['0'\]$"):
        model.features(x, Route.whole("0"))
    with pytest.raises(UserError, match="^SSF 1 is already merged"):
        model.adapters.merge("0")


def test_merge_is_refused_in_one_line_where_a_layer_has_no_bias():
    backbone = mlp()
    backbone.layers[1].fc.bias = None
    adapters = SSFConfig().attach(backbone)
    adapters.add("0")
    with pytest.raises(UserError, match=r"^SSF cannot merge into layers\.1\.fc: it needs a float weight and bias"):
        adapters.merge("0")
    assert adapters.merged is None and torch.equal(backbone.layers[0].fc.base.weight, mlp().layers[0].fc.weight)


def test_capabilities_are_stack_and_merge_not_fusion():
    """What users can compose with SSF (tests/test_contracts.py holds every method to what it declares)."""
    assert SSFAdapters.capabilities == {"stack", "merge"}
    with pytest.raises(UserError, match="strategy=adapter_fusion"):
        AdaptedModel(mlp(), SSFConfig(), fusion=FusionConfig())


def test_task_files_round_trip(tmp_path):
    from cl_adapters.models import checkpoint

    model = jittered(grow(AdaptedModel(mlp(), SSFConfig(), train_backbone="never"), [0, 1]))
    checkpoint.save(model, tmp_path)
    fresh = checkpoint.load(AdaptedModel(mlp(), SSFConfig(), train_backbone="never"), tmp_path).eval()
    x, t = torch.randn(5, *SHAPE), torch.tensor([0, 1, 1, 0, 1])
    assert torch.equal(fresh(x, t), model(x, t))


def test_vision_backbones_get_the_patch_embedding_conv_and_route_per_sample(tiny_vit, tiny_timm):
    from cl_adapters.models import HFVision, TimmBackbone

    for backbone, conv in ((HFVision((3, 32, 32), name_or_path=tiny_vit), "model.embeddings.patch_embeddings.projection"),
                           (TimmBackbone((3, 32, 32), **tiny_timm), "model.patch_embed.proj")):
        model = jittered(grow(AdaptedModel(backbone, SSFConfig()), [0, 1]))
        assert conv in model.adapters.layer_names and not any("pooler" in n for n in model.adapters.layer_names)
        assert sum(p.numel() for p in model.adapters.parameters("0")) == expected_params(model.backbone)
        x, t = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 1, 0])
        with torch.no_grad():
            mixed = model(x, t)
            for task in (0, 1):
                torch.testing.assert_close(mixed[t == task], model(x[t == task], task), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad,match", [
    (dict(init_std=-0.1), r"^adapter.init_std must be a number in \[0, 1\), got -0.1$"),
    (dict(init_std=True), r"^adapter.init_std must be a number in \[0, 1\), got True$"),
    (dict(targets=[]), r"^adapter.targets must be module-name regexes \(or null\), got \[\]$"),
])
def test_config_refuses_impossible_values_naming_the_key(bad, match):
    with pytest.raises(UserError, match=match):
        SSFConfig(**bad)


@pytest.mark.parametrize("targets,match", [
    ([r"layers\.0"], r"^adapter.targets: layers\.0 \(MLPBlock\) is not a Linear, LayerNorm over one dimension or Conv2d"),
    ([r"nowhere"], r"^adapter.targets \['nowhere'\] match no module of the backbone$"),
])
def test_targets_that_are_not_ssf_sites_are_refused_in_one_line(targets, match):
    with pytest.raises(UserError, match=match):
        SSFConfig(targets=targets).attach(mlp())


def test_the_cli_refuses_a_bad_value_in_one_line(make_cfg):
    from hydra.utils import instantiate

    with pytest.raises(Exception, match=r"adapter.init_std must be a number in \[0, 1\), got -1"):
        instantiate(make_cfg("adapter=ssf", "adapter.init_std=-1").adapter)


@pytest.mark.slow
def test_split_digits_run(make_cfg, tmp_path):
    """``cl-adapters adapter=ssf`` as it comes: the lr and passes chosen on validation (adapter_strategy/ssf/adapter.yaml)."""
    from cl_adapters.runs.run import run

    results = run(make_cfg("adapter=ssf"), tmp_path)
    assert results["metrics"]["bwt"] == 0.0 and results["metrics"]["acc"] >= 0.97
    assert results["costs"][1]["trainable_params"] == 2 * (256 + 256) + 256 * 2 + 2  # two layers' pairs and a head
