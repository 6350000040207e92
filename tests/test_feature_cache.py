"""The frozen-feature cache: each sample's features computed once, reused across tasks and runs, keyed by
the weights, the preprocessing and the samples, safe under two writers, bounded, and never in the way."""

import hashlib
import multiprocessing
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from cl_adapters.errors import UserError
from cl_adapters.models.feature_cache import FeatureCache


class Counting(nn.Module):
    """A backbone that counts the samples it computes; ``preprocess`` as an image backbone's."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(12, 4)
        self.adapter = nn.Linear(12, 4)  # stands for an adapter: excluded from the weights' hash
        self.preprocess = nn.Identity()
        self.scale, self.samples = scale, 0

    def forward(self, x):
        self.samples += len(x)
        return self.linear(x.float().flatten(1) * self.scale)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 2, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def features(cache: FeatureCache, backbone: Counting, x: torch.Tensor) -> torch.Tensor:
    return cache.features(backbone, x, exclude={id(p) for p in backbone.adapter.parameters()})


def test_features_are_the_backbones_and_computed_once_across_runs(tmp_path):
    backbone, x = Counting(), images(10)
    first = FeatureCache(tmp_path, {"name": "m"})
    torch.testing.assert_close(features(first, backbone, x), backbone(x), rtol=0, atol=0)
    backbone.samples = 0
    assert torch.equal(features(first, backbone, x[[3, 1]]), backbone.linear(x[[3, 1]].float().flatten(1)))
    assert backbone.samples == 0 and (first.hits, first.computed) == (2, 10)
    second = FeatureCache(tmp_path, {"name": "m"})  # the next run of a sweep
    out = features(second, backbone, torch.cat([x[5:], images(3, seed=1)]))
    assert backbone.samples == 3 and (second.hits, second.computed) == (5, 3)  # only the new samples computed
    torch.testing.assert_close(out, backbone.linear(torch.cat([x[5:], images(3, seed=1)]).float().flatten(1)))


def test_a_change_of_weights_preprocessing_config_or_samples_misses_and_adapters_do_not(tmp_path):
    backbone, x = Counting(), images(6)
    features(FeatureCache(tmp_path, {"name": "m"}), backbone, x)

    def computed(identity=None, inputs=x) -> int:
        cache = FeatureCache(tmp_path, identity or {"name": "m"})
        out = features(cache, backbone, inputs)
        torch.testing.assert_close(out, backbone.linear(inputs.float().flatten(1) * backbone.scale))
        return cache.computed

    assert computed() == 0
    with torch.no_grad():
        backbone.adapter.weight.add_(1.0)  # an adapter's weights: a bare forward does not read them
    assert computed() == 0
    with torch.no_grad():
        backbone.linear.weight[0, 0] += 1e-3  # trained in place: a miss
    assert computed() == 6 and computed() == 0
    backbone.preprocess = nn.Upsample(scale_factor=2)  # another preprocessing (its repr is in the key)
    assert computed() == 6
    assert computed({"name": "m", "pooling": "mean"}) == 6  # another model config
    assert computed(inputs=images(6, seed=7)) == 6  # another split: other samples
    assert computed(inputs=x.float()) == 6  # the same pixels as floats: another input
    assert computed(inputs=x.flip(0)) == 0  # the same samples in another order


def _write(root, seed: int, rounds: int) -> None:
    backbone = Counting()
    for r in range(rounds):
        FeatureCache(root, {"name": "m"}).features(backbone, images(64, seed=r % 3))  # the same shards, overlapping


def test_two_writers_do_not_corrupt_an_entry(tmp_path):
    ctx = multiprocessing.get_context("spawn")  # a forked child of a process whose torch threads ran can hang
    writers = [ctx.Process(target=_write, args=(tmp_path, k, 6)) for k in range(2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(180)
        assert w.exitcode == 0
    backbone = Counting()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a torn or mismatched shard would be dropped with a warning
        cache = FeatureCache(tmp_path, {"name": "m"})
        for r in range(3):
            torch.testing.assert_close(cache.features(backbone, images(64, seed=r)), backbone(images(64, seed=r)))
    assert cache.computed == 0 and not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncated", "edited"])
def test_a_torn_or_edited_shard_is_dropped_and_recomputed(tmp_path, damage):
    backbone, x = Counting(), images(8)
    features(FeatureCache(tmp_path, {"name": "m"}), backbone, x)
    (shard,) = tmp_path.rglob("*.safetensors")
    data = bytearray(shard.read_bytes())
    if damage == "truncated":
        del data[-10:]
    else:
        data[-1] ^= 1  # one bit of one feature
    shard.write_bytes(bytes(data))
    cache = FeatureCache(tmp_path, {"name": "m"})
    with pytest.warns(UserWarning, match="dropped .* its samples are computed again"):
        out = features(cache, backbone, x)
    torch.testing.assert_close(out, backbone.linear(x.float().flatten(1)), rtol=0, atol=0)
    assert cache.computed == 8 and hashlib.sha256(shard.read_bytes()).hexdigest() == shard.stem  # written whole again


def test_the_size_bound_removes_the_least_recently_used(tmp_path):
    backbone = Counting()
    cache = FeatureCache(tmp_path, {"name": "m"}, max_gb=1000 / 2**30)  # 1000 bytes: a shard of 8 is ~400
    for seed in range(4):
        features(cache, backbone, images(8, seed=seed))
        time.sleep(0.01)  # distinct use times
    shards = list(tmp_path.rglob("*.safetensors"))
    assert sum(s.stat().st_size for s in shards) <= 1000 and len(shards) >= 1
    for seed, computed in ((3, 0), (0, 8)):  # the last used kept, the first removed
        cache = FeatureCache(tmp_path, {"name": "m"})
        features(cache, backbone, images(8, seed=seed))
        assert cache.computed == computed


def test_an_unwritable_cache_warns_once_and_computes(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    backbone, x = Counting(), images(4)
    cache = FeatureCache(blocker / "cache", {"name": "m"})
    with pytest.warns(UserWarning, match="cannot write under"):
        out = features(cache, backbone, x)
    torch.testing.assert_close(out, backbone.linear(x.float().flatten(1)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        features(cache, backbone, images(4, seed=1))
    assert not cache.writable and cache.computed == 8


@pytest.mark.parametrize("bad", [0, -1, True, "a lot"])
def test_a_bad_bound_is_one_line(tmp_path, bad):
    with pytest.raises(UserError, match="cache_gb must be a positive number"):
        FeatureCache(tmp_path, {}, max_gb=bad)


STRATEGIES = {"ncm": ["strategy=ncm"], "prototype": ["strategy=lora_per_task", "router=prototype"],
              "learned": ["strategy=adapter", "router=learned"]}


@pytest.mark.parametrize("strategy", ["ncm", "prototype", pytest.param("learned", marks=pytest.mark.slow)])
def test_a_second_run_reads_every_frozen_feature_from_the_cache(make_cfg, tmp_path, cifar100_root, tiny_vit, strategy):
    """SimpleCIL, the prototype and the learned router and the probe: the first run computes each sample's
    base features once (not once per task), the second run none, with the same results."""
    from cl_adapters.runs.run import run

    def go(name: str, *more: str) -> dict:
        cfg = make_cfg("model=hf_vision", f"model.name_or_path={tiny_vit}", *STRATEGIES[strategy], "scenario=class_il",
                       "stream=cifar100", f"stream.root={cifar100_root}", "stream.increment=50", "strategy.epochs=1",
                       "probe_samples=50", "checkpoint=false", *more)
        return run(cfg, tmp_path / name)

    first, second = go("first"), go("second")
    samples = 500 + 200  # the fixture's train and test samples
    assert 0 < first["feature_cache"]["computed"] <= samples and second["feature_cache"]["computed"] == 0
    assert second["feature_cache"]["hits"] == first["feature_cache"]["hits"] + first["feature_cache"]["computed"]
    for key in ("accuracy_matrix", "accuracy_matrix_til", "probe"):
        assert first[key] == second[key]
    if strategy != "ncm":
        return
    off = go("off", "cache=false", f"cache_dir={tmp_path}/unused")
    assert "feature_cache" not in off and not (tmp_path / "unused").exists()
    np.testing.assert_allclose(off["accuracy_matrix"], first["accuracy_matrix"], atol=1e-6)
