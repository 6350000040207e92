"""Compacter (adapters/compacter/): the PHM product, one shared rule per task, identity at init,
AdapterHub's parameter count, fusion, checkpoints through the adapter-method interface, and a run."""


import pytest
import torch
from torch import nn

from cl_adapters.adapters import FusionConfig, Route
from cl_adapters.adapters.compacter import CompacterConfig, PHMLinear
from cl_adapters.errors import UserError
from cl_adapters.models import MLP, AdaptedModel, HFEncoder

SHAPE = (1, 8, 8)


def mlp():
    torch.manual_seed(0)
    return MLP(SHAPE, hidden=(32, 32))


def grow(model, tasks):
    for t in tasks:
        model.add_task(t, classes=2)
    return model


def trained(model):
    """Non-zero up-projections (as after training), so that adapters change outputs."""
    with torch.no_grad():
        for name, p in model.backbone.named_parameters():
            if ".adapters." in name and ".up." in name:
                p.normal_(0, 0.5)
    return model


def test_phm_weight_is_the_sum_of_kronecker_products():
    torch.manual_seed(0)
    rule = nn.Parameter(torch.randn(4, 4, 4))
    layer = PHMLinear(12, 8, rule, rank=2)
    b = [layer.left[i] @ layer.right[i] for i in range(4)]  # (in/n, out/n)
    h = sum(torch.kron(rule[i], b[i]) for i in range(4))  # (in, out): y = x H + bias
    torch.testing.assert_close(layer.weight, h.t())
    x = torch.randn(5, 12)
    torch.testing.assert_close(layer(x), x @ h + layer.bias)
    assert PHMLinear(12, 8, rule, rank=1, zero=True).weight.abs().sum() == 0


def test_one_rule_per_task_shared_by_every_layer_and_identity_at_init():
    model = grow(AdaptedModel(mlp(), CompacterConfig(r=8), train_backbone="never"), [0, 1])
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(model.features(x, Route.whole("1")), model.backbone(x), rtol=0, atol=0)
    rules = {key: {id(a.down.rule) for layer in model.adapters.layers for a in [layer.adapters[key]]}
             | {id(a.up.rule) for layer in model.adapters.layers for a in [layer.adapters[key]]}
             for key in ("0", "1")}
    assert all(len(ids) == 1 for ids in rules.values()) and rules["0"] != rules["1"]
    names = [n for n in model.state_dict() if n.endswith(".rule")]
    assert len(names) == 2  # held once per task (first layer), not once per layer
    own = list(model.adapters.parameters("1"))
    assert sum(p is model.adapters.layers[0].adapters["1"].rule for p in own) == 1
    # a step moves the rule everywhere: every layer reads the one parameter
    model.train()
    trained(model)
    loss = model(x, 1).sum()
    loss.backward()
    rule = model.adapters.layers[0].adapters["1"].rule
    assert rule.grad is not None and rule.grad.abs().sum() > 0
    assert model.adapters.layers[-1].adapters["1"].up.rule is rule


@pytest.mark.parametrize("placement,hub_config", [("houlsby", "CompacterConfig"), ("pfeiffer", "CompacterPlusPlusConfig")])
def test_trainable_params_equal_adapterhub_on_minilm(placement, hub_config):
    adapters = pytest.importorskip("adapters")
    from transformers import AutoModel

    minilm = HFEncoder()
    hub = AutoModel.from_pretrained(minilm.name_or_path)
    adapters.init(hub)
    hub.add_adapter("task", config=getattr(adapters, hub_config)())  # reduction factor 32: r = 384 / 32
    hub.train_adapter("task")
    theirs = sum(p.numel() for p in hub.parameters() if p.requires_grad)

    model = grow(AdaptedModel(minilm, CompacterConfig(placement=placement, r=384 // 32)), [0])
    ours = sum(p.numel() for n, p in model.task_parameters(0).items() if not n.startswith("heads."))
    assert ours == theirs == sum(p.numel() for p in model.adapters.parameters("0"))


def test_fewer_parameters_than_a_pfeiffer_adapter_of_the_same_width():
    from cl_adapters.adapters import AdapterConfig

    def count(cfg):
        model = grow(AdaptedModel(MLP(SHAPE, hidden=(256, 256)), cfg, train_backbone="never"), [0])
        return sum(p.numel() for p in model.adapters.parameters("0"))

    assert count(CompacterConfig(r=64)) * 20 < count(AdapterConfig(placement="pfeiffer", r=64))


def test_mixed_batch_routing_and_fusion_over_compacters():
    """Compacters fuse like bottleneck adapters (their PHM weights are Linear-like): the fast fusion
    equals the paper's form computed literally from each adapter's output."""
    model = grow(AdaptedModel(mlp(), CompacterConfig(r=8), train_backbone="never",
                              fusion=FusionConfig(rank=None, temperature=2.0)), [0])
    model.add_task(1, classes=2)
    model.next_stage()
    trained(model).eval()
    x, t = torch.randn(6, *SHAPE), torch.tensor([1, 0, 1, 0, 0, 1])
    mixed = model(x, t)
    for task in (0, 1):
        torch.testing.assert_close(mixed[t == task], model(x[t == task], task), rtol=1e-4, atol=1e-5)
    layer = model.adapters.layers[0]
    fusion, adapters = layer.fusions["1"], [layer.adapters[k] for k in ("0", "1")]
    with torch.no_grad():
        for p in fusion.parameters():
            nn.init.normal_(p, std=0.3)
        h = torch.randn(4, layer.out_dim)
        deltas = torch.stack([a(h) for a in adapters], -2)
        scores = (fusion.query(h).unsqueeze(-2) * fusion.key(deltas)).sum(-1) / fusion.temperature
        expected = h + (scores.softmax(-1).unsqueeze(-1) * fusion.value(deltas)).sum(-2)
        torch.testing.assert_close(fusion(h, None, adapters), expected, rtol=1e-5, atol=1e-5)


def test_task_file_round_trip_reproduces_outputs(tmp_path):
    from cl_adapters.models import checkpoint

    model = trained(grow(AdaptedModel(mlp(), CompacterConfig(r=8), train_backbone="never"), [0, 1])).eval()
    checkpoint.save(model, tmp_path)
    fresh = checkpoint.load(AdaptedModel(mlp(), CompacterConfig(r=8), train_backbone="never"), tmp_path).eval()
    x, t = torch.randn(5, *SHAPE), torch.tensor([0, 1, 1, 0, 1])
    assert torch.equal(fresh(x, t), model(x, t))
    rule = fresh.adapters.layers[0].adapters["1"].rule
    assert fresh.adapters.layers[1].adapters["1"].down.rule is rule  # still one shared parameter after loading


@pytest.mark.parametrize("bad,match", [
    (dict(r=10), "multiple of adapter.phm_dim"),
    (dict(phm_dim=0), "phm_dim must be a positive integer"),
    (dict(phm_rank=1.5), "phm_rank must be a positive integer"),
    (dict(placement="middle"), "placement must be one of"),
])
def test_config_refuses_impossible_values(bad, match):
    with pytest.raises(UserError, match=match):
        CompacterConfig(**bad)


def test_widths_not_divisible_by_phm_dim_are_named():
    with pytest.raises(UserError, match=r"phm_dim=8 does not divide the widths of layers\.0 \(36 -> 36\)"):
        CompacterConfig(r=8, phm_dim=8).attach(MLP(SHAPE, hidden=(36, 36)))


@pytest.mark.slow
def test_split_digits_run(make_cfg, tmp_path):
    """The acceptance run, at the learning rate chosen on validation data (conf/adapter/compacter.yaml)."""
    from cl_adapters.runs.run import run

    results = run(make_cfg("adapter=compacter", "strategy.optimizer.lr=1e-2"), tmp_path)
    assert results["metrics"]["bwt"] == 0.0 and results["metrics"]["acc"] >= 0.95
    pfeiffer = 2 * (256 * 64 + 64 + 64 * 256 + 256) + 256 * 2 + 2  # two adapters (r=64) and a head
    assert results["costs"][1]["trainable_params"] * 10 < pfeiffer
