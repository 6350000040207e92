"""AdapterFusion inference cost on MiniLM as adapters accumulate: ours (full, light) vs AdapterHub's Fuse.

    .venv/bin/python benchmarks/fusion_speed.py            # ~10 min on 2 CPU cores
    .venv/bin/python benchmarks/fusion_speed.py --quick    # a smoke run

Batch 32 x 128 random tokens, Pfeiffer adapters r=24 (AdapterHub's reduction factor 16), the last
task's fusion over N adapters, eval mode. All configurations are timed in rotation in one process
(medians over rounds) and reported as overhead over the bare encoder; parameters per task are counted
from the models. Also times one fusion training step at the largest N AdapterHub runs (stage 2:
adapters frozen). Writes benchmarks/results/fusion_speed.{md,json}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from adapter_speed import (  # noqa: E402
    BATCH, LENGTH, OUT, R, Pooled, _Task0, environment, environment_line, inferer, timed_rotation, trainer, write,
)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from cl_adapters.adapters import AdapterConfig, FusionConfig  # noqa: E402
from cl_adapters.models import AdaptedModel, HFEncoder, default_encoder_path  # noqa: E402

FUSIONS = {"full": FusionConfig(), "light": FusionConfig(rank=16, value=False, regularization=0.0)}


def ours(n: int, fusion: str | None) -> nn.Module:
    """MiniLM with n Pfeiffer adapters; the last task fuses all n (fusion=None: its own adapter only;
    n=0: the bare encoder)."""
    torch.manual_seed(0)
    model = AdaptedModel(HFEncoder(), AdapterConfig("pfeiffer", r=R) if n else None, fusion=FUSIONS.get(fusion))
    for t in range(max(n, 1)):
        model.add_task(t, classes=2)
    if fusion:
        model.next_stage()  # the last task's fusion over adapters 0..n-1; only it trains
    return _Last(model, max(n, 1) - 1)


class _Last(_Task0):
    def __init__(self, model, task):
        super().__init__(model)
        self.task = task

    def forward(self, ids):
        return self.model(ids, self.task)


def adapterhub(n: int) -> nn.Module:
    import adapters
    from adapters.composition import Fuse
    from transformers import AutoModel

    torch.manual_seed(0)
    hf = AutoModel.from_pretrained(default_encoder_path())
    adapters.init(hf)
    names = [f"task{t}" for t in range(n)]
    for name in names:
        hf.add_adapter(name, config=adapters.SeqBnConfig(reduction_factor=16))
    hf.add_adapter_fusion(Fuse(*names), "dynamic")  # the paper's fusion: query, key, value, V regularised
    hf.train_adapter_fusion(Fuse(*names))  # freezes all but the fusion, activates it
    return Pooled(hf)


def fusion_params(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "fusion" in n and p.requires_grad)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one round, N <= 5 (a smoke test)")
    parser.add_argument("--out", default=str(OUT), help="folder for fusion_speed.{md,json}")
    args = parser.parse_args()
    ns, hub_ns = ([2, 5], [2]) if args.quick else ([2, 5, 10, 20], [2, 5, 10])
    rounds, warmup = (1, 1) if args.quick else (9, 2)

    models = {"bare": ours(0, None)}
    for n in ns:
        models[f"ours_full_N{n}"] = ours(n, "full")
        models[f"ours_light_N{n}"] = ours(n, "light")
    for n in hub_ns:
        models[f"adapterhub_fuse_N{n}"] = adapterhub(n)
    print(f"inference, batch {BATCH} x {LENGTH}:", flush=True)
    infer_s = timed_rotation({name: inferer(m) for name, m in models.items()}, rounds, 1, warmup)

    top = hub_ns[-1]
    train_names = [f"ours_full_N{top}", f"ours_light_N{top}", f"adapterhub_fuse_N{top}"]
    steps = {}
    for name in train_names:
        steps[name], _ = trainer(models[name])
    print(f"fusion training step (adapters frozen), N={top}:", flush=True)
    train_s = timed_rotation(steps, max(rounds // 2, 1), 1, warmup)

    one = ours(2, None).model
    adapter_params = sum(p.numel() for p in one.adapters.parameters("1"))
    results = {
        **environment("cl-adapters", "torch", "transformers", "adapters"),
        "setup": {"batch": BATCH, "length": LENGTH, "r": R, "inference": f"{rounds} rounds x 1 batch",
                  "training": f"{max(rounds // 2, 1)} rounds x 1 step"},
        "adapter_params_per_task": adapter_params,
        "inference": {name: {"s_per_batch": infer_s[name], "overhead_vs_bare": infer_s[name] / infer_s["bare"] - 1,
                             "fusion_params_per_task": fusion_params(m)} for name, m in models.items()},
        "fusion_training": {name: {"s_per_step": train_s[name], "vs_adapterhub": train_s[train_names[-1]] / train_s[name]}
                            for name in train_names},
    }
    write(results, markdown(results), Path(args.out) / "fusion_speed")


def markdown(res: dict) -> str:
    s = res["setup"]
    lines = [
        f"# AdapterFusion inference on all-MiniLM-L6-v2 (batch {s['batch']} x {s['length']}, Pfeiffer r={s['r']})",
        "",
        environment_line(res),
        f"Medians over {s['inference']} (training: {s['training']}), configs in rotating order in one process. "
        f"Each task also stores its adapter: {res['adapter_params_per_task']:,} parameters.",
        "",
        "| inference | s/batch | overhead vs bare | fusion params per task |",
        "| --- | --- | --- | --- |",
    ]
    for n, r in res["inference"].items():
        lines.append(f"| {n} | {r['s_per_batch']:.3f} | {100 * r['overhead_vs_bare']:+.1f}% | {r['fusion_params_per_task']:,} |")
    lines += ["", "| fusion training step | s/step | speed vs AdapterHub |", "| --- | --- | --- |"]
    for n, r in res["fusion_training"].items():
        lines.append(f"| {n} | {r['s_per_step']:.3f} | {r['vs_adapterhub']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
