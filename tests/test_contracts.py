"""The declared contracts of routers, adapter methods and loggers: every shipped component declares and meets
its own, and one that does not is refused in one line naming what it lacks, when it is built."""

from pathlib import Path

import pytest
import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from cl_adapters import CONFIG_DIR
from cl_adapters.adapters import AdapterConfig, AdapterSet, FusionConfig, LoraConfig
from cl_adapters.adapters.base import CAPABILITIES
from cl_adapters.errors import UserError, check_contract
from cl_adapters.models import MLP, AdaptedModel, PatchTransformer
from cl_adapters.outputs import Logger
from cl_adapters.routers import Router
from cl_adapters.runs.build import build


def targets(group: str) -> dict[str, str]:
    """option -> the ``_target_`` of conf/<group>/<option>.yaml."""
    return {p.stem: OmegaConf.load(p)._target_ for p in sorted((Path(CONFIG_DIR) / group).glob("*.yaml"))
            if "_target_" in OmegaConf.load(p)}


# what the first shipped methods declare: a change here is a change of what users can compose. Not a registry: a
# method added later pins its own capabilities in its own tests (tests/test_<method>.py) and needs no entry here;
# every method, listed or not, is held to what it declares below
CAPABILITIES_OF = {
    "compacter": {"fusion", "stack"}, "houlsby": {"fusion", "stack"}, "parallel": {"fusion", "stack"},
    "pfeiffer": {"fusion", "stack"}, "lora": {"stack", "merge"}, "lora_pfeiffer": {"stack"}, "mam": set(),
    "prefix": set(),
}


# -- routers ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option", sorted(targets("router")))
def test_every_shipped_router_subclasses_router(option):
    cls = get_class(targets("router")[option])
    assert issubclass(cls, Router) and not cls.__abstractmethods__


class NotARouter:  # a user's router that forgot the base class (and with it fit, task_state, load_task_state)
    def predict(self, model, x, task_labels=None):
        return torch.zeros(len(x), dtype=torch.long)


class NoPredict(Router):  # subclasses the base but never says how it routes
    pass


class Latest(Router):
    def predict(self, model, x, task_labels=None):
        return torch.full((len(x),), max(model.trained_tasks), dtype=torch.long)


def _model_node(router: str):
    return OmegaConf.create({"_target_": "cl_adapters.models.AdaptedModel", "_partial_": True, "adapter": None,
                             "scenario": "class_il", "router": {"_target_": router}})


def test_a_router_that_does_not_subclass_router_is_refused_naming_what_it_lacks():
    with pytest.raises(UserError) as error:
        build(_model_node("test_contracts.NotARouter"), "strategy.model")(MLP((1, 8, 8)))
    assert str(error.value) == ("strategy.model.router: test_contracts.NotARouter is not a cl_adapters.routers.base."
                                "Router and lacks fit, task_state, load_task_state: subclass Router")


def test_a_router_without_predict_is_refused_naming_it():
    with pytest.raises(UserError, match=r"^strategy.model: Can't instantiate abstract class NoPredict .*predict"):
        build(_model_node("test_contracts.NoPredict"), "strategy.model")


def test_a_router_writes_predict_alone_and_keeps_nothing_by_default():
    model = AdaptedModel(MLP((1, 8, 8)), AdapterConfig(r=4), scenario="class_il", router=Latest())
    router = model.router
    router.fit(model, 0, [])
    assert router.task_state(0) == {} and router.load_task_state(0, {}) is None


# -- adapter methods ----------------------------------------------------------------------------------------

def _backbone():
    return PatchTransformer((1, 8, 8), patch_size=2, dim=32, depth=1, heads=2)  # has attention: prefixes too


@pytest.mark.parametrize("option", sorted(targets("adapter")))
def test_every_shipped_method_declares_its_capabilities(option):
    adapters = instantiate(OmegaConf.load(Path(CONFIG_DIR) / "adapter" / f"{option}.yaml")).attach(_backbone())
    assert isinstance(adapters, AdapterSet) and not type(adapters).__abstractmethods__
    assert adapters.capabilities == CAPABILITIES_OF.get(option, adapters.capabilities) and adapters.capabilities <= CAPABILITIES
    assert isinstance(adapters.layer_names, list)
    adapters.add("0")
    assert adapters.layer_names and adapters.fusions("0") == []
    if "fusion" not in adapters.capabilities:
        with pytest.raises(UserError, match=f"^adapter {type(adapters).__name__} does not support fusion"):
            adapters.add_fusion("0", ["0"], FusionConfig())
    if "merge" not in adapters.capabilities:
        with pytest.raises(UserError, match=f"^adapter {type(adapters).__name__} does not support merge: "):
            adapters.merge("0")


def test_a_method_without_fusion_or_stack_is_refused_them_when_the_model_is_built():
    with pytest.raises(UserError, match="fusion needs per-task bottleneck adapters"):
        AdaptedModel(MLP((1, 8, 8)), LoraConfig(r=4), fusion=FusionConfig())
    from cl_adapters.adapters import PrefixConfig

    with pytest.raises(UserError, match="strategy.model.stack_on stacks per-task adapters"):
        AdaptedModel(_backbone(), PrefixConfig(), stack_on=0)


class Bare(AdapterSet):
    """The least a method writes: the seven abstract members; fusion, stack and merge left to the defaults."""

    layer_names: list[str] = []

    def add(self, key): ...
    def keys(self): return []
    def parameters(self, key): return iter(())
    def routed(self, route): ...
    def task_state(self, key): return {}
    def load_task_state(self, key, tensors): ...
    def remove(self, key): ...


class Method(AdapterConfig):  # a method config whose attach returns what the test gives it
    def __init__(self, adapters):
        super().__init__()
        self.adapters = adapters

    def attach(self, backbone):
        return self.adapters


def test_a_method_declares_no_capability_by_default_and_refuses_each_in_one_line():
    bare = Bare()
    assert bare.capabilities == frozenset() and bare.fusions("0") == []
    with pytest.raises(UserError) as error:
        bare.add_fusion("0", ["0"], FusionConfig())
    assert str(error.value) == "adapter Bare does not support fusion: it supports none of fusion, merge, stack"
    with pytest.raises(UserError, match="^adapter Bare does not support merge"):
        bare.merge("0")
    AdaptedModel(MLP((1, 8, 8)), Method(bare))  # the contract met: accepted
    with pytest.raises(UserError, match="fusion needs per-task bottleneck adapters"):
        AdaptedModel(MLP((1, 8, 8)), Method(bare), fusion=FusionConfig())


def test_an_adapter_set_that_breaks_the_contract_is_refused_naming_what_it_lacks():
    class Duck:  # not an AdapterSet: a method written against the old protocol, half of it
        def add(self, key): ...
        def keys(self): return []

    with pytest.raises(UserError) as error:
        AdaptedModel(MLP((1, 8, 8)), Method(Duck()))
    assert str(error.value) == (
        "adapter (Method.attach): test_contracts.test_an_adapter_set_that_breaks_the_contract_is_refused_naming_"
        "what_it_lacks.<locals>.Duck is not a cl_adapters.adapters.base.AdapterSet and lacks parameters, routed, "
        "task_state, load_task_state, remove, every_parameter, merge, add_fusion, fusions: subclass AdapterSet")
    odd = Bare()
    odd.capabilities = frozenset({"fusion", "prompt_pool"})
    with pytest.raises(UserError, match=r"unknown capabilities \['prompt_pool'\]; they are \['fusion', 'merge', 'stack'\]"):
        AdaptedModel(MLP((1, 8, 8)), Method(odd))


# -- loggers ------------------------------------------------------------------------------------------------

LOGGERS = sorted({node._target_ for p in (Path(CONFIG_DIR) / "logger").glob("*.yaml")
                  for node in OmegaConf.load(p).values() if "_target_" in node})  # logger.<name>._target_


@pytest.mark.parametrize("target", LOGGERS)
def test_every_shipped_logger_subclasses_logger(target):
    cls = get_class(target)
    assert issubclass(cls, Logger) and not cls.__abstractmethods__


class NoFailure:  # a user's logger that forgot log_failure
    def log_task(self, task, results): ...
    def log_summary(self, results): ...


class Duck(NoFailure):  # a user's logger with all three methods, no base class: accepted as it always was
    tasks: list[int] = []

    def log_task(self, task, results):
        Duck.tasks.append(task)

    def log_failure(self, results): ...


def test_a_logger_without_the_methods_is_refused_naming_the_key_and_them(make_cfg, tmp_path):
    from cl_adapters.runs.run import run

    with pytest.raises(UserError) as error:
        run(make_cfg("+logger.mine._target_=test_contracts.NoFailure"), tmp_path)
    assert str(error.value) == ("logger.mine: test_contracts.NoFailure lacks log_failure (the methods of "
                                "cl_adapters.outputs.logger.Logger)")
    check_contract(Duck(), Logger, "logger.duck", subclass=False)
    run(make_cfg("+logger.duck._target_=test_contracts.Duck", "strategy.epochs=1", "stream.n_tasks=2",
                 "stream.class_order=[0,1,2,3]", "probe_samples=0", "checkpoint=false"), tmp_path / "duck")
    assert Duck.tasks == [0, 1]
