"""Inference on MiniLM with a task's LoRA: routed through peft's LoRA layers vs merged into the weights
(``export(..., format="merged")``), against the bare encoder.

    .venv/bin/python benchmarks/serving_speed.py            # ~3 min on 2 CPU cores
    .venv/bin/python benchmarks/serving_speed.py --quick    # a smoke run

Batch 32 x 128 random tokens, per-task LoRA r=8 on query/value (B randomised, so that the merge changes
the weights), 3 tasks trained; configurations timed in rotation in one process (medians), as ratios to
the bare encoder, and the merged model's largest logit difference from the routed one. Writes
benchmarks/results/serving_speed.{md,json}.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from adapter_speed import Pooled, arguments, batch, environment, environment_line, inferer, timed_rotation, write
from cl_adapters.adapters import LoraConfig
from cl_adapters.models import AdaptedModel, HFEncoder
from cl_adapters.models.exports.peft import merged_encoder

TASKS = 3


class Routed(nn.Module):
    def __init__(self, model: AdaptedModel, task: int):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, ids):
        return self.model(ids, self.task)


def build() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    bare = AdaptedModel(HFEncoder(), None, train_backbone="never")
    bare.add_task(0, classes=2)
    lora = AdaptedModel(HFEncoder(), LoraConfig(r=8), train_backbone="never")
    for task in range(TASKS):
        lora.add_task(task, classes=2)
    with torch.no_grad():
        for key in lora.adapters.keys():
            for p in lora.adapters.parameters(key):
                p.normal_(0, 0.02)
    merged = Pooled(merged_encoder(lora, 0))
    merged.head.load_state_dict(lora.heads["0"].state_dict())
    return {"bare": Routed(bare, 0), "lora_routed": Routed(lora, 0), "lora_merged": merged}


def main():
    args = arguments("serving_speed")
    rounds, warmup = (1, 1) if args.quick else (12, 2)
    models = {name: model.eval() for name, model in build().items()}
    x, _ = batch()
    with torch.inference_mode():
        difference = (models["lora_routed"](x) - models["lora_merged"](x)).abs().max().item()
    seconds = timed_rotation({name: inferer(model) for name, model in models.items()}, rounds, 1, warmup)
    results = {
        **environment("cl-adapters", "torch", "transformers", "peft"),
        "setup": {"batch": list(x.shape), "lora_r": 8, "tasks": TASKS, "rounds": rounds},
        "max_logit_difference_merged_vs_routed": difference,
        "inference": {n: {"s_per_batch": s, "overhead_vs_bare": s / seconds["bare"] - 1} for n, s in seconds.items()},
    }
    lines = [f"# Serving a task's LoRA on all-MiniLM-L6-v2 (batch {x.shape[0]} x {x.shape[1]}, r=8, {TASKS} tasks)", "",
             environment_line(results),
             f"Medians over {rounds} rounds, configs in rotating order in one process. Merged vs routed logits: "
             f"largest difference {difference:.1e}.", "",
             "| inference | s/batch | overhead vs bare |", "| --- | --- | --- |"]
    lines += [f"| {n} | {r['s_per_batch']:.3f} | {100 * r['overhead_vs_bare']:+.1f}% |" for n, r in results["inference"].items()]
    write(results, "\n".join(lines) + "\n", Path(args.out) / "serving_speed")


if __name__ == "__main__":
    main()
