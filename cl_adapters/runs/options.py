"""A run's top-level options, checked before anything is built (a typo must not silently mean false, and a
setting that would do nothing is refused or warned about), and the config-group choices it was composed
from, as its tables and reports name them."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from cl_adapters.errors import UserError
from cl_adapters.runs.build import build
from cl_adapters.runs.references import REFERENCES

RUN_KEYS = ("stream", "model", "strategy", "logger", "plugins", "references", "seed", "scenario", "checkpoint", "resume",
            "progress", "eval_stream", "compositions", "probe_samples", "cache", "cache_dir", "cache_gb")  # what a run reads


def check_run_options(cfg: DictConfig, compositions: Iterable[str]) -> None:
    """Top-level options that nothing else checks, and settings that would do nothing with the rest of the
    config (``compositions``: the names ``compositions=[...]`` may take)."""
    _check_complete(cfg)
    for key in ("checkpoint", "resume", "references.compute", "cache"):
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, bool):
            raise UserError(f"{key} must be true or false, got {value!r}")
    if cfg.compositions is not None and (not OmegaConf.is_list(cfg.compositions) or set(cfg.compositions) - set(compositions)):
        raise UserError(f"compositions must be a list of {list(compositions)}, got {cfg.compositions!r}")
    if cfg.progress not in ("task", "epoch"):
        raise UserError(f"progress must be task or epoch, got {cfg.progress!r}")
    for key, valid in (("seed", range(2**32)), ("probe_samples", range(sys.maxsize))):  # numpy's seeds: < 2**32
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value not in valid:
            raise UserError(f"{key} must be an integer {'in [0, 2**32 - 1]' if key == 'seed' else '>= 0'}, got {value!r}")
    _check_router(cfg)
    _check_fusion(cfg)


def _check_complete(cfg: DictConfig) -> None:
    """Every key a run reads is there (``~stream`` removes one) and every interpolation resolves (``~device``
    leaves ``strategy.device: ${device}`` pointing at nothing)."""
    if missing := [key for key in RUN_KEYS if key not in cfg]:
        raise UserError(f"{missing[0]} is missing from the config (removed by ~{missing[0]}?): every run needs it")
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (InterpolationResolutionError, MissingMandatoryValue) as e:
        raise UserError(f"{e.full_key} cannot be resolved: {str(e).splitlines()[0]}") from None


def _check_router(cfg: DictConfig) -> None:
    """A router picks each test sample's per-task adapter and head where the scenario gives no task label;
    set anywhere else it would do nothing."""
    model = cfg.strategy.get("model") or {}
    if model.get("router") is None:
        return
    router = f"router={choices_router(cfg)}" if cfg.get("router") is not None else "strategy.model.router"
    if model.get("scenario", cfg.scenario) == "task_il":
        raise UserError(f"{router} does nothing with scenario=task_il, where every test sample comes with its task "
                        "label: a router is for scenario=class_il | domain_il")
    if model.get("adapter") is None or not model.get("per_task", True):
        raise UserError(f"{router} does nothing with {_strategy_name(cfg)}: it has no per-task adapters to route "
                        "between (a router is for strategy=adapter | adapter_fusion | lora_per_task)")


def _check_fusion(cfg: DictConfig) -> None:
    """``fusion`` configures strategy=adapter_fusion. With a strategy without fusion its values are still
    checked, and fusion settings on the command line are a one-line warning, not refused: a sweep over
    strategies gives its fusion=... to every one of them (benchmarks/suite.py's sentiment suite)."""
    if (cfg.strategy.get("model") or {}).get("fusion") is not None or cfg.get("fusion") is None:
        return
    build(cfg.fusion, "fusion")
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    given = [o for o in overrides if re.match(r"\+*fusion[.=]", o)]
    if given and cfg.strategy.get("protocol", "sequential") not in REFERENCES:  # none has fusion, by design
        print(f"warning: {' '.join(given)} does nothing: {_strategy_name(cfg)} has no fusion (strategy=adapter_fusion "
              "has)", file=sys.stderr)


def _strategy_name(cfg: DictConfig) -> str:
    name = choices(cfg)["strategy"]
    return "this strategy" if name == "?" else f"strategy={name}"


def check_reference(cfg: DictConfig, protocol: str) -> None:
    """A reference fine-tunes the whole backbone (the strategy refuses plugins on it); anything else
    would poison the cache."""
    model = cfg.strategy.model
    if (model.get("adapter") is not None or model.get("train_backbone", "all") != "all" or model.get("train_biases")
            or model.get("classifier", "linear") != "linear"):
        raise UserError(f"strategy={protocol} is a reference: it fine-tunes the whole backbone "
                        "(strategy.model.adapter=null, train_backbone=all, no train_biases, classifier=linear)")


def choices(cfg: DictConfig) -> dict:
    """The config-group options this run was composed from (for tables and reports)."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    names = {group: choices.get(group, "?") for group in ("stream", "model", "strategy")}
    if cfg.strategy.get("protocol", "sequential") in REFERENCES:  # also a reference trained inside another run
        names["strategy"] = cfg.strategy.protocol
    names["adapter"] = choices.get("adapter", "?") if cfg.strategy.model.get("adapter") else None
    names["fusion"] = choices.get("fusion", "?") if cfg.strategy.model.get("fusion") else None
    names["plugins"] = list(cfg.plugins)
    return names


def choices_router(cfg: DictConfig) -> str:
    """The router's config-group option (``prototype``), as the run's tables name it."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    target = str(cfg.router.get("_target_", "?")).rpartition(".")[2]  # composed without Hydra: OracleRouter -> oracle
    return choices.get("router") or target.removesuffix("Router").lower()
