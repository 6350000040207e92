"""Every option of every config group composes and instantiates."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from cl_adapters.metrics import AccuracyPlugin
from cl_adapters.run import CONFIG_DIR

GROUPS = {g: sorted(p.stem for p in (Path(CONFIG_DIR) / g).glob("*.yaml")) for g in ("stream", "model", "adapter", "strategy", "logger", "experiment")}
SMALL = {  # keep MNIST options quick
    "split_mnist": ["stream.train_per_task=20", "stream.test_per_task=10"],
    "permuted_mnist": ["stream.n_tasks=2", "stream.train_per_task=20", "stream.test_per_task=10"],
    "sentiment_domains": ["model=hf_encoder", "stream.train_per_task=20", "stream.test_per_task=10", "stream.cache_dir=null"],
}


def test_groups_are_not_empty():
    assert GROUPS["stream"] == ["permuted_mnist", "sentiment_domains", "split_digits", "split_mnist"]
    assert GROUPS["strategy"] == ["adapter", "full_ft"]
    assert all(GROUPS.values())


@pytest.mark.parametrize("option", GROUPS["stream"])
def test_streams_instantiate(make_cfg, option):
    cfg = make_cfg(f"stream={option}", *SMALL.get(option, []))
    scenario = instantiate(cfg.stream)
    assert len(scenario.train_stream) >= 2 and scenario.train_stream[0].task_labels == [0]


@pytest.mark.parametrize("model", GROUPS["model"])
@pytest.mark.parametrize("adapter", GROUPS["adapter"])
@pytest.mark.parametrize("strategy", GROUPS["strategy"])
def test_model_adapter_strategy_instantiate(make_cfg, model, adapter, strategy):
    cfg = make_cfg(f"model={model}", f"adapter={adapter}", f"strategy={strategy}")
    backbone = instantiate(cfg.model, input_shape=(1, 8, 8))
    s = instantiate(cfg.strategy, backbone=backbone, plugins=[AccuracyPlugin()])
    assert s.train_epochs == cfg.strategy.epochs
    if strategy == "adapter":
        assert s.model.adapter_config.placement == adapter and s.model.adapter_layers
    else:
        assert s.model.adapter_config is None and s.model.train_backbone == "all"


@pytest.mark.parametrize("option", GROUPS["logger"])
def test_loggers_instantiate(make_cfg, option):
    loggers = [instantiate(c) for c in make_cfg(f"logger={option}").logger.values()]
    assert all(hasattr(lg, "log_task") and hasattr(lg, "log_summary") for lg in loggers)


@pytest.mark.parametrize("option", GROUPS["experiment"])
def test_experiments_compose(make_cfg, option):
    cfg = make_cfg(f"experiment={option}")
    assert cfg.stream._target_.startswith("cl_adapters.streams.")
