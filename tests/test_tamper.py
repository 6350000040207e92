"""The files of one run and of one export are tied together, and nothing loads that they do not hold: no
model folder's own code runs, an export never lands in a run dir or over foreign files and replaces an
earlier one whole, an export's files are bound by its digests, a chain missing a tensor or a task is refused,
a chain is served only beside its own run's results, and edited metadata is one line naming the file."""

import ast
import json
import shutil
from pathlib import Path

import pytest
from test_trust import copy_of, finished, rewrite  # noqa: F401  (fixtures: a finished 3-task run and its copies)

from cl_adapters.errors import UserError
from cl_adapters.models import checkpoint
from cl_adapters.runs.inference import build_model, export, load_run
from cl_adapters.runs.predictor import Predictor, main
from cl_adapters.runs.resume import Checkpoints
from cl_adapters.runs.run import run

QUICK = ("strategy.epochs=1", "stream.n_tasks=3", "stream.class_order=[0,1,2,3,4,5]", "probe_samples=0")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def plant_model(run_dir: Path, model: dict) -> None:
    def edit(metadata):
        config = json.loads(metadata["config"])
        config["model"] = model
        metadata["config"] = json.dumps(config)

    rewrite(run_dir / "checkpoint" / "task-0.safetensors", edit)


def test_no_model_folder_code_runs_whatever_stdin_answers(copy_of, tmp_path, monkeypatch):
    from cl_adapters.models import HFEncoder
    from cl_adapters.streams.text import load_tokenizer

    evil, ran = tmp_path / "evil", tmp_path / "the-folder's-code-ran"
    evil.mkdir()
    (evil / "evil.py").write_text(f"import pathlib\npathlib.Path({str(ran)!r}).write_text('ran')\n")
    auto_map = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel", "AutoTokenizer": ["evil.EvilTokenizer", None]}
    (evil / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": auto_map}))
    (evil / "tokenizer_config.json").write_text(json.dumps({"auto_map": auto_map}))
    monkeypatch.setattr("builtins.input", lambda *_: "y")  # transformers asks on stdin; the user says yes
    with pytest.raises(UserError, match="model.name_or_path=.* could not be loaded"):
        HFEncoder(name_or_path=str(evil))
    with pytest.raises(UserError, match="stream.tokenizer=.* could not be loaded"):
        load_tokenizer(str(evil))
    run_dir = copy_of()
    plant_model(run_dir, {"_target_": "cl_adapters.models.HFEncoder", "name_or_path": str(evil)})
    with pytest.raises(UserError, match=r"task-0.safetensors: model.name_or_path=.* could not be loaded"):
        load_run(run_dir)
    assert not ran.exists()


def test_every_hugging_face_load_goes_through_the_one_loader():
    """``cl_adapters.hub.from_pretrained`` passes trust_remote_code=False; a direct call would not."""
    import cl_adapters

    package = Path(cl_adapters.__file__).parent
    direct = [f"{path.relative_to(package)}:{node.lineno}" for path in package.rglob("*.py") if path.name != "hub.py"
              for node in ast.walk(ast.parse(path.read_text()))
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained"]
    assert direct == []


def test_an_export_into_a_run_dir_or_over_foreign_files_is_refused_and_loses_nothing(copy_of, tmp_path):
    run_dir = copy_of()
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("months of work")
    (tmp_path / "a-file").write_text("x")
    before = snapshot(tmp_path)
    for target, why in ((run_dir / "checkpoint", "inside the run dir"), (run_dir, "inside the run dir"),
                        (run_dir / "new", "inside the run dir"), (foreign, "holds files that are not an earlier export"),
                        (tmp_path / "a-file", "it is a file")):
        with pytest.raises(UserError, match=f"cannot export into {target}: .*{why}") as error:
            export(run_dir, target)
        assert "\n" not in str(error.value)
    assert snapshot(tmp_path) == before
    assert load_run(run_dir).trained_tasks == [0, 1, 2]  # the chain is whole


def test_an_export_replaces_an_earlier_one_whole_or_not_at_all(copy_of, tmp_path, monkeypatch):
    short, whole, out = copy_of("short"), copy_of("whole"), tmp_path / "served"
    (short / "checkpoint" / "task-2.safetensors").unlink()  # a run that checkpointed tasks 0 and 1
    export(short, out)
    earlier = snapshot(out)
    write = checkpoint.write

    def disk_full_at_task_2(path, *args, **kwargs):
        if Path(path).name == "task-2.safetensors":
            raise UserError(f"cannot write {path}: No space left on device (what was written before is intact)")
        return write(path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "write", disk_full_at_task_2)
        with pytest.raises(UserError, match="No space left on device"):
            export(whole, out)
    assert snapshot(out) == earlier and sorted(p.name for p in tmp_path.iterdir()) == ["served", "short", "whole"]
    export(whole, out)  # over an earlier export: replaced whole
    assert "task-2.safetensors" in snapshot(out) and Predictor(out).tasks == [0, 1, 2]


def test_an_exports_files_are_bound_together(copy_of, tmp_path, capsys):
    run_dir = copy_of()
    one, other = export(run_dir, tmp_path / "one"), export(run_dir, tmp_path / "other")
    swapped_task = Path(shutil.copytree(one, tmp_path / "swapped-task"))
    shutil.copy(other / "task-2.safetensors", swapped_task / "task-2.safetensors")
    predictor = Predictor(swapped_task)
    with pytest.raises(UserError, match="task-2.safetensors: not the task file base.safetensors was written with"):
        predictor.predict(*_samples(2))
    head = Checkpoints(run_dir).chain()[0]
    with pytest.raises(UserError, match="task-2.safetensors: not the task file base.safetensors was written with"):
        checkpoint.load(build_model(head.config, head.record["input_shape"]), swapped_task)

    swapped_base = Path(shutil.copytree(one, tmp_path / "swapped-base"))
    shutil.copy(other / "base.safetensors", swapped_base / "base.safetensors")
    with pytest.raises(UserError, match="base.safetensors: not the base config.json was written with"):
        Predictor(swapped_base)

    edited = Path(shutil.copytree(one, tmp_path / "edited"))
    config = json.loads((edited / "config.json").read_text())
    config["config"]["router"] = {"_target_": "cl_adapters.routers.PrototypeRouter", "metric": "mahalanobis"}
    (edited / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="config.json: its contents do not match its digest"):
        Predictor(edited)
    capsys.readouterr()
    assert main([str(edited), str(_inputs(tmp_path))]) == 2
    assert capsys.readouterr().err.startswith("error: ") and capsys.readouterr().err.count("\n") <= 1


def _samples(task: int):
    import torch

    from cl_adapters.streams import split_digits

    stream = split_digits(n_tasks=3, seed=0, class_order=[0, 1, 2, 3, 4, 5]).test_stream
    samples = [stream[task].dataset[i] for i in range(4)]
    return torch.stack([s[0] for s in samples]), torch.tensor([s[2] for s in samples])


def _inputs(folder: Path) -> Path:
    x, t = _samples(1)
    path = folder / "inputs.jsonl"
    path.write_text("".join(json.dumps({"x": xi.tolist(), "task": int(ti)}) + "\n" for xi, ti in zip(x, t)))
    return path


def test_a_file_missing_a_tensor_or_a_task_is_refused(copy_of, tmp_path):
    run_dir = copy_of()
    chain = run_dir / "checkpoint"
    backbone_tensor = next(k for k in checkpoint.read(chain / "task-0.safetensors").tensors if k.startswith("shared.backbone"))
    rewrite(chain / "task-0.safetensors", drop=backbone_tensor)  # it would stay at its random initial value
    with pytest.raises(UserError, match=rf"task-0.safetensors: no file holds 1 of the model's tensors \({backbone_tensor[7:]}\)"):
        load_run(run_dir)

    run_dir = copy_of("inflated")
    rewrite(run_dir / "checkpoint" / "task-1.safetensors", lambda m: m.update(trained_tasks="[0, 1, 2, 3]"))
    (run_dir / "checkpoint" / "task-2.safetensors").unlink()
    with pytest.raises(UserError, match=r"task-1.safetensors: it says tasks \[2, 3\] were trained, but the chain holds no file"):
        load_run(run_dir)

    out = export(copy_of("whole"), tmp_path / "export")
    (out / "task-1.safetensors").unlink()
    with pytest.raises(UserError, match=r"the base holds tasks \[1\] whose files are missing \(task-1.safetensors\)"):
        Predictor(out)
    out = export(copy_of("whole2"), tmp_path / "export2")
    rewrite(out / "base.safetensors", drop=f"shared.{backbone_tensor[7:]}")
    head = Checkpoints(run_dir).chain()[0]
    with pytest.raises(UserError, match="base.safetensors: no file holds 1 of the model's tensors"):
        checkpoint.load(build_model(head.config, head.record["input_shape"]), out)


def test_a_chain_is_served_only_beside_its_own_runs_results(finished, copy_of, make_cfg, capsys):
    copied = copy_of("copied")
    results = (copied / "results.json").read_bytes()
    with pytest.raises(UserError, match="holds another run's checkpoints and checkpoint=false would leave them"):
        run(make_cfg(*QUICK, "seed=1", "checkpoint=false"), copied)  # resume=true: refused, nothing touched
    kept = json.loads((copied / "results.json").read_text())
    assert kept["run"].pop("last_attempt")["status"] == "failed" and kept == json.loads(results)
    run(make_cfg(*QUICK, "seed=1", "checkpoint=false", "resume=false"), copied)  # starts over: the old chain goes
    assert Checkpoints(copied).files() == {}
    with pytest.raises(UserError, match="no usable checkpoint"):
        load_run(copied)

    mixed = copy_of("mixed")
    other = json.loads((copied / "results.json").read_text())
    (mixed / "results.json").write_text(json.dumps(other))  # another run's results beside this chain
    with pytest.raises(UserError, match=rf"results.json is of run {other['run']['id']}, the checkpoints in .* of run "):
        load_run(mixed)


@pytest.mark.parametrize("edit,culprit", [
    (lambda m: m.update(heads="[1, 2]"), "malformed metadata"),
    (lambda m: m.update(record=json.dumps({**json.loads(m["record"]), "input_shape": "64"})), "record.input_shape"),
    (lambda m: m.update(config=json.dumps({**json.loads(m["config"]), "model": "mlp"})), "config is not what"),
    (lambda m: m.update(config=json.dumps({**json.loads(m["config"]), "model": {"_target_": "cl_adapters.models.MLP",
                                                                               "hidden": "wide"}})), "model"),
])
def test_edited_metadata_is_one_line_naming_the_file(copy_of, edit, culprit, capsys):
    run_dir = copy_of()
    rewrite(run_dir / "checkpoint" / "task-0.safetensors", edit)
    with pytest.raises(UserError) as error:
        load_run(run_dir)
    message = str(error.value) + capsys.readouterr().err
    assert culprit in message and "task-0.safetensors" in message and "\n" not in str(error.value)


def test_a_run_whose_model_folder_moved_is_one_line_from_the_command(copy_of, tmp_path, capsys):
    run_dir = copy_of()
    plant_model(run_dir, {"_target_": "cl_adapters.models.HFEncoder", "name_or_path": str(tmp_path / "moved")})
    assert main([str(run_dir), str(_inputs(tmp_path))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "task-0.safetensors: model.name_or_path=" in err[-1] and "Traceback" not in "".join(err)
