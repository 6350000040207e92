"""Every option of every config group composes and instantiates."""

from pathlib import Path

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from cl_adapters.metrics import AccuracyPlugin
from cl_adapters import CONFIG_DIR

GROUPS = {
    g: sorted(p.stem for p in (Path(CONFIG_DIR) / g).glob("*.yaml"))
    for g in ("stream", "model", "adapter", "fusion", "strategy", "logger", "plugins", "experiment")
}
SMALL = {  # keep MNIST options quick
    "split_mnist": ["stream.train_per_task=20", "stream.test_per_task=10"],
    "permuted_mnist": ["stream.n_tasks=2", "stream.train_per_task=20", "stream.test_per_task=10"],
    "sentiment_domains": ["model=hf_encoder", "stream.train_per_task=20", "stream.test_per_task=10", "stream.cache_dir=null"],
}


def test_groups_are_not_empty():
    assert GROUPS["stream"] == ["cifar100", "cub200", "imagenet_a", "imagenet_r", "objectnet", "omnibenchmark",
                                "permuted_mnist", "sentiment_domains", "split_digits", "split_mnist", "vtab"]
    assert GROUPS["strategy"] == [
        "adapter", "adapter_fusion", "bitfit", "full_ft", "joint", "lora", "lora_per_task", "ncm", "single_task"
    ]
    assert GROUPS["fusion"] == ["full", "light"]
    assert GROUPS["plugins"] == ["ewc", "ewc_online", "lwf", "replay", "si"]
    assert all(GROUPS.values())


@pytest.mark.parametrize("option", GROUPS["stream"])
def test_streams_instantiate(make_cfg, option, request):
    cfg = make_cfg(f"stream={option}", *SMALL.get(option, []))
    if cfg.stream._target_ == "cl_adapters.streams.cifar100":  # the image streams, on fixtures in their formats
        cfg = make_cfg(f"stream={option}", f"stream.root={request.getfixturevalue('cifar100_root')}")
    elif cfg.stream._target_ == "cl_adapters.streams.image_folder":
        cfg = make_cfg(f"stream={option}", f"stream.root={request.getfixturevalue('image_folder_root')}",
                       "stream.n_classes=6", "stream.increment=3", "stream.image_size=8")
    scenario = instantiate(cfg.stream)
    assert len(scenario.train_stream) >= 2 and scenario.train_stream[0].task_labels == [0]


def _strategy(cfg, input_shape=(1, 8, 8), **kwargs):
    backbone = instantiate(cfg.model, input_shape=input_shape)
    s = instantiate(cfg.strategy, backbone=backbone, monitors=[AccuracyPlugin()], **kwargs)
    s.model.add_task(0, 2)  # LoRA is injected here, on the first task
    return s


def _pretrained(model: str, request) -> list[str]:
    """The pretrained image models on the tiny local checkpoints of conftest (no network here)."""
    if model == "hf_vision":
        return [f"model.name_or_path={request.getfixturevalue('tiny_vit')}"]
    if model == "timm":
        timm = request.getfixturevalue("tiny_timm")
        kwargs = ",".join(f"{k}:{v}" for k, v in timm["model_kwargs"].items())
        return [f"model.name={timm['name']}", "model.pretrained=false", f"model.checkpoint_path={timm['checkpoint_path']}",
                f"model.model_kwargs={{{kwargs}}}"]
    return []


@pytest.mark.parametrize("model", GROUPS["model"])
@pytest.mark.parametrize("adapter", GROUPS["adapter"])
def test_every_adapter_on_every_model(make_cfg, request, model, adapter):
    """Every adapter on every model, except prefixes on the MLP, which has no attention: refused in one line."""
    cfg = make_cfg(f"model={model}", f"adapter={adapter}", "strategy=adapter", *_pretrained(model, request))
    if model == "mlp" and adapter in ("prefix", "mam"):
        with pytest.raises(InstantiationException, match="no prefix preset for backbone family 'mlp'"):
            _strategy(cfg)
        return
    s = _strategy(cfg)
    assert s.train_epochs == cfg.strategy.epochs and s.model.per_task
    assert type(s.model.adapter_config).__name__ == cfg.adapter._target_.rsplit(".", 1)[1]
    assert s.model.adapters.keys() == ["0"] and list(s.model.adapters.parameters("0"))  # the interface, not a method's insides


# what each strategy config means for the model and protocol
EXPECTED = {
    "adapter": dict(adapter="AdapterConfig", per_task=True, train_backbone="first", protocol="sequential", fusion=None),
    "adapter_fusion": dict(adapter="AdapterConfig", per_task=True, train_backbone="first", protocol="sequential",
                           fusion="FusionConfig"),
    "full_ft": dict(adapter=None, train_backbone="all", protocol="sequential"),
    "lora": dict(adapter="LoraConfig", per_task=False, train_backbone="first", protocol="sequential"),
    "lora_per_task": dict(adapter="LoraConfig", per_task=True, train_backbone="first", protocol="sequential"),
    "bitfit": dict(adapter=None, train_biases=True, train_backbone="first", protocol="sequential"),
    "joint": dict(adapter=None, train_backbone="all", protocol="joint"),
    "single_task": dict(adapter=None, train_backbone="all", protocol="single_task"),
    "ncm": dict(adapter=None, train_backbone="first", protocol="sequential", classifier="ncm"),
}


@pytest.mark.parametrize("strategy", GROUPS["strategy"])
def test_every_strategy_instantiates_as_documented(make_cfg, strategy):
    s = _strategy(make_cfg(f"strategy={strategy}"))
    got = dict(
        adapter=type(s.model.adapter_config).__name__ if s.model.adapter_config else None,
        per_task=s.model.per_task,
        train_backbone=s.model.train_backbone,
        train_biases=s.model.train_biases,
        protocol=s.protocol,
        fusion=type(s.model.fusion).__name__ if s.model.fusion else None,
        classifier=s.model.classifier,
    )
    assert {k: got[k] for k in EXPECTED[strategy]} == EXPECTED[strategy]


@pytest.mark.parametrize("option", GROUPS["fusion"])
def test_fusion_options_grow_a_fusion_per_task(make_cfg, option):
    s = _strategy(make_cfg("strategy=adapter_fusion", f"fusion={option}"))
    s.model.add_task(1, 2)
    assert s.model.stages() == 2
    s.model.next_stage()
    fusion = s.model.fusions(1)[0]
    assert fusion.keys == ["0", "1"] and (fusion.value is None) == (option == "light")


@pytest.mark.parametrize("option", GROUPS["plugins"])
@pytest.mark.parametrize("strategy", ["full_ft", "lora"])
def test_plugins_instantiate_with_the_baselines(make_cfg, option, strategy):
    cfg = make_cfg(f"strategy={strategy}", f"plugins=[{option}]")
    plugins = [instantiate(node) for node in cfg.plugins.values()]
    s = _strategy(cfg, plugins=plugins)
    assert s.plugins[0] is plugins[0]


@pytest.mark.parametrize("option", GROUPS["logger"])
def test_loggers_instantiate(make_cfg, option):
    loggers = [instantiate(c) for c in make_cfg(f"logger={option}").logger.values()]
    assert all(hasattr(lg, "log_task") and hasattr(lg, "log_summary") for lg in loggers)


@pytest.mark.parametrize("option", GROUPS["experiment"])
def test_experiments_compose(make_cfg, option):
    cfg = make_cfg(f"experiment={option}")
    assert cfg.stream._target_.startswith("cl_adapters.streams.")


def test_a_backbone_that_does_not_declare_the_contract_is_one_clear_error():
    import pytest
    from torch import nn

    from cl_adapters.errors import UserError
    from cl_adapters.models import AdaptedModel, MLP

    class Mine(nn.Module):  # a user's backbone that forgot the contract
        family = "mlp"
        inputs = "pixels"

    with pytest.raises(UserError) as error:
        AdaptedModel(Mine())
    assert str(error.value) == ("model: Mine must declare pretrained (True or False, got nothing); inputs ('float' or "
                                "'token ids', got 'pixels'); out_features (a positive integer, got nothing) "
                                "(see cl_adapters.models.contract)")
    AdaptedModel(MLP((1, 8, 8)))  # the shipped ones declare it


def test_a_method_brings_its_own_settings_for_a_strategy(make_cfg):
    """adapter_strategy/<method>/<strategy>.yaml applies to that pair only, before an experiment and the
    command line: Compacter's tuned lr with strategy=adapter, not with full_ft nor over an explicit lr."""
    lr = lambda *o: make_cfg(*o).strategy.optimizer.lr  # noqa: E731
    assert lr("adapter=compacter") == 1e-2 and lr("adapter=pfeiffer") == 1e-3
    assert lr("adapter=compacter", "strategy=full_ft") == 1e-3
    assert lr("adapter=compacter", "strategy.optimizer.lr=3e-3") == 3e-3
