"""The ``cl-adapters`` Hydra app: stream -> model -> strategy -> accuracy matrix -> results.json.

    cl-adapters stream=split_mnist strategy=full_ft        # one run
    cl-adapters -m strategy=adapter,full_ft seed=0,1,2     # a sweep
"""

from __future__ import annotations

import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import cl_adapters  # noqa: F401  (applies the environment shims before torchvision can load)
from cl_adapters.errors import UserError
from cl_adapters.logging import ProgressBar, write_json_atomic
from cl_adapters.metrics import DEFINITIONS, AccuracyPlugin, CostPlugin, summarize

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")  # the repo's conf/ (editable install)
VERSIONS = ("cl-adapters", "torch", "avalanche-lib", "hydra-core", "numpy", "scikit-learn")


def run(cfg: DictConfig, out_dir: str | Path) -> dict:
    """One continual-learning run. Writes ``out_dir/results.json`` after every task."""
    from avalanche.training.determinism.rng_manager import RNGManager

    RNGManager.set_random_seeds(cfg.seed)
    out = Path(out_dir) / "results.json"
    scenario = _build(cfg.stream, "stream")
    if cfg.eval_stream not in scenario.streams:
        raise UserError(f"eval_stream={cfg.eval_stream!r} is not a stream of this scenario {sorted(scenario.streams)}")
    train_stream, eval_stream = scenario.train_stream, scenario.streams[cfg.eval_stream]
    T = len(train_stream)
    input_shape = tuple(train_stream[0].dataset[0][0].shape)
    backbone = _build(cfg.model, "model", input_shape=input_shape)
    accuracy, costs, loggers = AccuracyPlugin(), CostPlugin(), [_build(c, "logger") for c in cfg.logger.values()]
    strategy = _build(cfg.strategy, "strategy", backbone=backbone, plugins=[accuracy, costs, ProgressBar(T)])

    results = {
        "run": {**_choices(cfg), "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")},
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": {"python": platform.python_version(), **{p: version(p) for p in VERSIONS}},
        "metric_definitions": DEFINITIONS,
        "classes_per_task": getattr(scenario, "classes_per_task", None),
    }

    def evaluate() -> list[float]:
        strategy.eval(eval_stream)
        return [accuracy.last[j] for j in range(T)]

    b = evaluate()  # the untrained model (random heads): GEM's FWT baseline
    R = np.full((T, T), np.nan)
    for i, experience in enumerate(train_stream):
        strategy.train(experience)
        R[i] = evaluate()
        results.update(accuracy_matrix=R.tolist(), untrained_accuracy=b, costs=costs.tasks,
                       metrics=summarize(R[: i + 1, : i + 1], b[: i + 1]))
        write_json_atomic(out, results)
        for logger in loggers:
            logger.log_task(i, results)
    results["run"]["status"] = "complete"
    results["throughput"] = {
        "train_samples_per_s": sum(c["train_samples"] for c in costs.tasks) / sum(c["train_seconds"] for c in costs.tasks),
        "eval_samples_per_s": accuracy.eval_samples / accuracy.eval_seconds,
    }
    write_json_atomic(out, results)
    for logger in loggers:
        logger.log_summary(results)
    print(f"results: {out}")
    return results


def _choices(cfg: DictConfig) -> dict:
    """The config-group options this run was composed from (for tables and reports)."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    names = {group: choices.get(group, "?") for group in ("stream", "model", "strategy")}
    names["adapter"] = choices.get("adapter", "?") if cfg.strategy.model.get("adapter") else None
    return names


def _build(node: DictConfig, name: str, **kwargs):
    """instantiate() with user mistakes turned into one UserError naming the config group."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e
        while cause.__cause__ is not None and not isinstance(cause, UserError):
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise UserError(f"{name}: {' '.join(str(cause).split())}") from e


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        results = run(cfg, HydraConfig.get().runtime.output_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    return results["metrics"]["acc"]  # lets sweepers (e.g. optuna) optimise ACC


if __name__ == "__main__":
    main()
