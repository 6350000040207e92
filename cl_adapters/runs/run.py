"""One continual-learning run: stream -> model -> strategy -> accuracy matrix -> results.json.

``run(cfg, out_dir)`` is the library entry point (tests, notebooks); ``cl_adapters.runs.cli`` is the
``cl-adapters`` command around it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict

import cl_adapters  # noqa: F401  (applies the environment shims before torchvision can load)
from cl_adapters.errors import UserError, check_contract, one_line
from cl_adapters.metrics import DEFINITIONS, AccuracyPlugin, CostPlugin, FusionAttention
from cl_adapters.models.compositions import averaged_adapter
from cl_adapters.models.contract import check_inputs
from cl_adapters.models.feature_cache import FeatureCache
from cl_adapters.outputs import Logger, ProgressBar, plot_fusion_attention, write_json_atomic
from cl_adapters.runs import plugin_state
from cl_adapters.runs.build import build
from cl_adapters.runs.evaluator import Evaluator
from cl_adapters.runs.options import check_reference, check_run_options, choices, choices_router
from cl_adapters.runs.references import (REFERENCES, ReferenceCache, reference_model, reference_optimizer,
                                         reference_strategy)
from cl_adapters.runs.resume import Checkpoints
from cl_adapters.runs.rundir import RunDir, new_run_id

COMPOSITIONS = {"average": averaged_adapter}  # name -> its context on the model
VERSIONS = ("cl-adapters", "torch", "avalanche-lib", "hydra-core", "numpy", "scikit-learn")



def run(cfg: DictConfig, out_dir: str | Path) -> dict:
    """One continual-learning run in ``out_dir`` (locked for its lifetime). Writes ``results.json``
    after every task; whatever stops the run is recorded there (status failed or interrupted, with the
    error), the W&B run is finished as failed, and the exception goes on to the caller."""
    out_dir = Path(out_dir)
    with RunDir(out_dir):
        (out_dir / "error.txt").unlink(missing_ok=True)  # an earlier attempt's
        results = {"run": {"id": new_run_id(), "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")}}
        loggers: list = []
        try:
            with _reference_lock(cfg):  # a reference holds its cache entry's lock while it trains
                return _run(cfg, out_dir, results, loggers)
        except BaseException as e:
            _record_failure(out_dir / "results.json", results, e, loggers)
            raise


def _run(cfg: DictConfig, out_dir: Path, results: dict, loggers: list) -> dict:
    """The run itself; fills ``results`` and ``loggers`` as it goes, so a failure can record them."""
    from avalanche.training.determinism.rng_manager import RNGManager

    check_run_options(cfg, COMPOSITIONS)
    protocol = cfg.strategy.get("protocol", "sequential")
    if protocol in REFERENCES:
        cfg = copy.deepcopy(cfg)
        cfg.strategy.optimizer = reference_optimizer(cfg)
    results["run"].update(choices(cfg))
    results.update({
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": {"python": platform.python_version(), **{p: version(p) for p in VERSIONS}},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability()},  # AVX2 | AVX512: results differ
        "metric_definitions": DEFINITIONS,
    })
    for name, node in cfg.logger.items():
        logger = build(node, f"logger.{name}")
        check_contract(logger, Logger, f"logger.{name}", subclass=False)  # before a failure would call it
        loggers.append(logger)
    if protocol in REFERENCES:
        check_reference(cfg, protocol)
    RNGManager.set_random_seeds(cfg.seed)
    out = out_dir / "results.json"
    scenario = build(cfg.stream, "stream")
    if cfg.eval_stream not in scenario.streams:
        raise UserError(f"eval_stream={cfg.eval_stream!r} is not a stream of this scenario {sorted(scenario.streams)}")
    if (kind := getattr(scenario, "kind", "task_il")) != cfg.scenario:
        raise UserError(f"the stream (stream._target_={cfg.stream._target_}) built a {kind} stream, not scenario="
                        f"{cfg.scenario}: pass scenario: ${{scenario}} in its config to its scenario argument")
    train_stream, eval_stream = scenario.train_stream, scenario.streams[cfg.eval_stream]
    T = len(train_stream)
    sample = train_stream[0].dataset[0][0]
    input_shape = tuple(sample.shape)
    backbone_class = None
    with contextlib.suppress(ImportError, ValueError, AttributeError):  # no or an unknown target: build reports it
        backbone_class = get_class(cfg.model._target_)
    check_inputs(backbone_class, sample)
    backbone = build(cfg.model, "model", input_shape=input_shape)
    if getattr(scenario, "augmented", False) and hasattr(backbone, "preprocess"):
        backbone.preprocess.augment = False  # the stream's loader augments its training images already
    plugins = [build(node, f"plugins.{name}") for name, node in cfg.plugins.items()]
    for name, plugin in zip(cfg.plugins, plugins):
        plugin_state.check_settings(name, plugin)
    accuracy, costs, attention = AccuracyPlugin(), CostPlugin(), FusionAttention()
    strategy = build(cfg.strategy, "strategy", backbone=backbone, plugins=plugins,
                      monitors=[accuracy, costs, attention, ProgressBar(T, cfg.progress == "epoch")])
    cache = ReferenceCache(cfg.references.dir)
    references = {} if protocol in REFERENCES else _references(cfg, cache, out_dir, results)
    RNGManager.set_random_seeds(cfg.seed)  # the same data order whether or not a reference was trained first

    results["machine"].update(device=str(strategy.device), precision=strategy.precision)
    model = strategy.model
    if cfg.cache and backbone.pretrained:  # a from-scratch backbone's features cost less than their hashes
        model.feature_cache = FeatureCache(cfg.cache_dir, OmegaConf.to_container(cfg.model, resolve=True), cfg.cache_gb)
    if cfg.compositions and (model.adapters is None or not model.per_task):
        raise UserError(f"compositions={list(cfg.compositions)} composes per-task adapters: strategy=adapter | "
                        "adapter_fusion | lora_per_task")
    results["run"]["router"] = choices_router(cfg) if getattr(model, "router", None) is not None else None
    results.update({
        "scenario": cfg.scenario,
        "classes_per_task": getattr(scenario, "classes_per_task", None),
        "class_order": class_order(scenario),
        "references": {p: {k: ref[k] for k in ("key", "fields", "diagonal", "run_dir")} for p, ref in references.items()},
    })
    evaluator = Evaluator(cfg, strategy, accuracy, train_stream, eval_stream, references, protocol in REFERENCES)
    results.update(evaluator.first_results())
    checkpoints, done = None, 0
    if cfg.checkpoint:
        checkpoints = Checkpoints(out_dir, results["config"], input_shape, run_id=results["run"]["id"],
                                  input_dtype=str(sample.dtype).removeprefix("torch."))
        if cfg.resume and (last := checkpoints.resume(strategy.model, plugins)) is not None:
            done = _restore(last["results"], results, [costs, attention])
            evaluator.restore(last["results"], done)
            results["run"]["id"] = checkpoints.run_id  # the chain's: this is the same run, continued
            strategy.restore_experiences([train_stream[k] for k in range(done)])
            print(f"resumed from {checkpoints.dir} after task {done}/{T} (run {checkpoints.run_id})")
        else:
            checkpoints.clear()
    else:
        _leave_no_other_chain(cfg, out_dir)
    write_json_atomic(out, results)  # before training: an unwritable run dir fails now, not after task 1
    for i, experience in enumerate(train_stream):
        if i < done:
            continue
        evaluator.before_task(i)
        strategy.train(experience)
        results.update(evaluator.after_task(i, out.with_name("task_id_confusion.png")), costs=costs.tasks)
        if model.feature_cache is not None:
            results["feature_cache"] = model.feature_cache.summary()
        if attention.attention:
            results["fusion_attention"] = attention.attention
            if i == T - 1:
                plot_fusion_attention(attention.attention, out.with_name("fusion_attention.png"))
        write_json_atomic(out, results)
        if checkpoints is not None:
            checkpoints.save(i, strategy.model, results, plugins)
        for logger in loggers:
            logger.log_task(i, results)
    for name in cfg.compositions or ():  # after the last task, with task labels for the heads
        with COMPOSITIONS[name](model), model.given_task_labels(), torch.random.fork_rng():
            strategy.eval(eval_stream)
        results.setdefault("compositions", {})[name] = [accuracy.last[j] for j in range(T)]
        results["metrics"][f"acc_{name}"] = float(np.mean(results["compositions"][name]))
    results["run"]["status"] = "complete"
    results["throughput"] = {
        "train_samples_per_s": sum(c["train_samples"] for c in costs.tasks) / sum(c["train_seconds"] for c in costs.tasks),
        "eval_samples_per_s": accuracy.eval_samples / accuracy.eval_seconds,
    }
    write_json_atomic(out, results)
    if protocol in REFERENCES:
        print(f"reference {protocol} cached: {cache.save(protocol, cfg, evaluator.R.tolist(), out_dir)}")
    for logger in loggers:
        logger.log_summary(results)
    print(f"results: {out}")
    return results


def class_order(scenario) -> list[int] | None:
    """The original class ids in the order the stream uses them (in class-IL, label k is ``class_order[k]``),
    flattened from the stream's ``classes_per_task``; None where it has none or names classes per task
    (a text stream's label names are not class ids)."""
    classes = [c for task in getattr(scenario, "classes_per_task", None) or () for c in task]
    return classes if classes and all(isinstance(c, int) and not isinstance(c, bool) for c in classes) else None


def _record_failure(out: Path, results: dict, error: BaseException, loggers: list) -> None:
    """results.json says why the run stopped. If the file is still an earlier attempt's (this one stopped
    before writing its own: a refused resume, a bad value), its measurements and status stay and the
    failure is added as ``run.last_attempt``."""
    status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
    results["run"].update(status=status, error=one_line(error))
    record = results
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError, KeyError):
        earlier = json.loads(out.read_text())
        if earlier["run"].get("id") != results["run"]["id"]:
            earlier["run"]["last_attempt"] = {k: results["run"][k] for k in ("started", "status", "error")}
            record = earlier
    with contextlib.suppress(UserError):  # a full disk keeps the last task's file, status "running"
        write_json_atomic(out, record)
    for logger in loggers:
        logger.log_failure(results)


def _leave_no_other_chain(cfg: DictConfig, out_dir: Path) -> None:
    """A run without checkpoints must not leave another run's chain beside its results (loading the dir
    would serve those weights as this run's): resume=false removes it, resume=true refuses to run over it."""
    checkpoints = Checkpoints(out_dir)
    if not checkpoints.files():
        return
    if cfg.resume:
        raise UserError(f"{checkpoints.dir} holds another run's checkpoints and checkpoint=false would leave them beside "
                        "this run's results: resume that run (checkpoint=true), start over (resume=false) or use another run dir")
    checkpoints.clear()


def _restore(measured: dict, results: dict, monitors: list) -> int:
    """Put what a checkpoint measured back in results (each monitor restores its own records); returns the
    tasks done."""
    done = sum(row[0] is not None for row in measured["accuracy_matrix"])
    for monitor in monitors:
        monitor.restore(measured)
    kept = ("accuracy_matrix", "costs", "metrics", "accuracy_matrix_til", "task_id_matrix", "task_id_confusion",
            "eval_samples_per_task", "accuracy_curve")
    results.update({k: measured[k] for k in kept if k in measured})
    results["run"]["resumed_after_task"] = measured["run"].get("resumed_after_task", []) + [done - 1]
    return done


def _reference_lock(cfg: DictConfig):
    protocol = OmegaConf.select(cfg, "strategy.protocol", default="sequential")
    return ReferenceCache(cfg.references.dir).locked(protocol, cfg) if protocol in REFERENCES else contextlib.nullcontext()


def _references(cfg: DictConfig, cache: ReferenceCache, out_dir: Path, results: dict) -> dict[str, dict]:
    """The cached references for this run's stream, backbone, budget and seed; with
    ``references.compute``, missing ones are trained first (and cached for the next runs). One being
    trained by another process is waited for. Those still missing are recorded in
    ``results["references_missing"]`` (their cache paths): a report leaves the run out if they appear
    later (a sweep that ran it beside its references), never shows a silent "-"."""
    found, missing = {}, {}
    for protocol in REFERENCES:
        path, _ = cache.path(protocol, cfg)
        entry = cache.load(protocol, cfg)
        if entry is None:
            with cache.locked(protocol, cfg):
                entry = cache.load(protocol, cfg)
                if entry is None and cfg.references.compute:
                    print(f"reference {protocol}: not cached ({path.name}); training it first")
                    ref_cfg = copy.deepcopy(cfg)
                    with open_dict(ref_cfg):
                        ref_cfg.strategy = reference_strategy(cfg, protocol)
                        ref_cfg.model = reference_model(cfg)
                        ref_cfg.plugins = {}
                    run(ref_cfg, out_dir / "references" / protocol)
                    entry = cache.load(protocol, cfg)
        if entry is None:
            print(f"reference {protocol}: none cached ({path}); run strategy={protocol} with the same "
                  "stream, model, budget and seed, or set references.compute=true")
            missing[protocol] = str(path.resolve())
        else:
            print(f"reference {protocol}: {path}")
            found[protocol] = entry
    results["references_missing"] = missing
    return found
