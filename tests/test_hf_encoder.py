"""Pretrained encoders: offline loading, injection presets, AdapterHub parity, token cache."""

import copy

import pytest
import torch

from cl_adapters.adapters import AdapterConfig, FusionConfig, inject_adapters
from cl_adapters.errors import UserError
from cl_adapters.models import AdaptedModel, HFEncoder

PLACEMENTS = ["houlsby", "pfeiffer", "parallel"]


@pytest.fixture(scope="module")
def minilm():
    return HFEncoder()  # the packaged all-MiniLM-L6-v2, HF_HUB_OFFLINE=1 (conftest)


def ids(n=4, length=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1000, 5000, (n, length), generator=g)
    x[:, 0] = 101
    x[1:, length // 2 :] = 0  # right padding
    return x


def test_default_encoder_loads_offline(minilm):
    assert minilm.family == "bert" and minilm.out_features == 384
    assert sum(p.numel() for p in minilm.parameters()) == 22_713_216
    assert minilm(ids()).shape == (4, 384)


def test_padding_does_not_change_the_embedding(minilm):
    x = ids(n=2, length=12)
    padded = torch.cat([x, torch.zeros(2, 20, dtype=x.dtype)], dim=1)
    torch.testing.assert_close(minilm(x), minilm(padded), rtol=1e-5, atol=1e-6)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="could not be loaded"):
        HFEncoder(name_or_path=str(tmp_path / "nope"))


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_bert_presets_wrap_the_intended_modules(minilm, placement):
    layers = inject_adapters(copy.deepcopy(minilm), AdapterConfig(placement=placement, r=8))
    per_layer = {
        "houlsby": ["attention.output.dense", "output.dense"],
        "pfeiffer": ["output.dense"],
        "parallel": ["output.dense"],
    }[placement]
    assert list(layers) == [f"model.encoder.layer.{i}.{m}" for i in range(6) for m in per_layer]


def _tiny(tmp_path, kind):
    from transformers import AutoModel, DistilBertConfig, ViTConfig

    config = {
        "distilbert": DistilBertConfig(vocab_size=100, dim=32, hidden_dim=64, n_layers=2, n_heads=2),
        "vit": ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
    }[kind]
    AutoModel.from_config(config).save_pretrained(tmp_path / kind)
    return str(tmp_path / kind)


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("distilbert", {"houlsby": ["attention.out_lin", "ffn.lin2"], "pfeiffer": ["ffn.lin2"], "parallel": ["ffn"]}),
        ("vit", {"houlsby": ["attention.output.dense", "output.dense"], "pfeiffer": ["output.dense"], "parallel": ["output.dense"]}),
    ],
)
def test_other_family_presets_from_a_local_folder(tmp_path, kind, expected):
    path = _tiny(tmp_path, kind)
    prefix = "model.transformer.layer" if kind == "distilbert" else "model.encoder.layer"
    for placement in PLACEMENTS:
        layers = inject_adapters(HFEncoder(name_or_path=path), AdapterConfig(placement=placement, r=4))
        assert list(layers) == [f"{prefix}.{i}.{m}" for i in range(2) for m in expected[placement]]


def _grow(model, tasks):
    for t in tasks:
        model.add_task(t, classes=2)
    return model


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_identity_at_init_and_routing_on_minilm(minilm, placement):
    plain = AdaptedModel(copy.deepcopy(minilm))
    model = _grow(AdaptedModel(copy.deepcopy(minilm), AdapterConfig(placement=placement, r=8)), [0, 1])
    plain.heads = copy.deepcopy(model.heads)
    x, t = ids(), torch.tensor([0, 1, 1, 0])
    model.eval(), plain.eval()
    assert torch.equal(model(x, t), plain(x, t))
    with torch.no_grad():
        for layer in model.adapters.layers:
            for adapter in layer.adapters.values():
                adapter.up.weight.normal_(0, 0.1)
    mixed = model(x, t)
    for task in (0, 1):
        torch.testing.assert_close(mixed[t == task], model(x[t == task], task), rtol=1e-4, atol=1e-5)
        with torch.no_grad():  # inference writes the adapter into the Linear's output in place: same result
            torch.testing.assert_close(model(x[t == task], task), mixed[t == task], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_fusion_on_minilm_routes_and_infers_in_place(minilm, placement):
    model = AdaptedModel(copy.deepcopy(minilm), AdapterConfig(placement=placement, r=8), fusion=FusionConfig(rank=8))
    model.train()
    for task in range(3):
        model.add_task(task, classes=2)
        if model.stages() == 2:
            model.next_stage()
    with torch.no_grad():
        for layer in model.adapters.layers:
            for adapter in layer.adapters.values():
                adapter.up.weight.normal_(0, 0.1)
            for fusion in layer.fusions.values():
                fusion.query.weight.normal_(0, 0.3), fusion.key.weight.normal_(0, 0.3)
    model.eval()
    x, t = ids(6), torch.tensor([2, 0, 1, 2, 1, 0])
    mixed = model(x, t)
    for task in range(3):
        torch.testing.assert_close(mixed[t == task], model(x[t == task], task), rtol=1e-4, atol=1e-5)
        with torch.no_grad():  # in place into the Linear's output: the same
            torch.testing.assert_close(model(x[t == task], task), mixed[t == task], rtol=1e-4, atol=1e-5)
    weights = model.fusion_attention(2)["weights"]
    assert len(weights) == len(model.adapters.layers) and all(abs(sum(w) - 1) < 1e-5 for w in weights)


def test_parallel_adapter_reads_the_ffn_input(minilm):
    """BERT's FFN is intermediate + output.dense: the parallel adapter must see the intermediate's input."""
    from cl_adapters.adapters import BottleneckAdapters, Route

    enc = copy.deepcopy(minilm)
    adapters = BottleneckAdapters(enc, AdapterConfig(placement="parallel", r=8))
    adapters.add("0")
    layer = adapters.layers[adapters.layer_names.index("model.encoder.layer.0.output.dense")]
    seen = {}
    enc.model.encoder.layer[0].intermediate.register_forward_pre_hook(lambda m, a: seen.update(ffn_in=a[0]))
    layer.adapters["0"].down.register_forward_pre_hook(lambda m, a: seen.update(adapter_in=a[0]))
    with adapters.routed(Route.whole("0")):
        enc(ids())
    assert torch.equal(seen["adapter_in"], seen["ffn_in"]) and seen["adapter_in"].shape[-1] == 384
    assert [len(s._forward_pre_hooks) for s in layer.sources] == [1]  # the test's own: the routing hook is gone


@pytest.mark.parametrize(
    "placement,hub_config",
    [("pfeiffer", "SeqBnConfig"), ("houlsby", "DoubleSeqBnConfig"), ("parallel", "ParBnConfig")],
)
def test_trainable_params_equal_adapterhub(minilm, placement, hub_config):
    adapters = pytest.importorskip("adapters")
    from transformers import AutoModel

    hub = AutoModel.from_pretrained(minilm.name_or_path)
    adapters.init(hub)
    hub.add_adapter("task", config=getattr(adapters, hub_config)(reduction_factor=16))
    hub.train_adapter("task")
    theirs = sum(p.numel() for p in hub.parameters() if p.requires_grad)

    model = _grow(AdaptedModel(copy.deepcopy(minilm), AdapterConfig(placement=placement, r=384 // 16)), [0])
    ours = sum(p.numel() for n, p in model.task_parameters(0).items() if not n.startswith("heads."))
    assert ours == theirs


def test_tokenisation_is_cached(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from cl_adapters.streams.text import tokenize_cached

    from cl_adapters.models import default_encoder_path

    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    texts = ["a fine film", "dull and far too long", "meh"]
    first = tokenize_cached(texts, tok, 16, str(tmp_path))
    assert first.shape == (3, 16) and len(list(tmp_path.glob("*.safetensors"))) == 1

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenised again instead of reading the cache")

    monkeypatch.setattr(type(tok), "__call__", no_tokenizing)
    assert torch.equal(tokenize_cached(texts, tok, 16, str(tmp_path)), first)
    with pytest.raises(AssertionError, match="tokenised again"):  # another max_length is another key
        tokenize_cached(texts, tok, 8, str(tmp_path))
    (cached,) = tmp_path.glob("*.safetensors")
    cached.write_bytes(cached.read_bytes()[:50])  # truncated: read as a miss, never as data
    with pytest.raises(AssertionError, match="tokenised again"):
        tokenize_cached(texts, tok, 16, str(tmp_path))


def test_sentiment_domains_stream(tmp_path):
    from cl_adapters.streams import sentiment_domains

    s = sentiment_domains(train_per_task=40, test_per_task=20, max_length=32, cache_dir=str(tmp_path))
    assert [e.n_classes for e in s.train_stream] == [2, 2, 3]
    assert [len(e.dataset) for e in s.test_stream] == [20, 20, 20]
    x, y, t = s.train_stream[2].dataset[0]
    assert x.dtype == torch.int64 and x.shape == (32,) and t == 2 and int(y) in (0, 1, 2)
    assert s.classes_per_task[2] == ["negative", "neutral", "positive"]


def test_lora_and_pfeiffer_together_on_minilm(minilm):
    """adapter=lora_pfeiffer on MiniLM: a LoRA on every query/value and a Pfeiffer adapter after every FFN,
    per task (r=8 LoRA: 6 x 2 x 2 x 384 x 8; r=64 adapter: 6 x (384 x 64 + 64 + 64 x 384 + 384)); identity at
    init, and a mixed batch is each task's own pair."""
    from cl_adapters.adapters import CombinedConfig, LoraConfig, Route

    cfg = CombinedConfig([LoraConfig(r=8), AdapterConfig(placement="pfeiffer", r=64)])
    model = _grow(AdaptedModel(copy.deepcopy(minilm), cfg), [0, 1]).eval()
    assert sum(p.numel() for p in model.adapters.parameters("1")) == 6 * 2 * 2 * 384 * 8 + 6 * (384 * 64 + 64 + 64 * 384 + 384)
    x, t = ids(), torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        bare = model.logits(model.backbone(x), Route.from_labels(t))
        assert torch.equal(model(x, t), bare)
        for name, p in model.backbone.named_parameters():
            if ".adapters." in name or "lora_B" in name:
                p.normal_(0, 0.05)
        mixed = model(x, t)
        assert not torch.allclose(mixed, bare, atol=1e-3)
        for task in (0, 1):
            torch.testing.assert_close(mixed[t == task], model(x[t == task], task), rtol=1e-4, atol=1e-5)


def test_mam_on_minilm_as_shipped(minilm):
    """conf/adapter/mam.yaml on MiniLM: AdapterHub's MAMConfig count (prefixes: 30 x 384 + 384 x 800 + 800 +
    800 x 6 x 2 x 384 + 6 x 2 x 384; parallel r=192: 6 x (2 x 384 x 192 + 192 + 384)); a mixed batch is
    each task's own prefixes and adapter."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from cl_adapters import CONFIG_DIR

    cfg = instantiate(OmegaConf.load(f"{CONFIG_DIR}/adapter/mam.yaml"))
    model = _grow(AdaptedModel(copy.deepcopy(minilm), cfg), [0, 1]).eval()
    prefixes = 30 * 384 + 384 * 800 + 800 + 800 * 6 * 2 * 384 + 6 * 2 * 384
    assert sum(p.numel() for p in model.adapters.parameters("1")) == prefixes + 6 * (2 * 384 * 192 + 192 + 384) == 4_898_720
    x, t = ids(), torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        for name, p in model.backbone.named_parameters():
            if ".adapters." in name:
                p.normal_(0, 0.05)
        mixed = model(x, t)
        for task in (0, 1):
            torch.testing.assert_close(mixed[t == task], model(x[t == task], task), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(model(x, 0), model(x, 1), atol=1e-3)


def test_dropout_sets_every_dropout_probability_of_the_encoder(tiny_bert):
    """model.dropout=0: a frozen encoder without dropout (a method choice): two training-mode forwards agree;
    null keeps the checkpoint's own (0.1 here), so they differ."""
    ids = torch.randint(1, 100, (4, 12), generator=torch.Generator().manual_seed(0))
    kept, off = HFEncoder(name_or_path=tiny_bert).train(), HFEncoder(name_or_path=tiny_bert, dropout=0.0).train()
    assert kept.model.config.hidden_dropout_prob == 0.1 and off.model.config.attention_probs_dropout_prob == 0.0
    assert not torch.equal(kept(ids), kept(ids))
    assert torch.equal(off(ids), off(ids))
    torch.testing.assert_close(off(ids), kept.eval()(ids))  # the same weights: eval mode has no dropout either
    for bad in (1.0, -0.1, "0.1", True):
        with pytest.raises(UserError, match="model.dropout must be in .0, 1. or null"):
            HFEncoder(name_or_path=tiny_bert, dropout=bad)
