"""classifier=ranpac (RanPAC's classifier): the ridge solution is the closed form, G and Q accumulate over
tasks exactly, λ comes from the training features' held-out share only, its state survives checkpoints,
a bad option is one line, and whole runs on split MNIST and the sentiment stream work."""

from __future__ import annotations

import pytest
import torch

from cl_adapters.errors import UserError
from cl_adapters.models import MLP, AdaptedModel
from cl_adapters.models.classifiers.ranpac import RIDGES, RanPACHead, choose_ridge
from cl_adapters.runs.run import run

RANPAC = ("strategy=ncm", "strategy.model.classifier=ranpac", "strategy.model.classifier_options={M:64}")
DIGITS = ("scenario=class_il", "stream.n_tasks=3", "stream.class_order=[0,1,2,3,4,5]", "strategy.epochs=1")


def _head(d: int = 3, M: int = 3, classes=(0, 1), W: torch.Tensor | None = None) -> RanPACHead:
    head = RanPACHead(d, list(classes), **RanPACHead.configure({"M": M})).eval()
    if W is not None:
        head.W_rand.copy_(W)  # no draw at the first fit
    return head


def _closed_form(H: torch.Tensor, Y: torch.Tensor, ridge: float) -> torch.Tensor:
    H, Y = H.double(), Y.double()
    return torch.linalg.solve(H.T @ H + ridge * torch.eye(H.shape[1], dtype=H.dtype), H.T @ Y)


def test_on_hand_made_features_wo_is_the_closed_form_over_all_samples():
    f = torch.tensor([[1.0, 0, 0], [2, 0, 1], [0, 1, 0], [0, 3, -1], [1, 1, 0], [-1, 2, 0],
                      [2, 1, 1], [0, 0, 2], [1, -1, 1], [3, 0, 0]])
    y = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1, 0, 0])
    head = _head(W=torch.eye(3))  # h = ReLU(f)
    head.fit(f[:4], y[:4])
    head.fit(f[4:], y[4:])
    head.end_fit()
    H, Y = torch.relu(f), torch.nn.functional.one_hot(y, 2).float()
    assert head.ridge.item() in RIDGES
    assert torch.allclose(head.G, H.T @ H) and torch.allclose(head.Q, H.T @ Y)  # all 10, not the 80% that chose λ
    assert torch.allclose(head.Wo.double(), _closed_form(H, Y, head.ridge.item()), atol=1e-5)
    assert torch.allclose(head(f), H @ head.Wo)  # logits h @ Wo


def test_with_a_random_projection_wo_is_the_closed_form_in_the_projected_space():
    torch.manual_seed(0)
    head = _head(d=6, M=16, classes=(3, 5, 7))
    f, y = torch.randn(50, 6), torch.tensor([3, 5, 7, 5, 3] * 10)
    head.fit(f, y)
    head.end_fit()
    assert head.W_rand.any() and head.W_rand.std().item() == pytest.approx(1.0, abs=0.3)  # N(0, 1)
    H, Y = torch.relu(f @ head.W_rand), torch.nn.functional.one_hot(torch.tensor([[3, 5, 7].index(c) for c in y]), 3)
    assert torch.allclose(head.Wo.double(), _closed_form(H, Y.float(), head.ridge.item()), rtol=1e-3, atol=1e-5)


def test_g_and_q_accumulate_over_tasks_exactly():
    torch.manual_seed(1)
    W, tasks = torch.randn(4, 8), [(torch.randn(20, 4), torch.tensor([0, 1] * 10)), (torch.randn(30, 4), torch.tensor([2, 3] * 15))]
    both, alone = _head(4, 8, range(4), W), [_head(4, 8, range(4), W) for _ in tasks]
    for seed, (f, y), single in zip((10, 11), tasks, alone):
        for head in (both, single):
            torch.manual_seed(seed)  # the same 80/20 split in both
            head.fit(f, y)
            head.end_fit()
    assert torch.equal(both.G, alone[0].G + alone[1].G) and torch.equal(both.Q, alone[0].Q + alone[1].Q)
    assert both.ridge == alone[1].ridge  # λ from the last task's features alone
    assert torch.allclose(both.Wo, torch.linalg.solve(both.G + both.ridge * torch.eye(8), both.Q))


def test_the_ridge_criterion_on_a_hand_made_case():
    """h = 1 for all: the fit part gives w(λ) = n / (n + λ); held-out targets t make λ = n (1 - t) / t best."""
    n, held = torch.ones(100, 1), torch.ones(25, 1)
    G, Q = n.T @ n, n.T @ n
    assert choose_ridge(G, Q, held, torch.full((25, 1), 0.5), RIDGES) == 100.0  # w = 1/2
    assert choose_ridge(G, Q, held, torch.full((25, 1), 1 / 101), RIDGES) == 1e4  # w = 100/10100
    assert choose_ridge(G, Q, held, torch.ones(25, 1), RIDGES) == 1e-8  # the least shrinkage


def test_lambda_is_chosen_on_the_last_fifth_of_the_shuffled_training_features():
    torch.manual_seed(2)
    W, f, y = torch.randn(5, 12), torch.randn(40, 5), torch.randint(0, 3, (40,))
    head = _head(5, 12, range(3), W)
    torch.manual_seed(3)
    head.fit(f, y)
    head.end_fit()
    torch.manual_seed(3)
    order = torch.randperm(40)
    H, Y = torch.relu(f[order] @ W), torch.nn.functional.one_hot(y[order], 3).float()
    assert head.ridge.item() == choose_ridge(H[:32].T @ H[:32], H[:32].T @ Y[:32], H[32:], Y[32:], RIDGES)


def test_a_poisoned_test_set_leaves_lambda_and_the_fit_unchanged(make_cfg, tmp_path):
    from cl_adapters.runs.inference import load_run

    heads = []
    for name, test in (("clean", "stream.test_per_task=null"), ("poisoned", "stream.test_per_task=15")):
        results = run(make_cfg(*RANPAC, *DIGITS, test), tmp_path / name)
        heads.append(load_run(tmp_path / name).heads["shared"])
    assert results["metrics"]["acc"] > 0.5
    clean, poisoned = heads
    for name in ("ridge", "G", "Q", "Wo", "W_rand"):
        assert torch.equal(getattr(clean, name), getattr(poisoned, name)), name


def test_the_state_survives_a_checkpoint_round_trip(tmp_path):
    from cl_adapters.models.checkpoint import load, save

    def model():
        torch.manual_seed(0)
        return AdaptedModel(MLP((1, 8, 8), hidden=(16,)), None, train_backbone="never", scenario="class_il",
                            classifier="ranpac", classifier_options={"M": 32})

    trained, x = model().eval(), torch.rand(30, 1, 8, 8)
    for task in (0, 1):
        trained.add_task(task, [2 * task, 2 * task + 1])
        trained.fit_task(task, [(x + task, torch.tensor([2 * task, 2 * task + 1] * 15))])
    save(trained, tmp_path)
    again = load(model(), tmp_path).eval()
    for name, tensor in trained.heads["shared"].state_dict().items():
        assert torch.equal(again.heads["shared"].state_dict()[name], tensor), name
    assert torch.equal(again.classify(x), trained.classify(x))


@pytest.mark.slow
def test_a_resumed_run_ends_as_the_whole_one(whole_and_resumed):
    whole, resumed = whole_and_resumed(*RANPAC, *DIGITS)
    assert whole["accuracy_matrix"] == resumed["accuracy_matrix"]


@pytest.mark.parametrize("options,match", [
    ("{M:0}", "classifier_options.M must be a positive integer, got 0"),
    ("{ridges:[]}", "classifier_options.ridges must be a list of numbers > 0"),
    ("{holdout:1}", r"classifier_options.holdout must be a fraction in \(0, 1\), got 1"),
    ("{m:5}", r"classifier_options.m: classifier=ranpac has no such option \(its options: M, ridges, holdout\)"),
])
def test_a_bad_option_is_one_line(make_cfg, tmp_path, options, match):
    with pytest.raises(UserError, match=f"^strategy.model.{match}") as error:
        run(make_cfg("strategy=ncm", "strategy.model.classifier=ranpac", f"strategy.model.classifier_options={options}"),
            tmp_path)
    assert "\n" not in str(error.value)


def test_a_task_too_small_to_split_is_one_line():
    head = _head()
    head.fit(torch.ones(1, 3), torch.tensor([0]))  # int(1 * 0.8) = 0 samples to fit
    with pytest.raises(UserError, match="^classifier=ranpac: a task of 1 training samples cannot be split to choose λ"):
        head.end_fit()


def test_split_mnist_in_class_il(make_cfg, tmp_path):
    results = run(make_cfg(*RANPAC, "stream=split_mnist", "scenario=class_il", "stream.train_per_task=100",
                           "stream.test_per_task=50", "strategy.epochs=1"), tmp_path)
    assert results["metrics"]["acc"] > 0.5 and [c["trainable_params"] for c in results["costs"]][1:] == [0] * 4


@pytest.mark.slow
def test_sentiment_domains_with_minilm(make_cfg, tmp_path):
    """The sentiment stream has no class-IL (its domains share the labels): domain-IL, one head over all."""
    results = run(make_cfg(*RANPAC[:2], "strategy.model.classifier_options={M:512}", "stream=sentiment_domains",
                           "model=hf_encoder", "scenario=domain_il", "stream.train_per_task=150",
                           "stream.test_per_task=50", "stream.max_length=64",
                           f"stream.cache_dir={tmp_path}/tokens"), tmp_path / "run")
    R = results["accuracy_matrix"]
    assert len(R) == 3 and all(c["trainable_params"] == 0 for c in results["costs"])
    assert results["metrics"]["acc"] > 0.55  # above chance (positive / negative); 0.69 when written
