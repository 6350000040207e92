"""Inference on MiniLM with a task's LoRA: routed through peft's LoRA layers vs merged into the weights
(``export(..., format="merged")``), against the bare encoder.

    .venv/bin/python benchmarks/serving_speed.py            # ~2 min on 2 CPU cores
    .venv/bin/python benchmarks/serving_speed.py --quick    # a smoke run

Batch 32 x 128 random tokens, per-task LoRA r=8 on query/value (B randomised, so that the merge changes
the weights), 3 tasks trained; configurations timed in rotation in one process (medians), and the merged
model's largest logit difference from the routed one. The routed LoRA runs in our model (against
``bare``: the same without LoRA), the merged one as a plain Hugging Face model with pooling and head
(against ``bare_hf``: the same with the base's weights). Writes benchmarks/results/serving_speed.{md,json}.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from adapter_speed import Pooled, arguments, batch, environment, environment_line, inferer, timed_rotation, write
from cl_adapters.adapters import LoraConfig
from cl_adapters.models import AdaptedModel, HFEncoder
from cl_adapters.models.exports.peft import merged_encoder

TASKS = 3
BASELINE = {"bare": "bare", "lora_routed": "bare", "bare_hf": "bare_hf", "lora_merged": "bare_hf"}


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
    merged, plain = Pooled(merged_encoder(lora, 0)), Pooled(copy.deepcopy(bare.backbone.model))
    merged.head.load_state_dict(lora.heads["0"].state_dict())
    plain.head.load_state_dict(bare.heads["0"].state_dict())
    # ours (routing, cut to the longest sequence) and a plain Hugging Face forward: each its own baseline
    return {"bare": Routed(bare, 0), "lora_routed": Routed(lora, 0), "bare_hf": plain, "lora_merged": merged}


def main():
    args = arguments("serving_speed")
    rounds, warmup = (1, 1) if args.quick else (30, 2)
    models = {name: model.eval() for name, model in build().items()}
    x, _ = batch()
    with torch.inference_mode():
        difference = (models["lora_routed"](x) - models["lora_merged"](x)).abs().max().item()
    seconds = timed_rotation({name: inferer(model) for name, model in models.items()}, rounds, 1, warmup)
    results = {
        **environment("cl-adapters", "torch", "transformers", "peft"),
        "setup": {"batch": list(x.shape), "lora_r": 8, "tasks": TASKS, "rounds": rounds},
        "max_logit_difference_merged_vs_routed": difference,
        "inference": {n: {"s_per_batch": s, "overhead_vs_bare": s / seconds[BASELINE[n]] - 1} for n, s in seconds.items()},
    }
    lines = [f"# Serving a task's LoRA on all-MiniLM-L6-v2 (batch {x.shape[0]} x {x.shape[1]}, r=8, {TASKS} tasks)", "",
             environment_line(results),
             f"Medians over {rounds} rounds, configs in rotating order in one process. Merged vs routed logits: "
             f"largest difference {difference:.1e}.", "",
             "| inference | s/batch | overhead vs its bare model |", "| --- | --- | --- |"]
    lines += [f"| {n} | {r['s_per_batch']:.3f} | {100 * r['overhead_vs_bare']:+.1f}% (vs {BASELINE[n]}) |"
              for n, r in results["inference"].items()]
    write(results, "\n".join(lines) + "\n", Path(args.out) / "serving_speed")


if __name__ == "__main__":
    main()
