"""Scenarios without task labels at test time: streams, heads, routers, the TIL-CIL gap, task-ID accuracy."""

import json

import numpy as np
import pytest
import torch

from cl_adapters.adapters import AdapterConfig
from cl_adapters.errors import UserError
from cl_adapters.metrics import summarize
from cl_adapters.models import MLP, AdaptedModel
from cl_adapters.routers import EntropyRouter, LearnedRouter, PrototypeRouter
from cl_adapters.runs.run import run
from cl_adapters.streams import split_digits, task_stream

QUICK = ("strategy.epochs=2", "stream.n_tasks=3", "stream.class_order=[0,1,2,3,4,5]")


def labels(stream):
    return [sorted(set(int(y) for _, y, _ in exp.dataset)) for exp in stream]


def test_class_il_labels_are_global_and_domain_il_labels_shared():
    til, cil, dil = (split_digits(n_tasks=5, scenario=s) for s in ("task_il", "class_il", "domain_il"))
    assert labels(til.test_stream) == [[0, 1]] * 5 == labels(dil.test_stream)
    assert labels(cil.test_stream) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert [exp.classes for exp in cil.train_stream] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert [exp.task_labels for exp in cil.train_stream] == [[t] for t in range(5)]  # training keeps them
    assert (cil.kind, dil.kind, til.kind) == ("class_il", "domain_il", "task_il")


@pytest.mark.parametrize("call,match", [
    (lambda: split_digits(scenario="online"), r"scenario must be one of \('task_il', 'class_il', 'domain_il'\)"),
    (lambda: __import__("cl_adapters.streams", fromlist=["x"]).permuted_mnist(scenario="class_il"),
     "stream permuted_mnist supports scenario task_il, domain_il, not class_il"),
    (lambda: __import__("cl_adapters.streams", fromlist=["x"]).sentiment_domains(scenario="class_il"),
     "stream sentiment_domains supports scenario task_il, domain_il, not class_il"),
    (lambda: task_stream([(torch.rand(4, 2), torch.tensor([0, 1, 0, 1])), (torch.rand(3, 2), torch.tensor([0, 1, 2]))],
                         [(torch.rand(2, 2), torch.tensor([0, 1])), (torch.rand(3, 2), torch.tensor([0, 1, 2]))],
                         scenario="domain_il"), r"domain_il needs the same classes in every task; .* \[2, 3\]"),
])
def test_unsupported_scenarios_are_refused_in_one_line(call, match):
    with pytest.raises(UserError, match=match):
        call()


def test_a_stream_config_that_ignores_the_scenario_is_refused(make_cfg, tmp_path):
    with pytest.raises(UserError, match=r"built a task_il stream, not scenario=class_il: pass scenario: \$\{scenario\}"):
        run(make_cfg(*QUICK, "scenario=class_il", "strategy=full_ft", "stream.scenario=task_il"), tmp_path)


def test_per_task_adapters_without_task_labels_need_a_router():
    with pytest.raises(UserError, match="scenario=class_il gives no task label at test time: per-task adapters need a router"):
        AdaptedModel(MLP((1, 8, 8), hidden=(16,)), AdapterConfig(r=4), scenario="class_il")


def test_a_shared_head_grows_with_the_classes_and_masks_untrained_ones():
    torch.manual_seed(0)
    model = AdaptedModel(MLP((1, 8, 8), hidden=(16,)), None, train_backbone="all", scenario="class_il")
    model.add_task(0, [0, 1])
    model.add_task(1, [2, 3], train=False)  # seen at evaluation only: a column, masked
    first = model.heads["shared"].weight[:2].detach().clone()
    x = torch.rand(3, 1, 8, 8)
    model.eval()
    out = model(x, 0)
    assert out.shape == (3, 4) and torch.isinf(out[:, 2:]).all() and torch.isfinite(out[:, :2]).all()
    model.train()
    model.add_task(1, [2, 3])
    model.eval()
    assert torch.isfinite(model(x, 1)).all() and model.head_classes["shared"] == [0, 1, 2, 3]
    assert torch.equal(model.heads["shared"].weight[:2], first)  # growth keeps the trained columns
    with model.given_task_labels():  # the task-IL view: only the task's own classes
        til = model(x, torch.tensor([0, 1, 1]))
    assert torch.isinf(til[0, 2:]).all() and torch.isinf(til[1:, :2]).all()


class Features:
    """A stand-in model whose features are the inputs: routers tested on hand-made features."""

    def __init__(self, tasks):
        self.trained_tasks = tasks

    def features(self, x, route):
        return x


@pytest.mark.parametrize("metric", ["cosine", "mahalanobis"])
def test_prototype_router_picks_the_task_of_the_nearest_class_mean(metric):
    router = PrototypeRouter(metric=metric, shrinkage=0.5)
    means = {0: ([1.0, 0.0], [0.0, 1.0]), 1: ([-1.0, 0.0], [0.0, -1.0])}  # task -> its two classes' means
    g = torch.Generator().manual_seed(0)
    for task, (a, b) in means.items():
        x = torch.cat([torch.tensor(a) + 0.05 * torch.randn(20, 2, generator=g),
                       torch.tensor(b) + 0.05 * torch.randn(20, 2, generator=g)])
        router.fit(Features([0, 1]), task, [(x, torch.tensor([2 * task] * 20 + [2 * task + 1] * 20))])
    assert router.tasks[1]["classes"].tolist() == [2, 3]
    torch.testing.assert_close(router.tasks[0]["means"][0], torch.tensor([1.0, 0.0]), atol=0.05, rtol=0)
    x = torch.tensor([[0.9, 0.1], [-0.2, -0.8], [0.1, 0.7], [-0.7, 0.1]])
    assert router.predict(Features([0, 1]), x).tolist() == [0, 1, 0, 1]


def test_learned_router_separates_tasks_whose_class_means_point_the_same_way():
    g = torch.Generator().manual_seed(0)
    learned, cosine = LearnedRouter(memory=30), PrototypeRouter()
    for task, length in enumerate((1.0, 3.0)):  # every feature points the same way: cosine cannot tell
        x = torch.stack([length + 0.1 * torch.randn(40, generator=g), torch.zeros(40)], 1)
        for router in (learned, cosine):
            router.fit(Features([0, 1]), task, [(x[:20], torch.full((20,), task)), (x[20:], torch.full((20,), task))])
    assert learned.tasks[0]["features"].shape == (30, 2)  # at most ``memory`` features kept per task
    x = torch.tensor([[1.1, 0.0], [0.9, 0.0], [2.9, 0.0], [3.2, 0.0]])
    assert learned.predict(Features([0, 1]), x).tolist() == [0, 0, 1, 1]
    assert len(set(cosine.predict(Features([0, 1]), x).tolist())) == 1  # the prototype router cannot
    restored = LearnedRouter(memory=30)
    for task in (0, 1):
        restored.load_task_state(task, learned.task_state(task))
    assert restored.predict(Features([0, 1]), x).tolist() == [0, 0, 1, 1]
    assert learned.predict(Features([0]), x).tolist() == [0, 0, 0, 0]  # only the tasks trained so far


@pytest.mark.parametrize("kwargs,match", [({"memory": 0}, "router.memory must be a positive integer"),
                                          ({"C": 0.0}, "router.C must be positive")])
def test_learned_router_refuses_impossible_values(kwargs, match):
    with pytest.raises(UserError, match=match):
        LearnedRouter(**kwargs)


class Heads:
    """A stand-in model: task t's head is confident on samples whose feature t is large."""

    trained_tasks = [0, 1]

    def __call__(self, copies, route):
        out = torch.empty(len(copies), 2)
        for key, idx in route:
            t = int(key)
            out[idx] = torch.stack([copies[idx, t] * 10, torch.zeros(len(idx))], 1)
        return out


@pytest.mark.parametrize("score", ["entropy", "max_softmax", "energy"])
def test_entropy_router_picks_the_confident_head(score):
    x = torch.tensor([[3.0, 0.0], [0.1, 2.0], [0.5, 0.2]])
    assert EntropyRouter(score).predict(Heads(), x).tolist() == [0, 1, 0]


def test_til_cil_gap_and_task_id_accuracy_by_hand():
    R = [[0.9, 0.0], [0.5, 0.7]]
    R_til = [[0.9, 0.5], [0.8, 0.9]]
    Q = [[1.0, 0.0], [0.6, 0.8]]
    out = summarize(R, R_til=R_til, Q=Q)
    assert out["acc_til"] == pytest.approx(0.85) and out["til_cil_gap"] == pytest.approx(0.85 - 0.6)
    assert out["task_id_acc"] == pytest.approx(0.7)


def test_oracle_routing_reproduces_the_task_il_run_exactly(make_cfg, tmp_path):
    til = run(make_cfg(*QUICK), tmp_path / "til")
    cil = run(make_cfg(*QUICK, "scenario=class_il", "router=oracle"), tmp_path / "cil")
    assert cil["accuracy_matrix"] == cil["accuracy_matrix_til"]
    measured = [row[: i + 1] for i, row in enumerate(til["accuracy_matrix"])]  # task-IL skips tasks not trained yet
    assert [row[: i + 1] for i, row in enumerate(cil["accuracy_matrix"])] == measured
    assert cil["task_id_matrix"][-1] == [1.0, 1.0, 1.0] and cil["metrics"]["til_cil_gap"] == 0.0
    assert cil["scenario"] == "class_il" and cil["run"]["router"] == "oracle"


@pytest.mark.parametrize("router", ["prototype", "learned"])
def test_a_routed_class_il_run_records_routing_and_serves_without_task_labels(make_cfg, tmp_path, router):
    from cl_adapters.runs.inference import load_run, predict

    results = run(make_cfg(*QUICK, "scenario=class_il", f"router={router}"), tmp_path)
    Q, confusion = np.array(results["task_id_matrix"]), np.array(results["task_id_confusion"])
    assert Q.shape == (3, 3) and confusion.sum() == sum(len(e.dataset) for e in split_digits(3, [0, 1, 2, 3, 4, 5]).test_stream)
    assert np.allclose(np.diag(confusion) / confusion.sum(1), Q[-1])
    assert results["metrics"]["acc"] <= results["metrics"]["acc_til"] and "task_id_acc" in results["metrics"]
    model = load_run(tmp_path)  # prototypes (stored features) come back from the checkpoint (router.* tensors)
    stream = split_digits(3, [0, 1, 2, 3, 4, 5], scenario="class_il").test_stream
    for j, exp in enumerate(stream):
        x, y = torch.stack([s[0] for s in exp.dataset]), torch.tensor([s[1] for s in exp.dataset])
        assert float((predict(model, x) == y).float().mean()) == pytest.approx(results["accuracy_matrix"][-1][j])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["scenario"] == "class_il" and saved["run"]["router"] == router
    assert (tmp_path / "task_id_confusion.png").stat().st_size > 0


def test_reports_group_rows_by_scenario_and_show_the_gap_only_where_it_exists(make_cfg, tmp_path):
    from cl_adapters.outputs.report import load_runs, rows, table

    run(make_cfg(*QUICK), tmp_path / "til" / "0")
    run(make_cfg(*QUICK, "scenario=class_il", "router=entropy"), tmp_path / "cil" / "0")
    run(make_cfg(*QUICK, "scenario=domain_il", "router=entropy"), tmp_path / "dil" / "0")
    til_only, _ = load_runs([tmp_path / "til"])
    assert "TIL-CIL gap" not in table(til_only) and table(til_only).startswith("**task_il** (task-incremental")
    runs, _ = load_runs([tmp_path / "dil", tmp_path / "til", tmp_path / "cil"])
    sections = [s for s in table(runs).split("\n\n") if not s.startswith("Rows ")]  # (no references: a note)
    # composed without Hydra's CLI, the strategy's name is "?"
    assert [s.split(" ")[0] for s in sections[::2]] == ["**task_il**", "**class_il**", "**domain_il**"]
    til, cil, dil = (section.splitlines() for section in sections[1::2])
    assert len(til) == len(cil) == len(dil) == 3 and "TIL-CIL gap" not in til[0] and "task-ID acc" in cil[0]
    assert cil[2].startswith("| 1 | ? | ?@entropy |") and dil[2].startswith("| 1 | ? | ?@entropy |")  # no scenario prefix
    assert [r["scenario"] for r in rows(runs)] == ["task_il", "class_il", "domain_il"]  # the CSV's column


def test_full_fine_tuning_in_class_il_forgets_the_earlier_classes(make_cfg, tmp_path):
    results = run(make_cfg(*QUICK, "scenario=class_il", "strategy=full_ft"), tmp_path)
    R = np.array(results["accuracy_matrix"])
    assert R[-1, :-1].max() < 0.2 and R[-1, -1] > 0.9  # only the last task's classes are predicted
    assert results["metrics"]["til_cil_gap"] > 0.3


def test_the_single_task_reference_in_class_il_has_only_its_own_classes_live(make_cfg, tmp_path):
    results = run(make_cfg(*QUICK, "scenario=class_il", "strategy=single_task"), tmp_path)
    assert min(np.diag(results["accuracy_matrix"])) > 0.9  # not diluted by earlier tasks' reset columns


@pytest.mark.parametrize("router", [["router=prototype", "router.features=adapted"], ["router=prototype_mahalanobis"],
                                    ["router=entropy", "router.score=energy"], ["router=entropy", "router.score=max_softmax"], ["router=learned"]])
def test_in_class_il_a_misrouted_sample_is_always_wrong(make_cfg, tmp_path, router):
    """Disjoint classes per task: accuracy without labels cannot exceed the task-ID accuracy, nor the same
    model's accuracy with labels."""
    m = run(make_cfg(*QUICK, "scenario=class_il", *router), tmp_path)["metrics"]
    assert 0 < m["acc"] <= min(m["acc_til"], m["task_id_acc"]) + 1e-9


def test_an_ncm_head_keeps_running_class_means_and_picks_the_nearest_by_cosine():
    from cl_adapters.models.classifiers.ncm import PrototypeHead

    head = PrototypeHead(2, [3, 5, 7])
    head.eval()
    assert torch.equal(head(torch.ones(1, 2)), torch.nn.functional.linear(torch.ones(1, 2), head.weight, head.bias))
    head.fit(torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([3, 3]))  # in two batches: one mean
    head.fit(torch.tensor([[2.0, 0.0], [0.0, 4.0]]), torch.tensor([3, 5]))
    assert torch.equal(head.means, torch.tensor([[2.0, 0.0], [0.0, 4.0], [0.0, 0.0]]))
    assert head.counts.tolist() == [3, 1, 0]
    scores = head(torch.tensor([[5.0, 1.0], [1.0, 9.0]]))
    assert scores.argmax(1).tolist() == [0, 1] and torch.isinf(scores[:, 2]).all()  # class 7 never seen
    head.train()
    assert torch.isfinite(head(torch.ones(1, 2))).all()  # trains as a linear head


def test_an_ncm_head_grows_with_its_means_and_round_trips_through_a_checkpoint(tmp_path):
    from cl_adapters.models.checkpoint import load, save

    torch.manual_seed(0)
    model = AdaptedModel(MLP((1, 8, 8), hidden=(16,)), None, train_backbone="never", scenario="class_il",
                         classifier="ncm")
    model.eval()
    model.add_task(0, [0, 1])
    x = torch.rand(6, 1, 8, 8)
    model.fit_task(0, [(x, torch.tensor([0, 1, 0, 1, 0, 1]))])
    means = model.heads["shared"].means.clone()
    model.add_task(1, [2, 3])
    model.fit_task(1, [(x + 1, torch.tensor([2, 3, 2, 3, 2, 3]))])
    assert torch.equal(model.heads["shared"].means[:2], means) and model.heads["shared"].counts.tolist() == [3] * 4
    assert not model.trains()  # a frozen backbone: nothing trains, the means are fitted
    save(model, tmp_path)
    again = load(AdaptedModel(MLP((1, 8, 8), hidden=(16,)), None, train_backbone="never", scenario="class_il",
                              classifier="ncm"), tmp_path).eval()
    assert torch.equal(again.classify(x), model.classify(x))


def test_ncm_trains_the_backbone_on_the_first_task_only_and_fits_every_task(make_cfg, tmp_path):
    from cl_adapters.runs.inference import load_run, predict

    results = run(make_cfg(*QUICK, "scenario=class_il", "strategy=ncm"), tmp_path)
    params = [c["trainable_params"] for c in results["costs"]]
    assert params[0] > 0 and params[1:] == [0, 0]
    R = np.array(results["accuracy_matrix"])
    assert (np.diag(R) > 0.5).all()
    model = load_run(tmp_path)  # the class means come back from the checkpoint chain
    for j, exp in enumerate(split_digits(3, [0, 1, 2, 3, 4, 5], scenario="class_il").test_stream):
        x, y = torch.stack([s[0] for s in exp.dataset]), torch.tensor([s[1] for s in exp.dataset])
        assert float((predict(model, x) == y).float().mean()) == pytest.approx(R[-1, j])


@pytest.mark.parametrize("overrides,match", [
    (["strategy=ncm", "strategy.model.adapter=${adapter}"], "classifier=ncm is the backbone's class means"),
    (["strategy=ncm", "strategy.protocol=joint", "strategy.model.train_backbone=all"], "classifier=linear"),
    (["strategy.model.classifier=knn"], "classifier must be one of"),
])
def test_ncm_refusals(make_cfg, tmp_path, overrides, match):
    with pytest.raises(UserError, match=match):
        run(make_cfg(*QUICK, *overrides), tmp_path)
