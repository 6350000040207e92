"""The training loop's speed against bare PyTorch loops on the same model, data and optimizer.

    .venv/bin/python benchmarks/loop_speed.py            # ~3 min on 2 CPU cores
    .venv/bin/python benchmarks/loop_speed.py --quick    # a smoke run

Split MNIST task 2 (MLP 784-256-256 trained on task 1, frozen; Pfeiffer r=64 and a head train), batch 64,
one epoch per measurement. ``platform``: ``strategy.train`` with the monitors a run uses (accuracy,
costs, fusion attention, progress); ``platform_avalanche_loader``: the same with Avalanche's sample-by-sample
loader (the path before ``TensorBatches``); ``bare_tensors``: a loop slicing shuffled in-memory tensors;
``bare_dataloader``: a loop over a plain ``DataLoader(TensorDataset, shuffle=True)``. Configs in rotating
order in one process, medians over rounds; speeds as samples/s and ratios to the bare loops. Writes
benchmarks/results/loop_speed.{md,json}.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from adapter_speed import arguments, environment, environment_line, timed_rotation, write  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from cl_adapters import CONFIG_DIR  # noqa: E402
from cl_adapters.metrics import AccuracyPlugin, CostPlugin, FusionAttention  # noqa: E402
from cl_adapters.outputs import ProgressBar  # noqa: E402
from cl_adapters.strategies.batches import TensorBatches  # noqa: E402

BATCH = 64
OVERRIDES = ["stream=split_mnist", "strategy=adapter", "adapter=pfeiffer", "strategy.epochs=1",
             f"strategy.batch_size={BATCH}", "logger=console"]


def platform_setup(train_per_task: int | None):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*OVERRIDES, f"stream.train_per_task={train_per_task or 'null'}"])
    torch.manual_seed(0)
    scenario = instantiate(cfg.stream)
    stream = scenario.train_stream
    backbone = instantiate(cfg.model, input_shape=tuple(stream[0].dataset[0][0].shape))
    monitors = [AccuracyPlugin(), CostPlugin(), FusionAttention(), ProgressBar(len(stream))]
    strategy = instantiate(cfg.strategy, backbone=backbone, plugins=[], monitors=monitors)
    strategy.train(stream[0])  # task 1 trains the backbone; task 2 (measured) only its adapter and head
    strategy.train(stream[1])
    return strategy, stream[1]


def platform_epoch(strategy, experience, fast: bool):
    def epoch():
        if fast:
            strategy.train(experience)
        else:
            wrap = TensorBatches.wrap
            TensorBatches.wrap = classmethod(lambda cls, loader: loader)
            try:
                strategy.train(experience)
            finally:
                TensorBatches.wrap = wrap
    return epoch


def bare_epochs(model, experience):
    """The same model, task and optimizer settings (AdamW, lr 1e-3) in a loop of a few lines."""
    x, y, t = (torch.stack([torch.as_tensor(s[k]) for s in experience.dataset]) for k in range(3))
    task = int(t[0])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)

    def step(xb, yb):
        optimizer.zero_grad()
        F.cross_entropy(model(xb, task), yb).backward()
        optimizer.step()

    def tensors():
        model.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x), BATCH):
            idx = order[i : i + BATCH]
            step(x[idx], y[idx])

    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)

    def dataloader():
        model.train()
        for xb, yb in loader:
            step(xb, yb)

    return tensors, dataloader, len(x)


def main():
    args = arguments("loop_speed")  # --quick: 1,000 samples, one round
    rounds, warmup = (1, 1) if args.quick else (9, 1)

    strategy, experience = platform_setup(1000 if args.quick else None)
    tensors, dataloader, n = bare_epochs(strategy.model, experience)
    epochs = {"platform": platform_epoch(strategy, experience, True),
              "platform_avalanche_loader": platform_epoch(strategy, experience, False),
              "bare_tensors": tensors, "bare_dataloader": dataloader}
    seconds = timed_rotation(epochs, rounds, 1, warmup)
    results = {
        **environment("cl-adapters", "torch", "avalanche-lib"),
        "setup": {"stream": "split_mnist task 2", "samples": n, "batch": BATCH, "model": "MLP 784-256-256, Pfeiffer r=64",
                  "rounds": rounds},
        "rows": {name: {"s_per_epoch": s, "samples_per_s": n / s, "vs_bare_tensors": seconds["bare_tensors"] / s,
                        "vs_bare_dataloader": seconds["bare_dataloader"] / s} for name, s in seconds.items()},
    }
    write(results, markdown(results), Path(args.out) / "loop_speed")


def markdown(res: dict) -> str:
    s = res["setup"]
    lines = [f"# The training loop vs bare PyTorch loops ({s['stream']}: {s['samples']:,} samples, batch {s['batch']}, "
             f"{s['model']})", "", environment_line(res),
             f"Medians over {s['rounds']} rounds of one epoch each, configs in rotating order in one process; "
             "ratios > 1: faster than that bare loop.", "",
             "| loop | s/epoch | samples/s | vs bare tensors | vs bare DataLoader |", "| --- | --- | --- | --- | --- |"]
    for name, row in res["rows"].items():
        lines.append(f"| {name} | {row['s_per_epoch']:.3f} | {row['samples_per_s']:,.0f} | {row['vs_bare_tensors']:.2f}x "
                     f"| {row['vs_bare_dataloader']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
