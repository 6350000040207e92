"""The frozen-feature cache (``cache=true``): a whole SimpleCIL run (``strategy=ncm``, class-IL B0 Inc10 in
the seed-1993 order) on CIFAR-100-format data through a random-weight timm ViT at 224 px, timed three ways
in one process: the cache off, the cache on and empty (a sweep's first run), the cache on and filled by
that run (every later run). Random weights time exactly as pretrained ones; the data are random images in
the real python-version format (``tests/conftest.py``'s writer).

    .venv/bin/python benchmarks/feature_cache.py            # ~10 min on 2 CPU cores
    .venv/bin/python benchmarks/feature_cache.py --quick    # a smoke run (32 px)

Without the cache a class-IL NCM run computes the features of every training sample once (class means),
and of every test sample 2T+1 times (the untrained evaluation, then after each task every task with and
without task labels); with a filled cache, none. Writes benchmarks/results/feature_cache.{md,json}.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import safetensors.torch
import torch
from hydra import compose, initialize_config_dir

import cl_adapters  # noqa: F401  (its environment shims before torchvision loads)
import timm
from adapter_speed import arguments, environment, environment_line, write

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import write_cifar100  # noqa: E402  (the tests' writer of the real format)

from cl_adapters.runs.run import run  # noqa: E402


def main():
    args = arguments("feature_cache")
    model, kwargs = "vit_tiny_patch16_224", ({"img_size": 32} if args.quick else {})
    per_class, repeats = (2, 1) if args.quick else (3, 3)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = write_cifar100(tmp / "data", train_per_class=per_class, test_per_class=per_class)
        torch.manual_seed(0)
        weights = tmp / "vit.safetensors"
        safetensors.torch.save_file(timm.create_model(model, num_classes=0, **kwargs).state_dict(), str(weights))
        overrides = ["strategy=ncm", "scenario=class_il", "stream=cifar100", f"stream.root={root}", "model=timm",
                     f"model.name={model}", "model.pretrained=false", f"model.checkpoint_path={weights}",
                     f"model.model_kwargs={{{','.join(f'{k}:{v}' for k, v in kwargs.items())}}}", "logger=console",
                     "checkpoint=false", "probe_samples=0", f"references.dir={tmp}/refs", "progress=task"]

        def timed(name: str, *more: str) -> tuple[float, dict]:
            with initialize_config_dir(config_dir=str(ROOT / "cl_adapters" / "conf"), version_base="1.3"):
                cfg = compose("config", overrides=[*overrides, *more])
            start = time.perf_counter()
            results = run(cfg, tmp / "runs" / name)
            return time.perf_counter() - start, results

        seconds = {"off": [], "empty": [], "filled": []}
        for r in range(repeats):  # the three in turn: a busy machine slows them alike
            cache = f"cache_dir={tmp}/cache{r}"
            seconds["off"].append(timed(f"off{r}", "cache=false")[0])
            s, first = timed(f"empty{r}", cache)
            seconds["empty"].append(s)
            s, later = timed(f"filled{r}", cache)
            seconds["filled"].append(s)
            assert later["feature_cache"]["computed"] == 0 and later["accuracy_matrix"] == first["accuracy_matrix"]
    median = {k: statistics.median(v) for k, v in seconds.items()}
    results = {**environment("cl-adapters", "torch", "timm"),
               "setup": {"model": model, "model_kwargs": kwargs, "train_samples": 100 * per_class,
                         "test_samples": 100 * per_class, "tasks": 10, "repeats": repeats},
               "seconds": seconds, "median_seconds": median,
               "speedup_filled_vs_off": median["off"] / median["filled"],
               "speedup_empty_vs_off": median["off"] / median["empty"],
               "cache": {"hits": later["feature_cache"]["hits"], "computed_by_first_run": first["feature_cache"]["computed"]}}
    lines = [f"# Frozen-feature cache: a SimpleCIL run on CIFAR-100 B0 Inc10 through {model} (random weights)", "",
             environment_line(results),
             f"{100 * per_class} train and {100 * per_class} test images (random, CIFAR-100's python format), 10 tasks, "
             f"class-IL, eval batch 256; a whole `run()` each, median of {repeats} rounds (off, empty, filled in turn).", "",
             "| cache | run seconds | vs off | features computed |", "| --- | --- | --- | --- |",
             f"| off (`cache=false`) | {median['off']:.1f} | 1.00x | every pass |",
             f"| on, empty (first run of a sweep) | {median['empty']:.1f} | {results['speedup_empty_vs_off']:.2f}x | "
             f"{first['feature_cache']['computed']} (each sample once) |",
             f"| on, filled (every later run) | {median['filled']:.1f} | **{results['speedup_filled_vs_off']:.1f}x** | 0 |"]
    write(results, "\n".join(lines) + "\n", Path(args.out) / "feature_cache")


if __name__ == "__main__":
    main()
