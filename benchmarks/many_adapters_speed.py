"""Serving many tasks' adapters at once on MiniLM: mixed-task batches with 1, 10 and 100 task adapters
resident, ours (LoRA through peft's layers, Pfeiffer adapters) against peft's own mixed-batch inference
(``PeftModel`` with ``adapter_names``).

    .venv/bin/python benchmarks/many_adapters_speed.py            # ~5 min on 2 CPU cores
    .venv/bin/python benchmarks/many_adapters_speed.py --quick    # a smoke run

Batch 32 x 128 random tokens, each sample's task drawn uniformly from the resident ones (the same draw
for every config with that many); LoRA r=8 on query/value, Pfeiffer r=64 after the FFN, every adapter
randomised. Configs timed in rotation in one process (medians), as ratios to the bare encoder; adapter
parameter bytes, and the peak RSS of a fresh process building the config and running 3 batches.
Writes benchmarks/results/many_adapters_speed.{md,json}.
"""

from __future__ import annotations

import resource
from pathlib import Path

import torch
from torch import nn

from adapter_speed import Pooled, arguments, batch, environment, environment_line, peak_memory, timed_rotation, write
from cl_adapters.adapters import AdapterConfig, LoraConfig
from cl_adapters.models import AdaptedModel, HFEncoder, default_encoder_path

RESIDENT = (1, 10, 100)
NAMES = ["bare"] + [f"{kind}_{n}" for n in RESIDENT for kind in ("ours_lora", "peft_lora", "ours_pfeiffer")]


def task_labels(n: int) -> torch.Tensor:
    return torch.randint(0, n, (batch()[0].shape[0],), generator=torch.Generator().manual_seed(n))


class Ours(nn.Module):
    def __init__(self, model: AdaptedModel, tasks: torch.Tensor):
        super().__init__()
        self.model, self.tasks = model, tasks

    def forward(self, ids):
        return self.model(ids, self.tasks)


class Peft(Pooled):
    """peft's mixed batch: one adapter name per sample; mean pooling and one head (ours: a head per task,
    a few thousand FLOPs)."""

    def __init__(self, hf: nn.Module, names: list[str]):
        super().__init__(hf)
        self.names = names

    def forward(self, ids):
        mask = ids != 0
        h = self.hf(input_ids=ids, attention_mask=mask.long(), adapter_names=self.names).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1))


def randomised(parameters) -> None:
    with torch.no_grad():
        for p in parameters:
            p.normal_(0, 0.02)


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "bare":
        model = AdaptedModel(HFEncoder(), None, train_backbone="never")
        model.add_task(0, classes=2)
        return Ours(model, task_labels(1) * 0)
    kind, n = name.rsplit("_", 1)
    n, tasks = int(n), task_labels(int(n))
    if kind == "peft_lora":
        from peft import LoraConfig as PeftLora, get_peft_model
        from transformers import AutoModel

        config = PeftLora(r=8, lora_alpha=16, target_modules=["query", "value"])
        hf = get_peft_model(AutoModel.from_pretrained(default_encoder_path()), config, adapter_name="0")
        for t in range(1, n):
            hf.add_adapter(str(t), config)
        randomised(p for n_, p in hf.named_parameters() if "lora_" in n_)
        return Peft(hf, [str(int(t)) for t in tasks])
    model = AdaptedModel(HFEncoder(), LoraConfig(r=8) if kind == "ours_lora" else AdapterConfig("pfeiffer", r=64),
                         train_backbone="never")
    for t in range(n):
        model.add_task(t, classes=2)
    randomised(p for key in model.adapters.keys() for p in model.adapters.parameters(key))
    return Ours(model, tasks)


def adapter_bytes(model: nn.Module) -> int:
    return 4 * sum(p.numel() for n, p in model.named_parameters() if "lora_" in n or ".adapters." in n)


def main():
    args = arguments("many_adapters_speed")
    names = NAMES[:4] if args.quick else NAMES
    if args.memory:
        model, (x, _) = build(args.memory).eval(), batch()
        with torch.inference_mode():
            for _ in range(3):
                model(x)
        return print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    rounds, warmup = (1, 1) if args.quick else (12, 2)
    memory = {name: peak_memory(name, __file__) for name in names}  # first: a child forked from a big parent inherits its peak
    x, _ = batch()
    models, steps = {}, {}
    for name in names:
        models[name] = build(name).eval()

        def step(model=models[name]):
            with torch.inference_mode():
                model(x)

        steps[name] = step
    seconds = timed_rotation(steps, rounds, 1, warmup)
    rows = {name: {"s_per_batch": seconds[name], "vs_bare": seconds[name] / seconds["bare"],
                   "distinct_tasks_in_batch": len(set(task_labels(int(name.rsplit("_", 1)[1])).tolist())) if name != "bare" else 1,
                   "adapter_bytes": adapter_bytes(models[name]), "peak_rss_bytes": memory[name]} for name in names}
    results = {**environment("cl-adapters", "torch", "transformers", "peft"),
               "setup": {"batch": list(x.shape), "lora_r": 8, "pfeiffer_r": 64, "rounds": rounds}, "rows": rows}
    lines = [f"# Mixed-task batches with many adapters resident on all-MiniLM-L6-v2 (batch {x.shape[0]} x {x.shape[1]})", "",
             environment_line(results),
             f"Medians over {rounds} rounds, configs in rotating order in one process; each sample's task drawn from the "
             "resident ones; peak RSS of a fresh process building the config and running 3 batches.", "",
             "| config | resident adapters | tasks in the batch | s/batch | vs bare | adapter MiB | peak RSS MiB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        kind, n = ("bare", 0) if name == "bare" else name.rsplit("_", 1)
        lines.append(f"| {kind} | {n} | {r['distinct_tasks_in_batch']} | {r['s_per_batch']:.3f} | {r['vs_bare']:.2f}x | "
                     f"{r['adapter_bytes'] / 2**20:.1f} | {r['peak_rss_bytes'] / 2**20:.0f} |")
    write(results, "\n".join(lines) + "\n", Path(args.out) / "many_adapters_speed")


if __name__ == "__main__":
    main()
