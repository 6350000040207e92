#!/usr/bin/env bash
# The baseline comparison on split MNIST (5 tasks x 2 digits, MLP, 1 epoch per task, batch 64),
# seeds 0-2, then the table:  bash benchmarks/split_mnist_baselines.sh   (~8 min on 2 CPU cores)
# The references (single_task, joint) run first in each seed, so every later run finds them cached.
set -euo pipefail
cd "$(dirname "$0")/.."
out=multirun/split_mnist_baselines
cl=".venv/bin/cl-adapters"
$cl -m seed=0,1,2 experiment=split_mnist \
  strategy=single_task,joint,adapter,full_ft,lora,lora_per_task,bitfit hydra.sweep.dir=$out/strategies
$cl -m seed=0,1,2 experiment=split_mnist strategy=full_ft,lora 'plugins=[ewc],[replay],[lwf]' \
  hydra.sweep.dir=$out/plugins
{
  echo "# Baselines on split MNIST (MLP 784-256-256, 1 epoch/task, batch 64, AdamW lr 1e-3, seeds 0-2)"
  echo
  echo "Made by \`bash benchmarks/split_mnist_baselines.sh\`; mean ± std over seeds; train s = all 5 tasks."
  .venv/bin/python -c 'import os, platform; from importlib.metadata import version as v
print(f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
      + ", ".join(f"{p} {v(p)}" for p in ("torch", "avalanche-lib", "peft")) + ".")'
  echo
  .venv/bin/cl-adapters-report $out
} > benchmarks/results/split_mnist_baselines.md
cat benchmarks/results/split_mnist_baselines.md
