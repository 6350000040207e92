"""What predicting the task costs: inference time of a routed prediction vs one given-task forward, as the
number of tasks N grows, and the bytes each router keeps per task.

    .venv/bin/python benchmarks/router_cost.py            # ~6 min on 2 CPU cores
    .venv/bin/python benchmarks/router_cost.py --quick    # a smoke run

Per-task Pfeiffer adapters (r=64 on the MLP, r=24 on MiniLM) with random up-projections and heads; the
prototype routers are fitted on random inputs (their cost does not depend on what they learned). Eval
mode, no autograd; medians of the configs timed in rotation in one process, as ratios to the oracle (the
task label given: one forward through one adapter). Writes benchmarks/results/router_cost.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from adapter_speed import environment, environment_line, timed_rotation, write  # noqa: E402

import cl_adapters  # noqa: E402,F401
from cl_adapters.adapters import AdapterConfig  # noqa: E402
from cl_adapters.models import MLP, AdaptedModel, HFEncoder  # noqa: E402
from cl_adapters.routers import EntropyRouter, LearnedRouter, OracleRouter, PrototypeRouter  # noqa: E402

OUT = Path(__file__).parent / "results"
ROUTERS = {"oracle": OracleRouter, "entropy": EntropyRouter, "prototype": PrototypeRouter,
           "prototype_adapted": lambda: PrototypeRouter(features="adapted"), "learned": LearnedRouter}


def inputs(backbone: str, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if backbone == "mlp":
        return torch.rand(n, 1, 28, 28, generator=g)
    return torch.randint(1000, 20000, (n, 64), generator=g)


def build(backbone: str, tasks: int, router) -> AdaptedModel:
    torch.manual_seed(0)
    if backbone == "mlp":
        encoder, adapter = MLP((1, 28, 28)), AdapterConfig("pfeiffer", r=64)
    else:
        encoder, adapter = HFEncoder(), AdapterConfig("pfeiffer", r=24)
    model = AdaptedModel(encoder, adapter, train_backbone="never", scenario="class_il", router=router).eval()
    with torch.no_grad():
        for t in range(tasks):
            model.add_task(t, [2 * t, 2 * t + 1])
            for p in model.adapters.parameters(str(t)):
                p.normal_(0, 0.02)
            if hasattr(router, "fit"):
                x = inputs(backbone, 64, t)
                router.fit(model, t, [(x, torch.tensor([2 * t, 2 * t + 1] * 32))])
    return model.eval()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one round, N = 2 and 5 (a smoke test)")
    parser.add_argument("--out", default=str(OUT), help="folder for router_cost.{md,json}")
    args = parser.parse_args()
    rounds, warmup = (1, 1) if args.quick else (5, 1)
    setups = {"mlp": (256, [2, 5] if args.quick else [2, 5, 10, 20]),
              "minilm": (8, [2] if args.quick else [2, 5, 10, 20])}  # (batch, task counts)
    results = {**environment("cl-adapters", "torch"), "rounds": rounds, "setups": {}}
    for backbone, (batch, counts) in setups.items():
        for n in counts:
            x, labels = inputs(backbone, batch, 99), torch.zeros(batch, dtype=torch.long)
            models = {name: build(backbone, n, make()) for name, make in ROUTERS.items()}

            def step(model):
                return lambda: torch.no_grad()(model)(x, labels)

            print(f"{backbone}, N={n}, batch {batch}:", flush=True)
            seconds = timed_rotation({name: step(m) for name, m in models.items()}, rounds, 1, warmup)
            stored = {name: sum(t.numel() * t.element_size() for t in m.router.task_state(0).values())
                      for name, m in models.items()}
            results["setups"][f"{backbone} N={n}"] = {
                name: {"ms_per_sample": 1000 * s / batch, "vs_oracle": s / seconds["oracle"],
                       "router_bytes_per_task": stored[name]} for name, s in seconds.items()}
    write(results, markdown(results), Path(args.out) / "router_cost")


def markdown(res: dict) -> str:
    names = list(ROUTERS)
    lines = ["# Router cost: a routed prediction vs the task label given (oracle)", "", environment_line(res),
             f"Medians of {res['rounds']} rounds in rotation in one process; eval mode, no autograd.", "",
             "| setup | " + " | ".join(f"{n} ms/sample (x oracle)" for n in names) + " |",
             "| --- |" + " --- |" * len(names)]
    for setup, row in res["setups"].items():
        lines.append(f"| {setup} | " + " | ".join(f"{row[n]['ms_per_sample']:.3f} ({row[n]['vs_oracle']:.2f}x)"
                                                  for n in names) + " |")
    first = next(iter(res["setups"].values()))
    lines += ["", "Bytes a router keeps per task (MLP, 2 classes per task): "
              + ", ".join(f"{n} {first[n]['router_bytes_per_task']:,}" for n in names) + "."]
    minilm = [row for setup, row in res["setups"].items() if setup.startswith("minilm")]
    if minilm:
        lines[-1] += " MiniLM: " + ", ".join(f"{n} {minilm[0][n]['router_bytes_per_task']:,}" for n in names) + "."
    lines[-1] += (" learned keeps the features it was fitted on (64 per task here; up to `memory` = 500 x d x 4"
                  " bytes in a run).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
