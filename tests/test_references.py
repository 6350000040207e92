"""Reference runs (single_task, joint), their cache, and the transfer metrics they feed."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from avalanche.core import SupervisedPlugin
from hydra.utils import instantiate

from cl_adapters.errors import UserError
from cl_adapters.models import MLP
from cl_adapters.outputs import report
from cl_adapters.runs.run import run
from cl_adapters.streams import split_digits

QUICK = ("stream=split_digits", "strategy.epochs=2")


class Record(SupervisedPlugin):
    """Before each training experience: the training set size and the backbone weights."""

    def __init__(self):
        super().__init__()
        self.sizes, self.weights = [], []

    def before_training_exp(self, strategy, **kwargs):
        self.sizes.append(len(strategy.adapted_dataset))
        self.weights.append({k: v.clone() for k, v in strategy.model.backbone.state_dict().items()})


def train_reference(make_cfg, protocol):
    cfg = make_cfg(*QUICK, f"strategy={protocol}")
    record, stream = Record(), split_digits(n_tasks=5, seed=0)
    strategy = instantiate(cfg.strategy, backbone=MLP((1, 8, 8), hidden=(32,)), monitors=[record])
    initial = {k: v.clone() for k, v in strategy.model.backbone.state_dict().items()}
    for exp in stream.train_stream:
        strategy.train(exp)
    return record, initial, [len(e.dataset) for e in stream.train_stream]


@pytest.mark.parametrize("protocol", ["single_task", "joint"])
def test_references_restart_from_the_initial_weights(make_cfg, protocol):
    record, initial, sizes = train_reference(make_cfg, protocol)
    for weights in record.weights:
        assert all(torch.equal(weights[k], v) for k, v in initial.items())
    expected = list(np.cumsum(sizes)) if protocol == "joint" else sizes  # joint: the union of tasks 0..i
    assert record.sizes == expected


def test_references_are_cached_reused_and_feed_transfer_metrics(make_cfg, tmp_path, capsys):
    refs = tmp_path / "refs"
    first = run(make_cfg(*QUICK, "strategy=full_ft", "references.compute=true"), tmp_path / "ft")
    files = sorted(p.name.split("-")[0] for p in refs.glob("*.json"))
    assert files == ["joint", "single_task"]
    S = first["references"]["single_task"]["diagonal"]
    J = first["references"]["joint"]["diagonal"]
    R = np.array(first["accuracy_matrix"])
    assert first["metrics"]["transfer_vs_single"] == pytest.approx(np.mean(np.diag(R) - S))
    assert first["metrics"]["intransigence"] == pytest.approx(np.mean(np.array(J) - np.diag(R)))

    capsys.readouterr()
    mtimes = {p: p.stat().st_mtime_ns for p in refs.glob("*.json")}
    second = run(make_cfg(*QUICK, "strategy=adapter", "references.compute=true"), tmp_path / "ad")
    assert "training it first" not in capsys.readouterr().out  # the same stream/model/budget/seed: reused
    assert {p: p.stat().st_mtime_ns for p in refs.glob("*.json")} == mtimes
    assert second["references"]["single_task"]["key"] == first["references"]["single_task"]["key"]
    assert "transfer_vs_single" in second["metrics"] and second["metrics"]["bwt"] == 0.0


def test_a_changed_budget_misses_the_cache(make_cfg, tmp_path, capsys):
    run(make_cfg(*QUICK, "strategy=single_task"), tmp_path / "ref")
    same = run(make_cfg(*QUICK, "strategy=full_ft", "strategy.eval_batch_size=64"), tmp_path / "a")
    assert "single_task" in same["references"]  # speed-only settings keep the key
    other = run(make_cfg("stream=split_digits", "strategy.epochs=1", "strategy=full_ft"), tmp_path / "b")
    assert "single_task" not in other["references"] and "transfer_vs_single" not in other["metrics"]
    assert "none cached" in capsys.readouterr().out


def test_an_entry_made_for_other_settings_is_refused(make_cfg, tmp_path, capsys):
    run(make_cfg(*QUICK, "strategy=single_task"), tmp_path / "ref")
    (path,) = (tmp_path / "refs").glob("single_task-*.json")
    entry = json.loads(path.read_text())
    entry["fields"]["epochs"] = 99  # as if the file were edited or the key collided
    path.write_text(json.dumps(entry))
    results = run(make_cfg(*QUICK, "strategy=full_ft"), tmp_path / "a")
    assert "single_task" not in results["references"]
    assert "made for other settings" in capsys.readouterr().out


def test_a_references_dir_that_is_a_broken_link_is_named(make_cfg, tmp_path):
    (tmp_path / "refs").symlink_to(tmp_path / "gone")
    with pytest.raises(UserError, match=r"refs is a link to nothing"):
        run(make_cfg(*QUICK, "strategy=full_ft"), tmp_path / "a")
    assert json.loads((tmp_path / "a" / "results.json").read_text())["run"]["status"] == "failed"


@pytest.mark.parametrize("override,match", [
    ("strategy.model.train_backbone=first", "fine-tunes the whole backbone"),
    ("plugins=[ewc]", "do not apply to the joint reference"),
])
def test_a_reference_that_is_not_plain_fine_tuning_is_refused(make_cfg, tmp_path, override, match):
    with pytest.raises(UserError, match=match):
        run(make_cfg(*QUICK, "strategy=joint", override), tmp_path)


def test_references_can_have_their_own_optimizer(make_cfg, tmp_path):
    """A pretrained backbone is fine-tuned whole with a smaller learning rate than its adapters."""
    ref_opt = ["+references.optimizer._target_=torch.optim.SGD", "+references.optimizer._partial_=true",
               "+references.optimizer.lr=0.05"]
    ref = run(make_cfg(*QUICK, "strategy=single_task", *ref_opt), tmp_path / "ref")
    assert ref["config"]["strategy"]["optimizer"]["_target_"] == "torch.optim.SGD"
    adapter = run(make_cfg(*QUICK, "strategy=adapter", "strategy.optimizer.lr=0.01", *ref_opt), tmp_path / "a")
    assert adapter["references"]["single_task"]["fields"]["optimizer"]["lr"] == 0.05
    assert adapter["config"]["strategy"]["optimizer"]["lr"] == 0.01


def test_two_processes_needing_a_reference_train_it_once(tmp_path):
    """The reference lock: two runs started together with references.compute=true; one trains each
    reference, the other waits and reads it from the cache; both get transfer and intransigence."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    common = [*QUICK, "strategy.epochs=1", "references.compute=true", f"references.dir={tmp_path}/refs", "logger=console"]
    procs = [subprocess.Popen([sys.executable, "-m", "cl_adapters", *common, f"strategy={s}", f"hydra.run.dir={tmp_path}/{s}"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for s in ("adapter", "full_ft")]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    for protocol in ("single_task", "joint"):
        trained = [s for s in ("adapter", "full_ft") if (tmp_path / s / "references" / protocol / "results.json").exists()]
        assert len(trained) == 1, (protocol, trained)
    for s in ("adapter", "full_ft"):
        metrics = json.loads((tmp_path / s / "results.json").read_text())["metrics"]
        assert {"transfer_vs_single", "intransigence"} <= set(metrics)


def test_a_run_that_started_before_its_reference_was_cached_is_reported_incomplete(make_cfg, tmp_path):
    run(make_cfg(*QUICK, "strategy=adapter"), tmp_path / "sweep" / "0_adapter")  # nothing cached yet
    run(make_cfg(*QUICK, "strategy=joint"), tmp_path / "sweep" / "1_joint")  # then the reference
    runs, missing = report.load_runs([tmp_path / "sweep"])
    assert [r["run"]["strategy"] for r in runs] == ["joint"]
    assert len(missing) == 1 and "0_adapter: incomplete, ran before its joint reference was cached" in missing[0]
