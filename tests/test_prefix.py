"""Prefix tuning and the Mix-and-Match adapter (prefixes + a scaled parallel adapter): routing per sample
on both kinds of attention layer, parameter parity with AdapterHub, refusals, a whole run."""

import pytest
import torch

from cl_adapters.adapters import AdapterConfig, AdapterSet, CombinedConfig, PrefixConfig, Route
from cl_adapters.errors import UserError
from cl_adapters.models import MLP, PatchTransformer
from cl_adapters.models.hf_encoder import HFEncoder


def mam(r: int) -> CombinedConfig:
    """AdapterHub's MAMConfig in ours: PrefixTuningConfig(bottleneck_size=800) + ParBnConfig (scaling 4)."""
    return CombinedConfig([PrefixConfig(bottleneck=800), AdapterConfig(placement="parallel", r=r, scaling=4.0)])


def bert(path: str, attention: str) -> HFEncoder:
    from transformers import AutoModel

    encoder = HFEncoder(name_or_path=path)
    encoder.model = AutoModel.from_pretrained(path, attn_implementation=attention)
    return encoder.eval()


def token_ids(padded: bool) -> torch.Tensor:
    ids = torch.randint(1, 100, (4, 7), generator=torch.Generator().manual_seed(0))
    if padded:
        ids[0, 4:] = 0  # the pad id: the attention mask must cover the prefixes too
    return ids


@pytest.mark.parametrize("backbone", ["bert eager", "bert sdpa", "bert sdpa padded", "patch_transformer"])
def test_each_sample_attends_to_its_own_tasks_prefixes(backbone, tiny_bert):
    """A mixed batch is each task's prefixes per sample; a task without a prefix is the bare model; after
    the routed forward no prefix, hook or mask change is left."""
    torch.manual_seed(0)
    if backbone.startswith("bert"):
        model, x = bert(tiny_bert, backbone.split()[1]), token_ids("padded" in backbone)
    else:
        model, x = PatchTransformer((1, 8, 8), patch_size=2, dim=32, depth=2, heads=2).eval(), torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        bare = model(x)
        hooks = {n: len(m._forward_pre_hooks) for n, m in model.named_modules()}
        prefixes = PrefixConfig(prefix_length=5, bottleneck=16).attach(model)
        assert isinstance(prefixes, AdapterSet) and "fusion" not in prefixes.capabilities
        prefixes.add("0"), prefixes.add("1")
        torch.testing.assert_close(model(x), bare, rtol=0, atol=0)  # the wrapped projections alone change nothing
        alone = {}
        for key in ("0", "1"):
            with prefixes.routed(Route.whole(key)):
                alone[key] = model(x)
            assert not torch.allclose(alone[key], bare)
        with prefixes.routed(Route.from_labels(torch.tensor([0, 1, 0, 2]))):  # task 2 has no prefix
            mixed = model(x)
        with prefixes.routed(Route.whole("2")):
            untrained = model(x)
    torch.testing.assert_close(mixed[[0, 2]], alone["0"][[0, 2]])
    torch.testing.assert_close(mixed[1], alone["1"][1])
    torch.testing.assert_close(mixed[3], bare[3])
    torch.testing.assert_close(untrained, bare, rtol=0, atol=0)
    torch.testing.assert_close(model(x), bare, rtol=0, atol=0)
    assert {n: len(m._forward_pre_hooks) for n, m in model.named_modules() if n in hooks} == hooks


def test_a_tasks_prefixes_are_its_encoder_and_train_through_the_frozen_base():
    """(layers, 2, P, dim) from one encoder per task; gradients reach only the routed task's encoder."""
    model = PatchTransformer((1, 8, 8), patch_size=2, dim=32, depth=3, heads=2)
    prefixes = PrefixConfig(prefix_length=4, bottleneck=8).attach(model)
    prefixes.add("0"), prefixes.add("1")
    assert prefixes.encoders["0"]().shape == (3, 2, 4, 32)
    with prefixes.routed(Route.whole("1")):
        model(torch.randn(2, 1, 8, 8)).sum().backward()
    assert all(p.grad is None for p in prefixes.parameters("0"))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prefixes.parameters("1"))


def test_mam_has_adapterhubs_parameter_count(tiny_bert):
    """Trainable parameters per task equal AdapterHub's for MAMConfig and for PrefixTuningConfig alone."""
    import adapters
    from transformers import AutoModel

    def theirs(config) -> int:
        model = AutoModel.from_pretrained(tiny_bert)
        adapters.init(model)
        model.add_adapter("t", config=config)
        (row,) = [r for r in model.adapter_summary(as_dict=True) if r["name"] == "t"]
        return row["#param"]

    def ours(config) -> int:
        added = config.attach(HFEncoder(name_or_path=tiny_bert))
        added.add("0")
        return sum(p.numel() for p in added.parameters("0"))

    assert ours(mam(r=16)) == theirs(adapters.MAMConfig()) == 132_032  # hidden 32: reduction factor 2 -> r = 16
    assert ours(PrefixConfig()) == theirs(adapters.PrefixTuningConfig()) == 30 * 32 + 32 * 512 + 512 + 512 * 2 * 2 * 32 + 2 * 2 * 32


def test_refusals():
    with pytest.raises(UserError, match=r"no prefix preset for backbone family 'mlp'.*'patch_transformer'"):
        PrefixConfig().attach(MLP((1, 8, 8)))
    with pytest.raises(UserError, match=r"blocks.0.ffn \(FeedForward\) is not an attention layer"):
        PrefixConfig(targets=[r"blocks\.0\.ffn"]).attach(PatchTransformer((1, 8, 8), patch_size=2, dim=32, depth=1, heads=2))
    with pytest.raises(UserError, match="cannot be merged"):
        PrefixConfig().attach(PatchTransformer((1, 8, 8), patch_size=2, dim=32, depth=1, heads=2)).merge("0")
    for bad in ({"prefix_length": 0}, {"bottleneck": 2.5}, {"activation": "nope"}, {"dropout": 1.0}, {"targets": []}):
        with pytest.raises(UserError, match="adapter."):
            PrefixConfig(**bad)


def test_a_mam_run_forgets_nothing_and_loads_back(make_cfg, tmp_path):
    """adapter=mam on split_digits (patch transformer): task-IL BWT exactly 0, and the run loads back with
    the accuracies it measured."""
    from cl_adapters.runs.inference import load_run, predict
    from cl_adapters.runs.run import run
    from cl_adapters.streams import split_digits

    cfg = make_cfg("adapter=mam", "model=patch_transformer", "model.dim=32", "model.depth=2", "adapter.parts.1.r=16",
                   "adapter.parts.0.bottleneck=64", "strategy.epochs=1", "probe_samples=0")
    results = run(cfg, tmp_path / "run")
    R = results["accuracy_matrix"]
    assert results["metrics"]["bwt"] == 0 and all(R[i][j] == R[j][j] for j in range(5) for i in range(j, 5))
    model = load_run(tmp_path / "run")
    for task, experience in enumerate(split_digits(n_tasks=5, seed=0).test_stream):
        samples = list(experience.dataset)
        x, y = torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples])
        assert int((predict(model, x, task) == y).sum()) / len(y) == R[-1][task]
