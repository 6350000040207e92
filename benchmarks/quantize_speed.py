"""A quantized frozen base (``model.quantize=nf4|int8``) against fp32 on MiniLM: memory and speed of
training and inference with a Pfeiffer adapter (r=64) and a LoRA (r=8). Accuracy is measured by the
suite (``python benchmarks/suite.py sentiment_toolbox``).

    .venv/bin/python benchmarks/quantize_speed.py            # ~10 min on 2 CPU cores
    .venv/bin/python benchmarks/quantize_speed.py --quick    # a smoke run

Batch 32 x 128 random tokens, AdamW; configurations timed in rotation in one process (medians), as
ratios to the same method on the fp32 base; the model's parameter bytes, and the peak RSS of a fresh
process building it and running 3 training steps. Writes benchmarks/results/quantize_speed.{md,json}.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from adapter_speed import (_Task0, arguments, environment, environment_line, inferer, peak_memory, print_peak_memory,
                           timed_rotation, trainer, write)
from cl_adapters.adapters import AdapterConfig, LoraConfig
from cl_adapters.models import AdaptedModel, HFEncoder
from cl_adapters.models.quantize import weight_bytes

BASES = ("fp32", "nf4", "int8")
METHODS = {"pfeiffer": lambda: AdapterConfig("pfeiffer", r=64), "lora": lambda: LoraConfig(r=8)}
NAMES = [f"{method}_{base}" for method in METHODS for base in BASES]


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    method, base = name.split("_")
    model = AdaptedModel(HFEncoder(quantize=None if base == "fp32" else base), METHODS[method]())
    model.add_task(0, classes=2)
    return _Task0(model)


def main():
    args = arguments("quantize_speed")
    if args.memory:
        return print_peak_memory(build(args.memory))
    rounds, per_round, warmup = (1, 1, 1) if args.quick else (6, 2, 2)
    memory = {name: peak_memory(name, __file__) for name in NAMES}  # first: a child forked from a big parent inherits its peak
    models = {name: build(name) for name in NAMES}
    steps = {name: trainer(model)[0] for name, model in models.items()}
    print("training:", flush=True)
    train_s = timed_rotation(steps, rounds, per_round, warmup)
    print("inference:", flush=True)
    infer_s = timed_rotation({n: inferer(m) for n, m in models.items()}, rounds * 2, 1, warmup)
    rows = {}
    for name, model in models.items():
        fp32 = name.rsplit("_", 1)[0] + "_fp32"
        rows[name] = {"param_bytes": weight_bytes(model), "peak_rss_bytes": memory[name],
                      "train_s_per_step": train_s[name], "train_vs_fp32": train_s[fp32] / train_s[name],
                      "infer_s_per_batch": infer_s[name], "infer_vs_fp32": infer_s[fp32] / infer_s[name]}
    results = {**environment("cl-adapters", "torch", "transformers", "peft", "bitsandbytes"),
               "setup": {"batch": [32, 128], "rounds": rounds}, "rows": rows}
    lines = ["# A quantized frozen base on all-MiniLM-L6-v2 (batch 32 x 128, AdamW)", "", environment_line(results),
             f"Medians over {rounds} rounds (training, {per_round} steps each) and {2 * rounds} (inference), configs in "
             "rotating order in one process; speed as the fp32 base's time over this one's (>1: faster).", "",
             "| method_base | parameter MiB | peak RSS MiB | train s/step | train vs fp32 | inference s/batch | inference vs fp32 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | {r['param_bytes'] / 2**20:.1f} | {r['peak_rss_bytes'] / 2**20:.0f} | {r['train_s_per_step']:.3f} | "
              f"{r['train_vs_fp32']:.2f}x | {r['infer_s_per_batch']:.3f} | {r['infer_vs_fp32']:.2f}x |" for n, r in rows.items()]
    write(results, "\n".join(lines) + "\n", Path(args.out) / "quantize_speed")


if __name__ == "__main__":
    main()
