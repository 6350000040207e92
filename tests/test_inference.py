"""A run's model from its run dir: the same accuracies as the run measured, mixed-task batches routed per
sample, an export/load round trip with identical outputs, mismatched files refused naming the tensor."""

import json

import pytest
import torch

from cl_adapters.errors import UserError
from cl_adapters.models.compositions import averaged_adapter
from cl_adapters.runs.inference import build_model, export, load_run, predict
from cl_adapters.models import checkpoint
from cl_adapters.runs.resume import Checkpoints
from cl_adapters.runs.run import run


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A fusion run: adapters, fusions and heads per task on a backbone trained on task 1."""
    from hydra import compose, initialize_config_dir

    from cl_adapters import CONFIG_DIR

    out = tmp_path_factory.mktemp("run")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["logger=console", f"references.dir={out}/refs", "strategy=adapter_fusion",
                                           "fusion=light", "strategy.epochs=1", "stream.n_tasks=2"])
    results = run(cfg, out)
    return out, results


def test_loaded_model_scores_what_the_run_measured(finished):
    from cl_adapters.streams import split_digits

    out, results = finished
    model = load_run(out)
    for task, experience in enumerate(split_digits(n_tasks=2, seed=0).test_stream):
        samples = list(experience.dataset)
        x, y, t = torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples]), torch.tensor([s[2] for s in samples])
        accuracy = int((predict(model, x, t) == y).sum()) / len(y)
        assert accuracy == results["accuracy_matrix"][-1][task]  # exactly: the same weights


def test_a_mixed_batch_is_routed_per_sample(finished):
    out, _ = finished
    model = load_run(out)
    x = torch.rand(16, 1, 8, 8)
    tasks = torch.tensor([0, 1] * 8)
    mixed = model(x, tasks)
    for t in (0, 1):
        alone = model(x[tasks == t], t)  # other batch shapes: other GEMM blocking, equal only to rounding
        torch.testing.assert_close(mixed[tasks == t][:, : alone.shape[1]], alone, rtol=1e-5, atol=1e-6)


def test_export_and_load_give_identical_outputs(finished, tmp_path):
    out, _ = finished
    model = load_run(out)
    export(out, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.safetensors", "config.json", "task-0.safetensors", "task-1.safetensors"]
    head = Checkpoints(out).chain()[0]
    fresh = checkpoint.load(build_model(head.config, head.record["input_shape"]), tmp_path).eval()
    x, tasks = torch.rand(8, 1, 8, 8), torch.tensor([0, 1] * 4)
    assert torch.equal(fresh(x, tasks), model(x, tasks))


def test_a_mismatched_adapter_file_is_refused_naming_the_tensor(finished):
    out, _ = finished
    checkpoints = Checkpoints(out)
    links = checkpoints.chain()
    config = json.loads(json.dumps(links[0].config))
    config["strategy"]["model"]["adapter"]["r"] = 16  # the run's adapters have r=64
    with pytest.raises(UserError, match=r"task-0.safetensors: adapter 0: tensor layers\.0\.down\.\w+ has shape \(64,"
                                        r".*, the model \(16,"):
        checkpoints.load(build_model(config, links[0].record["input_shape"]), links)


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no usable checkpoint"):
        load_run(tmp_path)


def test_one_format_a_runs_checkpoint_is_a_task_file(finished, tmp_path):
    """The run's chain and an export are the same task files: load_task takes a task straight from a
    run's checkpoint, and the files hold the task's parts by role (no task key in an adapter's names)."""
    out, _ = finished
    model = load_run(out)
    links = Checkpoints(out).chain()
    chain_file = checkpoint.read(links[1].path)
    roles = {name.split(".", 1)[0] for name in chain_file.tensors}
    assert {"head", "adapter", "fusion"} <= roles <= {"head", "adapter", "fusion", "shared", "rng", "plugin"}
    assert chain_file.role("adapter.").keys() == checkpoint.read(links[0].path).role("adapter.").keys()
    export(out, tmp_path)
    exported = checkpoint.read(tmp_path / "task-1.safetensors")
    assert {name.split(".", 1)[0] for name in exported.tensors} == {"head", "adapter", "fusion"}
    assert all(torch.equal(exported.tensors[k], chain_file.tensors[k]) for k in exported.tensors)

    fresh = build_model(links[0].config, links[0].record["input_shape"])
    checkpoint.restore(fresh, checkpoint.read(links[0].path))  # task 0's link: the whole model after task 0
    assert checkpoint.load_task(fresh, links[1].path) == 1
    fresh.eval()
    x = torch.rand(6, 1, 8, 8)
    assert torch.equal(fresh(x, 1), model(x, 1))


def test_an_edited_export_is_refused_naming_the_file(finished, tmp_path):
    out, _ = finished
    export(out, tmp_path)
    path = tmp_path / "task-1.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    links = Checkpoints(out).chain()
    with pytest.raises(UserError, match=r"task-1.safetensors: its contents do not match its digest"):
        checkpoint.load(build_model(links[0].config, links[0].record["input_shape"]), tmp_path)


def test_an_export_format_the_model_cannot_take_is_refused_before_writing(finished, tmp_path):
    out, _ = finished
    with pytest.raises(UserError, match=r"export format must be one of \('cl-adapters', 'peft', 'merged', 'adapterhub'\), got 'onnx'"):
        export(out, tmp_path, format="onnx")
    with pytest.raises(UserError, match="format=peft needs a Hugging Face encoder .model=hf_encoder.; this model's backbone is MLP"):
        export(out, tmp_path, format="peft")
    assert not list(tmp_path.iterdir())


def test_a_combined_adapter_run_forgets_nothing_and_loads_back(make_cfg, tmp_path):
    """adapter=lora_pfeiffer (a LoRA and a Pfeiffer adapter per task) through a whole run: task-IL BWT exactly
    0, and load_run rebuilds it from the stored config (parts and all) with the accuracies the run measured."""
    from cl_adapters.streams import split_digits

    cfg = make_cfg("adapter=lora_pfeiffer", "strategy.epochs=1", "stream.n_tasks=5", "probe_samples=0")
    results = run(cfg, tmp_path / "run")
    R = results["accuracy_matrix"]
    assert all(R[i][j] == R[j][j] for j in range(5) for i in range(j, 5)) and results["metrics"]["bwt"] == 0
    model = load_run(tmp_path / "run")
    assert type(model.adapter_config).__name__ == "CombinedConfig" and len(model.adapter_config.parts) == 2
    for task, experience in enumerate(split_digits(n_tasks=5, seed=0).test_stream):
        samples = list(experience.dataset)
        x, y = torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples])
        assert int((predict(model, x, task) == y).sum()) / len(y) == R[-1][task]


def test_compositions_average_is_measured_after_the_last_task(make_cfg, tmp_path):
    """compositions=[average]: each task's accuracy through the tasks' averaged adapter (its own head),
    as the reloaded model gives it; ACC averaged in the metrics; refused up front without per-task adapters."""
    from cl_adapters.streams import split_digits

    results = run(make_cfg("compositions=[average]", "strategy.epochs=1", "probe_samples=0"), tmp_path / "run")
    averaged = results["compositions"]["average"]
    assert len(averaged) == 5 and results["metrics"]["acc_average"] == pytest.approx(sum(averaged) / 5)
    assert results["metrics"]["acc_average"] < results["metrics"]["acc"]  # one adapter for five tasks forgets
    model = load_run(tmp_path / "run")
    with averaged_adapter(model):
        for task, experience in enumerate(split_digits(n_tasks=5, seed=0).test_stream):
            samples = list(experience.dataset)
            x, y = torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples])
            assert int((predict(model, x, task) == y).sum()) / len(y) == averaged[task]
    for bad, message in ((["compositions=[stack]"], r"compositions must be a list of \['average'\]"),
                         (["compositions=[average]", "strategy=full_ft"], "composes per-task adapters")):
        with pytest.raises(UserError, match=message):
            run(make_cfg(*bad, "strategy.epochs=1"), tmp_path / bad[-1])


def test_a_stacked_run_forgets_nothing_and_loads_back(make_cfg, tmp_path):
    """strategy.model.stack_on=0: tasks 1.. train their adapter on top of task 0's frozen one; task-IL BWT
    exactly 0, and the reloaded run routes the same stacks (the accuracies it measured)."""
    from cl_adapters.streams import split_digits

    results = run(make_cfg("strategy.model.stack_on=0", "strategy.epochs=1", "probe_samples=0"), tmp_path / "run")
    R = results["accuracy_matrix"]
    assert results["metrics"]["bwt"] == 0 and all(R[i][j] == R[j][j] for j in range(5) for i in range(j, 5))
    model = load_run(tmp_path / "run")
    assert model.stack_on == 0
    for task, experience in enumerate(split_digits(n_tasks=5, seed=0).test_stream):
        samples = list(experience.dataset)
        x, y = torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples])
        assert int((predict(model, x, task) == y).sum()) / len(y) == R[-1][task]


SERVED_WITHOUT_LABELS = [("class_il", f"router={r}") for r in ("oracle", "entropy", "prototype", "prototype_mahalanobis",
                                                                 "prototype_adapted", "learned")] + [
    ("class_il", "strategy=ncm"), ("domain_il", "router=prototype")]


@pytest.fixture(scope="module", params=SERVED_WITHOUT_LABELS, ids=lambda p: f"{p[0]}-{p[1].split('=')[1]}")
def unlabelled_run(request, tmp_path_factory):
    """A tiny class- or domain-IL run (2 tasks of split_digits, one epoch), its results and its export."""
    from hydra import compose, initialize_config_dir

    from cl_adapters import CONFIG_DIR

    scenario, choice = request.param
    out = tmp_path_factory.mktemp("unlabelled")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["logger=console", f"references.dir={out}/refs", "strategy.epochs=1",
                                           "probe_samples=0", "stream.n_tasks=2", "stream.class_order=[0,1,2,3]",
                                           "stream.train_per_task=100",
                                           f"scenario={scenario}", choice])
    results = run(cfg, out / "run")
    return out / "run", results, scenario, export(out / "run", out / "export")


def test_given_task_labels_are_used_in_every_scenario(unlabelled_run):
    """With task labels, predict takes each sample's own task (no router), as Predictor does: per task, the
    accuracy the run measured with labels (accuracy_matrix_til), on a batch mixing every task."""
    from cl_adapters.runs.predictor import Predictor
    from cl_adapters.streams import split_digits

    run_dir, results, scenario, exported = unlabelled_run
    samples = [s for e in split_digits(2, [0, 1, 2, 3], scenario=scenario).test_stream for s in e.dataset]
    x, y, t = (torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples]),
               torch.tensor([s[2] for s in samples]))
    labels = predict(load_run(run_dir), x, t)
    assert torch.equal(labels, Predictor(exported).predict(x, t))
    accuracy = [int((labels == y)[t == task].sum()) / int((t == task).sum()) for task in (0, 1)]
    assert accuracy == results["accuracy_matrix_til"][-1]
