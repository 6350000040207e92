"""experiment=ptm_cil/<dataset>: EASE Table 1's protocol (split, class order, ViT-B/16-IN21K, per-strategy budget)
composes for every dataset, and whole runs of it go through on the CIFAR-100 fixture with a tiny timm ViT."""

import numpy as np
import pytest
from test_image_streams import pilot_order

DATASETS = {  # EASE Table 1's splits (B0 Inc<i>) and orders; VTAB's natural order is the authors' ("shuffle": false)
    "cifar100": ("cl_adapters.streams.cifar100", 5, "seed1993"),
    "cub200": ("cl_adapters.streams.image_folder", 10, "seed1993"),
    "imagenet_r": ("cl_adapters.streams.image_folder", 5, "seed1993"),
    "imagenet_a": ("cl_adapters.streams.image_folder", 20, "seed1993"),
    "objectnet": ("cl_adapters.streams.image_folder", 10, "seed1993"),
    "omnibenchmark": ("cl_adapters.streams.image_folder", 30, "seed1993"),
    "vtab": ("cl_adapters.streams.image_folder", 10, "natural"),
}


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_each_experiment_has_the_published_protocol(make_cfg, dataset):
    target, increment, order = DATASETS[dataset]
    cfg = make_cfg(f"experiment=ptm_cil/{dataset}", "strategy=ncm")
    assert (cfg.stream._target_, cfg.stream.initial_classes, cfg.stream.increment, cfg.stream.class_order) == \
        (target, 0, increment, order)
    assert (cfg.model._target_, cfg.model.name, cfg.model.pretrained, cfg.model.normalize) == \
        ("cl_adapters.models.TimmBackbone", "vit_base_patch16_224_in21k", True, False)
    assert (cfg.scenario, cfg.device, cfg.strategy.precision, cfg.strategy.optimizer._target_) == \
        ("class_il", "auto", "auto", "torch.optim.SGD")
    adapter, full_ft = make_cfg(f"experiment=ptm_cil/{dataset}", "strategy=adapter"), \
        make_cfg(f"experiment=ptm_cil/{dataset}", "strategy=full_ft", "strategy.epochs=3")
    assert adapter.strategy.epochs >= 20 and adapter.strategy.optimizer.lr >= 0.008  # EASE's per-dataset budget
    assert (full_ft.strategy.epochs, full_ft.strategy.batch_size, full_ft.strategy.optimizer.lr) == (3, 128, 1e-3)


def test_the_per_strategy_budgets_are_the_authors(make_cfg):
    """A few values read off the authors' jsons (CVPR24-Ease exps/ease_*_in21k.json, PILOT exps/finetune.json)."""
    budget = {(d, s): make_cfg(f"experiment=ptm_cil/{d}", f"strategy={s}").strategy
              for d, s in [("cifar100", "adapter"), ("vtab", "lora_per_task"), ("objectnet", "lora"), ("cub200", "full_ft")]}
    read = {k: (v.epochs, v.batch_size, v.optimizer.lr, v.optimizer.weight_decay, v.optimizer.momentum) for k, v in budget.items()}
    assert read == {("cifar100", "adapter"): (20, 48, 0.025, 5e-4, 0.9), ("vtab", "lora_per_task"): (45, 16, 0.03, 5e-3, 0.9),
                    ("objectnet", "lora"): (25, 48, 0.05, 5e-3, 0.9), ("cub200", "full_ft"): (20, 128, 1e-3, 2e-4, 0.9)}


def _tiny(tiny_timm) -> list[str]:
    kwargs = ",".join(f"{k}:{v}" for k, v in tiny_timm["model_kwargs"].items())
    return [f"model.name={tiny_timm['name']}", "model.pretrained=false", f"model.checkpoint_path={tiny_timm['checkpoint_path']}",
            f"model.model_kwargs={{{kwargs}}}"]


@pytest.mark.parametrize("strategy", [["strategy=ncm"], ["strategy=adapter", "router=prototype", "strategy.epochs=1"]],
                         ids=["ncm", "adapter-prototype"])
def test_a_whole_run_of_the_cifar100_experiment(make_cfg, tmp_path, cifar100_root, tiny_timm, strategy):
    """The command a user runs, on the CIFAR-100 fixture (all 100 classes in the seed-1993 order) through a tiny random
    timm ViT instead of ViT-B/16, in 4 tasks of 25 classes for time (the 20 of 5: the test below): A_b, Ā, A_B, fp32 on CPU."""
    from cl_adapters.runs.run import run

    cfg = make_cfg("experiment=ptm_cil/cifar100", *strategy, f"stream.root={cifar100_root}", *_tiny(tiny_timm),
                   "stream.increment=25", "probe_samples=0", "strategy.batch_size=25", "strategy.eval_batch_size=200")
    results = run(cfg, tmp_path / "run")
    order = pilot_order(100)
    assert results["run"]["status"] == "complete" and results["scenario"] == "class_il"
    assert results["class_order"] == order and results["classes_per_task"] == [order[i:i + 25] for i in range(0, 100, 25)]
    curve = results["accuracy_curve"]
    assert len(curve) == 4 and all(0 <= a <= 1 for a in curve)
    assert results["metrics"]["avg_incremental_acc"] == pytest.approx(np.mean(curve))
    assert results["metrics"]["last_acc"] == pytest.approx(curve[-1])
    assert results["machine"]["device"] == "cpu" and results["machine"]["precision"] == "fp32"


def test_the_cifar100_stream_is_20_tasks_of_5_in_pilots_order(make_cfg, cifar100_root):
    from hydra.utils import instantiate

    stream = instantiate(make_cfg("experiment=ptm_cil/cifar100", f"stream.root={cifar100_root}").stream)
    order = pilot_order(100)
    assert stream.classes_per_task == [order[i:i + 5] for i in range(0, 100, 5)] and len(stream.train_stream) == 20


def test_a_folder_stream_is_augmented_once_in_the_loader(make_cfg, tmp_path, image_folder_root, tiny_timm, monkeypatch):
    """experiment=ptm_cil/cub200 on the ImageFolder fixture: training images come augmented from the loader
    (PILOT's transform per decoded image), so the backbone never crops its batches again; model.augment=false
    turns the loader's augmentation off as well."""
    from cl_adapters.models import images
    from cl_adapters.runs.run import run

    def again(*args):
        raise AssertionError("the backbone augmented a batch the loader had augmented")

    monkeypatch.setattr(images, "random_resized_crop_flip", again)
    overrides = ["experiment=ptm_cil/cub200", "strategy=adapter", "router=prototype", "strategy.epochs=1", f"stream.root={image_folder_root}",
                 "stream.n_classes=6", "stream.increment=3", "stream.image_size=32", "probe_samples=0", *_tiny(tiny_timm)]
    results = run(make_cfg(*overrides), tmp_path / "run")
    assert results["run"]["status"] == "complete" and len(results["accuracy_curve"]) == 2
    assert make_cfg(*overrides).stream.augment is True
    assert make_cfg(*overrides, "model.augment=false").stream.augment is False
