"""Adapter training and inference speed on MiniLM vs full fine-tuning, AdapterHub and peft LoRA.

    .venv/bin/python benchmarks/adapter_speed.py            # ~12 min on 2 CPU cores
    .venv/bin/python benchmarks/adapter_speed.py --quick    # a smoke run

Batch 32 x 128 random tokens, AdamW. All configurations are timed in rotation in one process
(medians over rounds, after warm-up), so machine drift hits them alike; results are reported as
ratios to full fine-tuning (training) and to the bare model (inference). Peak memory is measured per
configuration in a fresh subprocess (peak RSS during 3 training steps). Writes
benchmarks/results/adapter_speed.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import cl_adapters  # noqa: E402,F401
from cl_adapters.adapters import AdapterConfig  # noqa: E402
from cl_adapters.adapters.compacter import CompacterConfig  # noqa: E402
from cl_adapters.models import AdaptedModel, HFEncoder, default_encoder_path  # noqa: E402

BATCH, LENGTH, R = 32, 128, 24  # r = 384 / 16, AdapterHub's default reduction factor
OUT = Path(__file__).parent / "results"
TRAIN = ["full_ft", "ours_pfeiffer", "adapterhub_pfeiffer", "ours_houlsby", "adapterhub_houlsby", "ours_parallel",
         "ours_compacter", "adapterhub_compacter", "peft_lora", "ours_pfeiffer_nodropout", "ours_houlsby_nodropout"]
INFER = ["bare", "ours_pfeiffer", "adapterhub_pfeiffer", "ours_houlsby", "adapterhub_houlsby", "ours_compacter",
         "adapterhub_compacter"]
OURS = {"pfeiffer": AdapterConfig("pfeiffer", r=R), "houlsby": AdapterConfig("houlsby", r=R, activation="silu"),
        "parallel": AdapterConfig("parallel", r=R), "compacter": CompacterConfig(r=R)}
HUB = {"pfeiffer": "SeqBnConfig", "houlsby": "DoubleSeqBnConfig", "compacter": "CompacterConfig"}


class Pooled(nn.Module):
    """A Hugging Face model + masked mean pooling + a head: how peers are run, same as HFEncoder."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf, self.head = hf, nn.Linear(hf.config.hidden_size, 2)

    def forward(self, ids):
        mask = ids != 0
        h = self.hf(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # AdapterHub needs ints
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1))


def build(name: str) -> nn.Module:
    """A model whose forward maps token ids to logits, with exactly the intended parameters trainable."""
    torch.manual_seed(0)
    kind, _, placement = name.partition("_")
    placement, _, variant = placement.partition("_")  # nodropout: model.dropout=0 (a method choice)
    if kind in ("full", "bare", "ours"):
        adapter = OURS[placement] if kind == "ours" else None
        encoder = HFEncoder(dropout=0.0 if variant == "nodropout" else None)
        model = AdaptedModel(encoder, adapter, train_backbone="all" if kind == "full" else "never")
        model.add_task(0, classes=2)
        return _Task0(model)
    from transformers import AutoModel

    hf = AutoModel.from_pretrained(default_encoder_path())
    if kind == "adapterhub":
        import adapters

        adapters.init(hf)
        hf.add_adapter("task", config=getattr(adapters, HUB[placement])(reduction_factor=16))
        hf.train_adapter("task")  # freezes the rest and activates "task"
    else:  # peft LoRA on query/value, r=8
        from peft import LoraConfig, inject_adapter_in_model

        hf = inject_adapter_in_model(LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"]), hf)
        for n, p in hf.named_parameters():
            p.requires_grad_("lora_" in n)
    return Pooled(hf)


class _Task0(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(ids, 0)


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randint(1000, 20000, (BATCH, LENGTH), generator=g), torch.randint(0, 2, (BATCH,), generator=g)


def trainer(model: nn.Module):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    x, y = batch()
    model.train()

    def step():
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, sum(p.numel() for p in params)


def inferer(model: nn.Module):
    x, _ = batch()
    model.eval()

    def step():
        with torch.inference_mode():
            model(x)

    return step


def timed_rotation(steps: dict, rounds: int, per_round: int, warmup: int) -> dict[str, float]:
    """Median seconds per step of each config, configs interleaved round by round."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order: no fixed position
            step = steps[name]
            t0 = time.perf_counter()
            for _ in range(per_round):
                step()
            times[name].append((time.perf_counter() - t0) / per_round)
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1]:.3f}s" for n in names), flush=True)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_memory(name: str, script: str = __file__) -> int:
    """Peak RSS (bytes) of a fresh process (``script --memory name``) that builds ``name`` and runs 3
    training steps."""
    out = subprocess.run([sys.executable, script, "--memory", name], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def print_peak_memory(model: nn.Module) -> None:
    """What the ``--memory`` child does: 3 training steps, then its peak RSS on stdout."""
    step, _ = trainer(model)
    for _ in range(3):
        step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def arguments(stem: str) -> argparse.Namespace:
    """--quick, --out and the hidden --memory of a speed benchmark writing ``<stem>.{md,json}``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one round (a smoke test)")
    parser.add_argument("--out", default=str(OUT), help=f"folder for {stem}.{{md,json}}")
    parser.add_argument("--memory", help=argparse.SUPPRESS)
    return parser.parse_args()


def main():
    args = arguments("adapter_speed")
    if args.memory:
        return print_peak_memory(build(args.memory))
    rounds, per_round, warmup = (1, 1, 1) if args.quick else (8, 2, 2)

    memory = {name: peak_memory(name) for name in TRAIN}  # first: a child forked from a big parent inherits its peak
    models = {name: build(name) for name in TRAIN}
    train, n_params = {}, {}
    for name, model in models.items():
        train[name], n_params[name] = trainer(model)
    print(f"training, batch {BATCH} x {LENGTH}:", flush=True)
    train_s = timed_rotation(train, rounds, per_round, warmup)
    infer_models = {name: (models[name] if name in models else build(name)) for name in INFER}
    print("inference:", flush=True)
    infer_s = timed_rotation({n: inferer(m) for n, m in infer_models.items()}, rounds * 3, 1, warmup)

    results = {
        **environment("cl-adapters", "torch", "transformers", "adapters", "peft"),
        "setup": {"batch": BATCH, "length": LENGTH, "r": R, "train": f"{rounds} rounds x {per_round} steps",
                  "inference": f"{rounds * 3} rounds x 1 batch"},
        "train": {n: {"s_per_step": train_s[n], "samples_per_s": BATCH / train_s[n], "vs_full_ft": train_s["full_ft"] / train_s[n],
                      "trainable_params": n_params[n], "peak_rss_bytes": memory[n]} for n in TRAIN},
        "inference": {n: {"s_per_batch": infer_s[n], "overhead_vs_bare": infer_s[n] / infer_s["bare"] - 1} for n in INFER},
    }
    write(results, markdown(results), Path(args.out) / "adapter_speed")


def environment(*packages: str) -> dict:
    return {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "python": platform.python_version()},
            "versions": {p: version(p) for p in packages}}


def environment_line(res: dict) -> str:
    m = res["machine"]
    return (f"Machine: {m['platform']}, {m['cpus']} CPUs, {m['torch_threads']} torch threads, Python {m['python']}. "
            + ", ".join(f"{k} {val}" for k, val in res["versions"].items()) + ".")


def write(results: dict, markdown_text: str, stem: Path) -> None:
    """``<stem>.json`` and ``<stem>.md``; the table is printed too."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
    stem.with_suffix(".md").write_text(markdown_text)
    print(markdown_text)


def markdown(res: dict) -> str:
    s = res["setup"]
    lines = [
        f"# Adapter speed on all-MiniLM-L6-v2 (batch {s['batch']} x {s['length']}, r={s['r']}, AdamW)",
        "",
        environment_line(res),
        f"Medians over rounds (training {s['train']}, inference {s['inference']}), configs in rotating order "
        "in one process; single rounds vary by up to ~20% on this shared machine.",
        "",
        "| training | s/step | samples/s | vs full FT | trainable params | peak RSS (MiB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for n, r in res["train"].items():
        lines.append(f"| {n} | {r['s_per_step']:.3f} | {r['samples_per_s']:.1f} | {r['vs_full_ft']:.2f}x | "
                     f"{r['trainable_params']:,} | {r['peak_rss_bytes'] / 2**20:.0f} |")
    lines += ["", "| inference | s/batch | overhead vs bare |", "| --- | --- | --- |"]
    for n, r in res["inference"].items():
        lines.append(f"| {n} | {r['s_per_batch']:.3f} | {100 * r['overhead_vs_bare']:+.1f}% |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
