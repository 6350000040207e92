import copy
from functools import partial

import pytest
import torch
from torch import nn

from cl_adapters.adapters import AdapterConfig, CombinedConfig, LoraConfig, inject_adapters
from cl_adapters.errors import UserError
from cl_adapters.models.compositions import averaged_adapter
from cl_adapters.models import MLP, AdaptedModel, PatchTransformer
from cl_adapters.strategies import ContinualStrategy

SHAPE = (1, 8, 8)
BACKBONES = {
    "mlp": lambda: MLP(SHAPE, hidden=(32, 32)),
    "patch_transformer": lambda: PatchTransformer(SHAPE, patch_size=2, dim=32, depth=2, heads=2),
}
PLACEMENTS = ["houlsby", "pfeiffer", "parallel"]


def method(name: str):
    """An adapter method's config by name, small."""
    from cl_adapters.adapters.compacter import CompacterConfig

    if name == "lora_pfeiffer":
        return CombinedConfig([LoraConfig(r=4), AdapterConfig(placement="pfeiffer", r=8)])
    if "lora" in name:
        return LoraConfig(r=4)
    return CompacterConfig(r=8) if name == "compacter" else AdapterConfig(placement=name, r=8)


def grow(model: AdaptedModel, scenario, tasks) -> AdaptedModel:
    """Adapt the model to training experiences as the strategy does (creates adapters + heads)."""
    model.train()
    for t in tasks:
        model.adaptation(scenario.train_stream[t])
    return model


def randomize_adapters(model: AdaptedModel) -> None:
    """Non-zero up-projections, so that adapters change outputs (as after training)."""
    with torch.no_grad():
        for layer in model.adapters.layers:
            for adapter in layer.adapters.values():
                adapter.up.weight.normal_(0, 0.5)


def base_parameters(model: AdaptedModel) -> dict:
    """The backbone's own weights (not the adapters injected into it)."""
    adapters = model.adapters
    own = {id(p) for k in adapters.keys() for p in adapters.parameters(k)} if adapters else set()
    return {n: p for n, p in model.backbone.named_parameters() if id(p) not in own}


def batch(scenario, tasks, n=6):
    xs, ys, ts = [], [], []
    for t in tasks:
        ds = scenario.test_stream[t].dataset
        for i in range(n):
            x, y, task = ds[i]
            xs.append(x), ys.append(int(y)), ts.append(task)
    return torch.stack(xs), torch.tensor(ys), torch.tensor(ts)


@pytest.mark.parametrize("family", BACKBONES)
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_identity_at_init(digits, family, placement):
    torch.manual_seed(0)
    backbone = BACKBONES[family]()
    plain = AdaptedModel(copy.deepcopy(backbone))
    model = grow(AdaptedModel(backbone, AdapterConfig(placement=placement, r=8)), digits, [0, 1])
    assert all(len(layer.adapters) == 2 for layer in model.adapters.layers)
    plain.heads = copy.deepcopy(model.heads)
    model.eval(), plain.eval()
    x, _, t = batch(digits, [0, 1])
    assert torch.equal(model(x, t), plain(x, t))


@pytest.mark.parametrize("family", BACKBONES)
def test_presets_wrap_the_intended_modules(family):
    expected = {
        "mlp": {p: ["layers.0", "layers.1"] for p in PLACEMENTS},
        "patch_transformer": {
            "houlsby": ["blocks.0.attn.proj", "blocks.0.ffn.fc2", "blocks.1.attn.proj", "blocks.1.ffn.fc2"],
            "pfeiffer": ["blocks.0.ffn.fc2", "blocks.1.ffn.fc2"],
            "parallel": ["blocks.0.ffn", "blocks.1.ffn"],
        },
    }[family]
    for placement in PLACEMENTS:
        layers = inject_adapters(BACKBONES[family](), AdapterConfig(placement=placement, r=4))
        assert sorted(layers) == expected[placement]
        assert {layer.mode for layer in layers.values()} == {"parallel" if placement == "parallel" else "serial"}


def test_custom_targets_and_unmatched_targets():
    layers = inject_adapters(BACKBONES["patch_transformer"](), AdapterConfig(r=4, targets=[r"blocks\.1\.attn\.qkv"]))
    assert list(layers) == ["blocks.1.attn.qkv"]
    with pytest.raises(UserError, match="match no module"):
        inject_adapters(BACKBONES["mlp"](), AdapterConfig(r=4, targets=["nothing"]))


@pytest.mark.parametrize("bad", [{"r": 0}, {"r": -3}, {"placement": "sideways"}, {"activation": "nope"}, {"dropout": 1.5}])
def test_config_rejects_impossible_values(bad):
    with pytest.raises(UserError, match="adapter\\."):
        AdapterConfig(**bad)


@pytest.mark.parametrize("family", BACKBONES)
@pytest.mark.parametrize("train_backbone", ["first", "all"])
def test_only_the_current_task_receives_gradients(digits, family, train_backbone):
    torch.manual_seed(0)
    model = grow(AdaptedModel(BACKBONES[family](), AdapterConfig(r=8), train_backbone=train_backbone), digits, [0, 1, 2])
    randomize_adapters(model)
    x, y, t = batch(digits, [0, 1, 2])  # a mixed batch: earlier tasks' parts are used but frozen
    nn.functional.cross_entropy(model(x, t), y).backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    expected = set(model.task_parameters(2))
    if train_backbone == "all":  # the backbone, and the earlier heads on top of it, train too
        expected |= {n for n, _ in model.named_parameters() if ".adapters." not in n}
    assert got == expected
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n in model.task_parameters(2))


@pytest.mark.parametrize("family", BACKBONES)
def test_per_sample_routing_equals_one_task_at_a_time(digits, family):
    torch.manual_seed(0)
    model = grow(AdaptedModel(BACKBONES[family](), AdapterConfig(placement="houlsby", r=8)), digits, [0, 1, 2])
    randomize_adapters(model)
    model.eval()
    x, _, t = batch(digits, [2, 0, 1])
    perm = torch.randperm(len(x))
    x, t = x[perm], t[perm]
    mixed = model(x, t)
    for task in range(3):
        alone = model(x[t == task], task)
        torch.testing.assert_close(mixed[t == task], alone, rtol=1e-5, atol=1e-6)
    assert not torch.equal(model(x, torch.zeros_like(t)), mixed)  # routing matters


def test_heads_of_different_widths_pad_with_minus_inf():
    from cl_adapters.streams import task_stream

    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 8, 8, generator=g)
    s = task_stream([(x, torch.arange(12) % 2), (x, torch.arange(12) % 3)], [(x, torch.arange(12) % 2), (x, torch.arange(12) % 3)])
    model = grow(AdaptedModel(BACKBONES["mlp"](), AdapterConfig(r=4)), s, [0, 1]).eval()
    out = model(x[:4], torch.tensor([0, 1, 0, 1]))
    assert out.shape == (4, 3) and torch.isinf(out[[0, 2], 2]).all() and torch.isfinite(out[[1, 3]]).all()


@pytest.mark.parametrize("adapter,policy", [(AdapterConfig(r=8), "auto"), (LoraConfig(r=8), "auto"),
                                            (method("lora_pfeiffer"), "auto"), (None, "all")])
def test_earlier_tasks_bit_identical_after_later_tasks(digits, adapter, policy):
    torch.manual_seed(0)
    strategy = ContinualStrategy(
        backbone=BACKBONES["mlp"](),
        model=partial(AdaptedModel, adapter=adapter, train_backbone=policy),
        optimizer=partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.1),
        epochs=1,
        batch_size=64,
    )
    model = strategy.model
    snapshots = []
    for t in range(3):
        strategy.train(digits.train_stream[t])
        snapshots.append({n: p.detach().clone() for n, p in model.task_parameters(t).items()})
        if t == 0:
            backbone0 = {n: p.detach().clone() for n, p in base_parameters(model).items()}
    for t, snap in enumerate(snapshots):
        assert snap and all(torch.equal(model.task_parameters(t)[n], v) for n, v in snap.items())
    backbone_now = base_parameters(model)
    frozen = all(torch.equal(backbone_now[n], v) for n, v in backbone0.items())
    assert frozen is (adapter is not None)  # adapters: frozen after task 1; full_ft: keeps training


@pytest.mark.parametrize("scaling", [1.0, 0.5])
def test_fused_add_equals_the_plain_sum_with_the_same_gradients(scaling):
    from cl_adapters.adapters import Bottleneck

    torch.manual_seed(0)
    adapter = Bottleneck(16, 16, AdapterConfig(r=4, scaling=scaling))
    nn.init.normal_(adapter.up.weight), nn.init.normal_(adapter.up.bias)
    out, x = torch.randn(3, 5, 16, requires_grad=True), torch.randn(3, 5, 16)
    fused = adapter.add_to(out, x)
    grads = torch.autograd.grad(fused.square().sum(), [out, *adapter.parameters()])
    plain = out + adapter(x)
    torch.testing.assert_close(fused, plain)
    with torch.no_grad():  # inference: accumulated into ``out`` itself
        target = out.detach().clone()
        assert adapter.add_to(target, x, inplace=True) is target
        torch.testing.assert_close(target, plain)
    for g, h in zip(grads, torch.autograd.grad(plain.square().sum(), [out, *adapter.parameters()])):
        torch.testing.assert_close(g, h)


def test_one_preset_table_serves_every_adapter_kind():
    from torch import nn

    from cl_adapters.adapters import PRESETS, preset

    assert all(set(kinds) - {"prefix"} == {"houlsby", "pfeiffer", "parallel", "lora"} for kinds in PRESETS.values())
    assert {family for family, kinds in PRESETS.items() if "prefix" in kinds} == {
        "bert", "roberta", "xlm-roberta", "electra", "vit", "deit", "dinov2", "dinov2_with_registers", "clip_vision_model",
        "timm_vit", "patch_transformer"}  # attention with keys and values (BEiT's has a relative position bias)
    unknown = nn.Linear(2, 2)
    unknown.family = "gpt2"
    for kind in ("pfeiffer", "lora"):
        with pytest.raises(UserError, match=rf"no {kind} preset for backbone family 'gpt2': set adapter.targets"):
            preset(unknown, kind)


@pytest.mark.parametrize("family", BACKBONES)
@pytest.mark.parametrize("adapter", ["houlsby", "parallel", "compacter", "lora", "shared lora", "lora_pfeiffer"])
@pytest.mark.parametrize("mixed", [False, True])
def test_no_routing_state_or_hook_outlives_a_forward(digits, family, adapter, mixed):
    """Routing is a value set for one forward: afterwards a direct backbone(x) is the bare backbone,
    and every module has the hooks it had before."""
    from cl_adapters.adapters import Route

    torch.manual_seed(0)
    backbone = BACKBONES[family]()
    bare = copy.deepcopy(backbone).eval()
    model = grow(AdaptedModel(backbone, method(adapter), per_task=adapter != "shared lora", train_backbone="never"),
                 digits, [0, 1])
    with torch.no_grad():  # adapters that change outputs, as after training
        for name, p in model.backbone.named_parameters():
            if ".adapters." in name or "lora_B" in name:
                p.normal_(0, 0.5)
    model.eval()
    x, _, t = batch(digits, [0, 1])
    hooks = {n: (len(m._forward_pre_hooks), len(m._forward_hooks)) for n, m in model.named_modules()}
    adapted = model.features(x, Route.from_labels(t if mixed else 1))
    assert not torch.allclose(adapted, bare(x))
    torch.testing.assert_close(model.backbone(x), bare(x), rtol=0, atol=0)
    assert {n: (len(m._forward_pre_hooks), len(m._forward_hooks)) for n, m in model.named_modules()} == hooks


def test_bottleneck_and_lora_are_adapter_methods_behind_one_interface():
    from cl_adapters.adapters import AdapterMethod, AdapterSet

    for cfg in (AdapterConfig(r=4), method("compacter"), LoraConfig(r=4), method("lora_pfeiffer")):
        assert isinstance(cfg, AdapterMethod)
        adapters = cfg.attach(BACKBONES["mlp"]())
        assert isinstance(adapters, AdapterSet) and ("fusion" in adapters.capabilities) == isinstance(cfg, AdapterConfig)
        adapters.add("0")
        assert adapters.keys() == ["0"] and len(list(adapters.parameters("0"))) > 0


@pytest.mark.parametrize("adapter", ["houlsby", "parallel", "compacter", "lora", "lora_pfeiffer"])
def test_task_state_round_trips_under_another_key(digits, adapter):
    """A task's adapter leaves as named tensors without its key and loads into a fresh model under
    another key: that key's forward is then the original task's, bit for bit (same computation)."""
    from cl_adapters.adapters import Route

    cfg = method(adapter)
    torch.manual_seed(0)
    backbone = BACKBONES["mlp"]()
    fresh = copy.deepcopy(backbone)
    model = grow(AdaptedModel(backbone, cfg, train_backbone="never"), digits, [0, 1])
    with torch.no_grad():
        for name, p in model.backbone.named_parameters():
            if ".adapters." in name or "lora_" in name:
                p.normal_(0, 0.5)
    state = model.adapters.task_state("1")
    assert state and state.keys() == model.adapters.task_state("0").keys()  # no key in the names
    other = cfg.attach(fresh)
    other.load_task_state("7", state)
    assert other.keys() == ["7"]
    x, _, _ = batch(digits, [0])
    with torch.no_grad(), model.adapters.routed(Route.whole("1")):
        expected = model.backbone(x)
    with torch.no_grad(), other.routed(Route.whole("7")):
        assert torch.equal(fresh(x), expected)
    name = sorted(state)[0]
    with pytest.raises(UserError, match=f"tensor {name} has shape"):
        other.load_task_state("7", {**state, name: torch.zeros(3)})
    with pytest.raises(UserError, match="tensor .* is missing"):
        other.load_task_state("7", {k: v for k, v in state.items() if k != name})


def test_merge_folds_a_lora_into_the_base_and_refuses_a_bottleneck(digits):
    from cl_adapters.adapters import Route

    torch.manual_seed(0)
    model = grow(AdaptedModel(BACKBONES["mlp"](), LoraConfig(r=4), train_backbone="never"), digits, [0, 1])
    with torch.no_grad():
        for name, p in model.backbone.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    x, _, _ = batch(digits, [0])
    with torch.no_grad():
        routed = model.features(x, Route.whole("1"))
        model.adapters.merge("1")
        torch.testing.assert_close(model.backbone(x), routed)  # the bare backbone is task 1's model now
        torch.testing.assert_close(model.features(x, Route.whole("1")), routed)
    with pytest.raises(UserError, match=r"merged into the base weights: cannot route to tasks \['0'\]"):
        model.features(x, Route.whole("0"))
    with pytest.raises(UserError, match="already merged"):
        model.adapters.merge("0")
    bottleneck = AdapterConfig(r=4).attach(BACKBONES["mlp"]())
    bottleneck.add("0")
    with pytest.raises(UserError, match="cannot be merged"):
        bottleneck.merge("0")


@pytest.mark.parametrize("family", BACKBONES)
def test_a_combined_adapter_is_its_parts_per_task(digits, family):
    """LoRA + a Pfeiffer adapter: each task owns one of each (LoRA inside the block the adapter wraps, on
    the MLP), a mixed batch trains only the current task's, and what cannot be is refused."""
    from cl_adapters.adapters import FusionConfig

    torch.manual_seed(0)
    combined = grow(AdaptedModel(BACKBONES[family](), method("lora_pfeiffer")), digits, [0, 1, 2])
    parts = [grow(AdaptedModel(BACKBONES[family](), cfg), digits, [0, 1, 2]) for cfg in method("lora_pfeiffer").parts]
    assert [len(list(combined.adapters.parameters(k))) for k in "012"] == [
        sum(len(list(m.adapters.parameters(k))) for m in parts) for k in "012"]
    assert sum(p.numel() for p in combined.adapters.parameters("2")) == sum(
        p.numel() for m in parts for p in m.adapters.parameters("2"))
    with torch.no_grad():
        for name, p in combined.backbone.named_parameters():
            if ".adapters." in name or "lora_B" in name:
                p.normal_(0, 0.5)
    x, y, t = batch(digits, [0, 1, 2])
    nn.functional.cross_entropy(combined(x, t), y).backward()
    got = {n for n, p in combined.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert got == set(combined.task_parameters(2))
    assert any("lora_" in n for n in got) and any(".adapters." in n for n in got)  # both parts train
    with pytest.raises(UserError, match="a combined adapter is served routed"):
        combined.adapters.merge("0")
    with pytest.raises(UserError, match="fusion needs per-task bottleneck adapters"):
        AdaptedModel(BACKBONES[family](), method("lora_pfeiffer"), fusion=FusionConfig())
    with pytest.raises(UserError, match="needs at least two methods, got 1"):
        CombinedConfig([LoraConfig()])
    with pytest.raises(UserError, match="dict is not an adapter method config"):
        CombinedConfig([LoraConfig(), {"r": 4}])


@pytest.mark.parametrize("adapter", ["pfeiffer", "compacter", "lora", "lora_pfeiffer", "prefix"])
def test_an_averaged_adapter_is_the_tasks_parameter_mean_and_leaves_nothing_behind(digits, adapter):
    """Every sample through one adapter whose every tensor is the mean of the tasks' (each with its own
    head); afterwards the model has exactly its task adapters again and routes as before."""
    from cl_adapters.adapters import PrefixConfig, Route

    cfg = PrefixConfig(prefix_length=4, bottleneck=8) if adapter == "prefix" else method(adapter)
    torch.manual_seed(0)
    model = grow(AdaptedModel(BACKBONES["patch_transformer"](), cfg, train_backbone="never"), digits, [0, 1, 2]).eval()
    with torch.no_grad():
        for p in (p for k in model.adapters.keys() for p in model.adapters.parameters(k)):
            p.normal_(0, 0.5)
    x, _, t = batch(digits, [0, 1, 2])
    states = [model.adapters.task_state(k) for k in ("0", "1", "2")]
    before = model(x, t)
    with torch.no_grad(), averaged_adapter(model):
        assert model.adapters.keys() == ["0", "1", "2", "average"]
        average = model.adapters.task_state("average")
        for name, tensor in average.items():
            torch.testing.assert_close(tensor, (states[0][name] + states[1][name] + states[2][name]) / 3)
        averaged = model(x, t)
        with model.adapters.routed(Route.whole("average")):
            features = model.backbone(x)
        torch.testing.assert_close(averaged, model.logits(features, Route.from_labels(t)), rtol=0, atol=0)
    assert model.adapters.keys() == ["0", "1", "2"] and not torch.allclose(averaged, before)
    torch.testing.assert_close(model(x, t), before, rtol=0, atol=0)
    with pytest.raises(UserError, match="two tasks or more"):
        with averaged_adapter(grow(AdaptedModel(BACKBONES["mlp"](), AdapterConfig(r=4)), digits, [0])):
            pass


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_a_stack_applies_its_adapters_in_order(digits, placement):
    """Stack(a, b): b on what a produced (serial) or both beside the block (parallel); a zero adapter on
    top changes nothing; a key without an adapter is skipped."""
    from cl_adapters.adapters import Route, Stack

    torch.manual_seed(0)
    model = grow(AdaptedModel(BACKBONES["patch_transformer"](), AdapterConfig(placement=placement, r=8),
                              train_backbone="never"), digits, [0, 1, 2]).eval()
    randomize_adapters(model)
    with torch.no_grad():
        for layer in model.adapters.layers:
            layer.adapters["2"].up.weight.zero_()
        x, _, _ = batch(digits, [0])

        def features(key):
            with model.adapters.routed(Route.whole(key)):
                return model.backbone(x)

        torch.testing.assert_close(features(Stack(("0", "2"))), features("0"), rtol=0, atol=0)
        torch.testing.assert_close(features(Stack(("0", "9"))), features("0"), rtol=0, atol=0)
        a_then_b, b_then_a = features(Stack(("0", "1"))), features(Stack(("1", "0")))
        assert not torch.allclose(a_then_b, features("0")) and not torch.allclose(a_then_b, features("1"))
        if placement == "parallel":  # both beside the block: the order does not matter
            torch.testing.assert_close(a_then_b, b_then_a)
        else:
            assert not torch.allclose(a_then_b, b_then_a)


def test_stacked_loras_add_up_and_refuse_a_mixed_batch(digits):
    """LoRAs are linear: Stack(a, b) is a merged into the weights, then b."""
    from cl_adapters.adapters import Route, Stack

    torch.manual_seed(0)
    model = grow(AdaptedModel(BACKBONES["patch_transformer"](), LoraConfig(r=4), train_backbone="never"), digits, [0, 1]).eval()
    with torch.no_grad():
        for key in ("0", "1"):
            for p in model.adapters.parameters(key):
                p.normal_(0, 0.3)
        x, _, t = batch(digits, [0, 1])
        with model.adapters.routed(Route.whole(Stack(("0", "1")))):
            stacked = model.backbone(x)
        with pytest.raises(UserError, match="stacked LoRAs are applied to single-task batches only"):
            with model.adapters.routed(Route(((Stack(("0", "1")), torch.tensor([0])), ("1", torch.tensor([1]))))):
                pass
        model.adapters.merge("0")  # then let "1" route on the merged weights: peft adds no LoRA while merged
        model.adapters.merged = None
        for layer in model.adapters.layers:
            layer.merged_adapters = []
        with model.adapters.routed(Route.whole("1")):
            merged_then_b = model.backbone(x)
    torch.testing.assert_close(stacked, merged_then_b, rtol=1e-4, atol=1e-5)


def test_stack_on_routes_later_tasks_through_the_first_tasks_adapter_and_refuses_what_cannot_stack(digits):
    from cl_adapters.adapters import FusionConfig, PrefixConfig, Route, Stack

    torch.manual_seed(0)
    model = grow(AdaptedModel(BACKBONES["mlp"](), AdapterConfig(r=8), train_backbone="never", stack_on=0), digits, [0, 1, 2])
    randomize_adapters(model)
    model.eval()
    x, _, _ = batch(digits, [0])
    with torch.no_grad():
        with model.adapters.routed(Route.whole(Stack(("0", "2")))):
            stacked = model.backbone(x)
        with model.adapters.routed(Route.whole("0")):
            alone = model.backbone(x)
        torch.testing.assert_close(model.features(x, Route.whole("2")), stacked, rtol=0, atol=0)
        torch.testing.assert_close(model.features(x, Route.whole("0")), alone, rtol=0, atol=0)
    model.set_trainable(2)
    assert all(p.requires_grad for p in model.adapters.parameters("2"))
    assert not any(p.requires_grad for k in ("0", "1") for p in model.adapters.parameters(k))
    for kwargs, message in (({"adapter": AdapterConfig(r=8), "stack_on": -1}, "stack_on must be a task index"),
                            ({"adapter": PrefixConfig(), "stack_on": 0}, "stack_on stacks per-task adapters"),
                            ({"adapter": AdapterConfig(r=8), "stack_on": 0, "fusion": FusionConfig()}, "stack_on stacks"),
                            ({"adapter": None, "stack_on": 0}, "stack_on stacks")):
        backbone = BACKBONES["patch_transformer"]()
        with pytest.raises(UserError, match=message):
            AdaptedModel(backbone, kwargs.pop("adapter"), **kwargs)
