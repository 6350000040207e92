"""The PTM-CIL image streams on fixtures in the real formats: CIFAR-100's python pickles and ImageFolder JPEGs."""

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from conftest import Python2Pickler, write_cifar100, write_image_folder
from hydra.utils import instantiate
from PIL import Image

from cl_adapters.errors import UserError
from cl_adapters.streams import cifar100, image_folder
from cl_adapters.streams import images


def pilot_order(n: int, seed: int = 1993) -> list[int]:
    """PILOT's class order, written as PILOT writes it (utils/data_manager.py)."""
    state = np.random.get_state()
    np.random.seed(seed)
    order = np.random.permutation(n).tolist()
    np.random.set_state(state)
    return order


def samples(dataset):
    return [dataset[i] for i in range(len(dataset))]


@pytest.fixture(scope="module")
def b0_inc10(cifar100_root):
    return cifar100(str(cifar100_root))


def test_cifar100_b0_inc10_in_pilots_seed1993_order(b0_inc10):
    order = pilot_order(100)
    assert images.class_order_of("seed1993", 100) == order
    assert b0_inc10.kind == "class_il" and len(b0_inc10.train_stream) == len(b0_inc10.test_stream) == 10
    assert b0_inc10.classes_per_task == [order[10 * t : 10 * t + 10] for t in range(10)]
    for t, (tr, te) in enumerate(zip(b0_inc10.train_stream, b0_inc10.test_stream)):
        assert tr.n_classes == 10 and tr.classes == list(range(10 * t, 10 * t + 10)) and tr.task_labels == [t]
        assert len(tr.dataset) == 50 and len(te.dataset) == 20  # 5 train / 2 test images per class
    x, y, t = b0_inc10.train_stream[3].dataset[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32) and t == 3


def test_class_il_label_is_the_position_of_the_class_in_the_order(b0_inc10):
    order = pilot_order(100)
    for stream in (b0_inc10.train_stream, b0_inc10.test_stream):
        for exp in stream:
            for x, y, _ in samples(exp.dataset):
                assert int(y) == order.index(int(x[0, 0, 0]))  # the fixture's first byte is the image's class


def test_b50_inc10_task_il_and_the_other_orders(cifar100_root):
    s = cifar100(str(cifar100_root), initial_classes=50, increment=10, class_order="natural", scenario="task_il")
    assert [e.n_classes for e in s.train_stream] == [50, 10, 10, 10, 10, 10] and s.kind == "task_il"
    assert s.classes_per_task[0] == list(range(50)) and s.classes_per_task[5] == list(range(90, 100))
    for x, y, t in samples(s.test_stream[2].dataset):
        assert int(y) == int(x[0, 0, 0]) - 60 and t == 2  # task-local labels
    given = list(range(99, -1, -1))
    assert cifar100(str(cifar100_root), increment=50, class_order=given).classes_per_task == [given[:50], given[50:]]
    assert images.class_order_of("seed7", 6) == pilot_order(6, seed=7)


def test_validation_split_and_the_fast_tensor_path(cifar100_root):
    from cl_adapters.streams.columns import tensor_rows

    s = cifar100(str(cifar100_root), increment=50, val_fraction=0.2, seed=3)
    assert [len(e.dataset) for e in s.train_stream] == [200, 200] and [len(e.dataset) for e in s.valid_stream] == [50, 50]
    x, y, t = tensor_rows(s.train_stream[1].dataset)  # plain tensors: strategies/batches.py gathers batches at once
    assert x.dtype == torch.uint8 and x.shape == (200, 3, 32, 32) and set(y.tolist()) <= set(range(50, 100))


def test_download_fetches_the_python_version_into_root(tmp_path, monkeypatch):
    fetched = []

    def download(url, root, md5=None):
        fetched.append((url, md5))
        write_cifar100(tmp_path / "data")

    monkeypatch.setattr(images, "download_and_extract_archive", download)
    s = cifar100(str(tmp_path / "data"), increment=50, download=True)
    assert fetched == [("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")]
    assert len(s.train_stream) == 2
    cifar100(str(tmp_path / "data"), increment=50, download=True)  # there already: not fetched again
    assert len(fetched) == 1


def _one_line(call, match: str) -> str:
    with pytest.raises(UserError, match=match) as error:
        call()
    assert "\n" not in str(error.value)
    return str(error.value)


def test_cifar100_mistakes_are_one_line(cifar100_root, tmp_path):
    root = str(cifar100_root)
    _one_line(lambda: cifar100(None), r"^stream.root is not set: .*https://www.cs.toronto.edu/~kriz/cifar.html")
    _one_line(lambda: cifar100(str(tmp_path / "nowhere")), r"is not a folder: .*cifar.html")
    _one_line(lambda: cifar100(str(tmp_path)), r"holds no cifar-100-python/\{train,test,meta\}: .*download=true")
    _one_line(lambda: cifar100(root, initial_classes=0, increment=30),
              r"initial_classes=0 and stream.increment=30 do not cover the 100 classes exactly")
    _one_line(lambda: cifar100(root, initial_classes=50, increment=20), r"do not cover the 100 classes exactly")
    _one_line(lambda: cifar100(root, class_order="random"), r"class_order must be seed<N> .* got 'random'")
    _one_line(lambda: cifar100(root, class_order=[0, 1, 2]), r"class_order must list each of the 100 classes")
    _one_line(lambda: cifar100(root, scenario="domain_il"), r"stream cifar100 supports scenario class_il, task_il")
    few = write_cifar100(tmp_path / "few", train_per_class=1, test_per_class=1, classes=99)
    _one_line(lambda: cifar100(str(few)), r"names 99 classes, CIFAR-100 has 100")


def test_a_cifar_pickle_that_would_run_code_is_refused(cifar100_root, tmp_path):
    victim = tmp_path / "written-by-the-pickle"

    class Payload:
        def __reduce__(self):
            return open, (str(victim), "w")

    shutil.copytree(cifar100_root, tmp_path / "bad")
    with (tmp_path / "bad" / "cifar-100-python" / "train").open("wb") as f:
        pickle.dump({b"data": Payload(), b"fine_labels": []}, f)
    _one_line(lambda: cifar100(str(tmp_path / "bad")), r"train: not a CIFAR-100 python pickle: .*(io|builtins)\.open")
    assert not victim.exists()
    with (tmp_path / "bad" / "cifar-100-python" / "train").open("wb") as f:
        Python2Pickler(f).dump({b"data": np.zeros((4, 3072), np.uint8), b"fine_labels": [0, 1, 2, 3]})
    _one_line(lambda: cifar100(str(tmp_path / "bad")), r"fine_labels hold 4 classes in \[0, 3\], CIFAR-100 has 100")


def test_image_folder_splits_orders_and_preprocessing(image_folder_root):
    s = image_folder("cub200", str(image_folder_root), n_classes=6, initial_classes=2, increment=2, image_size=16,
                     augment=False)
    assert not s.augmented
    order = pilot_order(6)
    assert s.classes_per_task == [order[0:2], order[2:4], order[4:6]] and [e.n_classes for e in s.train_stream] == [2, 2, 2]
    names = sorted(p.name for p in (image_folder_root / "train").iterdir())  # ImageFolder's class ids
    first_class = names[order[0]]
    x, y, t = s.train_stream[0].dataset[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 16, 16) and int(y) == 0 and t == 0
    with Image.open(image_folder_root / "train" / first_class / "0.jpg") as image:  # resize to 16, centre crop 16
        assert torch.equal(x, images.preprocess(16, train=True)(image.convert("RGB")))
    x_test = s.test_stream[0].dataset[0][0]
    with Image.open(image_folder_root / "test" / first_class / "0.jpg") as image:  # PILOT's: resize to 18, crop 16
        assert torch.equal(x_test, images.preprocess(16, train=False)(image.convert("RGB")))
    for t, exp in enumerate(s.test_stream):
        assert sorted(int(y) for _, y, _ in samples(exp.dataset)) == [2 * t] * 2 + [2 * t + 1] * 2  # class-IL: position
    fitted = s.train_stream[1].dataset.eval()[0][0]  # class means are fitted under the test preprocessing
    with Image.open(image_folder_root / "train" / names[order[2]] / "0.jpg") as image:
        assert torch.equal(fitted, images.preprocess(16, train=False)(image.convert("RGB")))


def test_image_folder_training_images_get_pilots_augmentation_in_the_loader(image_folder_root):
    """PILOT's train transform (RandomResizedCrop of the whole image + flip) on each decoded image, in uint8;
    the scenario says so, and a run's backbone then leaves these batches as they come."""
    s = image_folder("cub200", str(image_folder_root), n_classes=6, initial_classes=2, increment=2, image_size=16)
    assert s.augmented
    torch.manual_seed(3)
    x = s.train_stream[0].dataset[0][0]
    torch.manual_seed(3)
    names = sorted(p.name for p in (image_folder_root / "train").iterdir())
    with Image.open(image_folder_root / "train" / names[pilot_order(6)[0]] / "0.jpg") as image:
        assert torch.equal(x, images.preprocess(16, True, augment=True)(image.convert("RGB")))
    assert x.dtype == torch.uint8 and x.shape == (3, 16, 16)
    with pytest.raises(UserError, match="stream.augment must be true or false"):
        image_folder("cub200", str(image_folder_root), n_classes=6, increment=2, augment="yes")


def test_image_folder_task_il_natural_order_and_validation(image_folder_root):
    s = image_folder("vtab", str(image_folder_root), n_classes=6, increment=3, class_order="natural", scenario="task_il",
                     image_size=8, val_fraction=0.34, seed=1)
    assert s.classes_per_task == [[0, 1, 2], [3, 4, 5]]
    assert [len(e.dataset) for e in s.train_stream] == [6, 6] and [len(e.dataset) for e in s.valid_stream] == [3, 3]
    assert sorted(int(y) for _, y, _ in samples(s.test_stream[1].dataset)) == [0, 0, 1, 1, 2, 2]
    assert s.valid_stream[0].dataset[0][0].shape == (3, 8, 8)


def test_image_folder_mistakes_are_one_line(image_folder_root, tmp_path):
    root = str(image_folder_root)
    message = _one_line(lambda: image_folder("cub200", None), r"^stream.root is not set: CUB-200 \(200 classes\)")
    assert "https://drive.google.com/file/d/1XbUpnWpJPnItt5zQ6sHJnsjPncnNLvWb" in message and "RevisitingCIL" in message
    _one_line(lambda: image_folder("mine", None, n_classes=3), r"^stream.root is not set: stream.root must hold mine's train/")
    _one_line(lambda: image_folder("mine", root), r"stream.n_classes must be a positive integer \(the class count of mine\)")
    _one_line(lambda: image_folder("objectnet", root), r"train has 6 class folders, ObjectNet has 200 \(stream.n_classes\)")
    _one_line(lambda: image_folder("vtab", root, n_classes=6, initial_classes=4, increment=4), r"do not cover the 6 classes")
    _one_line(lambda: image_folder("vtab", root, n_classes=6, image_size=0), r"stream.image_size must be a positive integer")
    no_test = tmp_path / "no_test"
    shutil.copytree(image_folder_root / "train", no_test / "train")
    _one_line(lambda: image_folder("vtab", str(no_test), n_classes=6), r"no_test/test is not a folder: stream.root must hold")
    (no_test / "test").mkdir()
    _one_line(lambda: image_folder("vtab", str(no_test), n_classes=6), r"test: Couldn't find any class folder")
    other = write_image_folder(tmp_path / "other", classes=6)
    (other / "test" / "005.class_5").rename(other / "test" / "005.renamed")
    _one_line(lambda: image_folder("vtab", str(other), n_classes=6), r"train/ and test/ hold different class folders")
    empty = write_image_folder(tmp_path / "empty", classes=2)
    for f in (empty / "test" / "001.class_1").iterdir():
        f.unlink()
    _one_line(lambda: image_folder("vtab", str(empty), n_classes=2, increment=1),
              r"Found no valid file for the classes 001.class_1")


def test_uint8_images_are_image_inputs():
    from cl_adapters.models import MLP, PatchTransformer
    from cl_adapters.models.contract import check_inputs
    from cl_adapters.models.hf_encoder import HFEncoder

    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    check_inputs(MLP, x[0])
    with pytest.raises(UserError, match="HFEncoder takes token ids inputs, this stream gives float inputs"):
        check_inputs(HFEncoder, x[0])
    with pytest.raises(UserError, match="MLP takes float inputs, this stream gives token ids"):
        check_inputs(MLP, torch.zeros(16, dtype=torch.int64))
    for backbone in (MLP((3, 8, 8)), PatchTransformer((3, 8, 8), dim=16, depth=1, heads=2)):
        assert torch.equal(backbone(x), backbone(x.float() / 255))


def _run(make_cfg, tmp_path, *overrides):
    from cl_adapters.runs.run import run

    cfg = make_cfg("model=mlp", "scenario=class_il", "strategy=adapter", "router=prototype", "strategy.epochs=1",
                   "probe_samples=0", "logger=console", *overrides)
    return run(cfg, tmp_path / "run")


def test_a_whole_class_il_run_on_cifar100(make_cfg, tmp_path, cifar100_root):
    results = _run(make_cfg, tmp_path, "stream=cifar100", f"stream.root={cifar100_root}", "stream.increment=50")
    order = pilot_order(100)
    assert results["run"]["status"] == "complete" and results["classes_per_task"] == [order[:50], order[50:]]
    assert np.array(results["accuracy_matrix"]).shape == (2, 2)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["classes_per_task"][1] == order[50:]


def test_a_whole_run_on_a_folder_stream_with_loader_workers(make_cfg, tmp_path, image_folder_root):
    results = _run(make_cfg, tmp_path, "stream=imagenet_r", f"stream.root={image_folder_root}", "stream.n_classes=6",
                   "stream.increment=3", "stream.image_size=8", "strategy.num_workers=2")
    assert results["run"]["status"] == "complete" and results["classes_per_task"] == [pilot_order(6)[:3], pilot_order(6)[3:]]
    assert results["config"]["strategy"]["num_workers"] == 2


def test_num_workers_reach_avalanches_loaders_and_none_leaves_them_alone(make_cfg, image_folder_root, cifar100_root):
    from avalanche.core import SupervisedPlugin

    from cl_adapters.strategies.batches import TensorBatches

    class Loaders(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.seen = []

        def after_training_epoch(self, strategy, **kwargs):
            self.seen.append(strategy.dataloader)

        def after_eval_exp(self, strategy, **kwargs):
            self.seen.append(strategy.dataloader)

    def loaders(stream_overrides, workers):
        cfg = make_cfg("model=mlp", "strategy=adapter", "strategy.epochs=1", *stream_overrides,
                       f"strategy.num_workers={workers}")
        scenario = instantiate(cfg.stream)
        backbone = instantiate(cfg.model, input_shape=tuple(scenario.train_stream[0].dataset[0][0].shape))
        seen = Loaders()
        strategy = instantiate(cfg.strategy, backbone=backbone, monitors=[seen])
        strategy.train(scenario.train_stream[0])
        strategy.eval(scenario.test_stream[:1])
        return seen.seen

    folder = ["stream=cub200", f"stream.root={image_folder_root}", "stream.n_classes=6", "stream.increment=3",
              "stream.image_size=8"]
    for loader in loaders(folder, 2):
        assert loader.loader_kwargs["num_workers"] == 2 and loader.loader_kwargs["persistent_workers"] is True
    for loader in loaders(["stream=cifar100", f"stream.root={cifar100_root}", "stream.increment=50"], "null"):
        assert isinstance(loader, TensorBatches)  # in memory, no workers: the fast path, as before
        assert "persistent_workers" not in loader.loader.loader_kwargs and loader.loader.loader_kwargs["num_workers"] == 0


@pytest.mark.parametrize("bad", ["-1", "2.5", "true"])
def test_a_bad_num_workers_is_one_line(make_cfg, bad):
    from cl_adapters.models import MLP
    from cl_adapters.runs.build import build

    cfg = make_cfg(f"strategy.num_workers={bad}")
    with pytest.raises(UserError, match=r"^strategy.num_workers must be an integer >= 0 or null, got"):
        build(cfg.strategy, "strategy", backbone=MLP((1, 8, 8)))
