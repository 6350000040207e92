import pytest
import torch

from cl_adapters.errors import UserError
from cl_adapters.streams import split_digits, split_mnist, task_stream


def _labels(scenario, stream="train"):
    return [torch.tensor(list(e.dataset.targets)) for e in scenario.streams[stream]]


def test_split_digits_shape_and_task_labels(digits):
    assert len(digits.train_stream) == len(digits.test_stream) == 5
    assert digits.classes_per_task == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    for t, exp in enumerate(digits.train_stream):
        assert exp.task_labels == [t] and exp.n_classes == 2
        x, y, task = exp.dataset[0]
        assert x.shape == (1, 8, 8) and task == t and int(y) in (0, 1)
    assert sum(len(e.dataset) for e in digits.train_stream) + sum(len(e.dataset) for e in digits.test_stream) == 1797


def test_split_is_fixed_by_the_seed():
    a, b, c = split_digits(seed=0), split_digits(seed=0), split_digits(seed=1)
    first = lambda s: s.train_stream[0].dataset[0][0]
    assert torch.equal(first(a), first(b))
    assert not torch.equal(first(a), first(c))


def test_options_class_order_subsample_validation():
    s = split_digits(n_tasks=2, class_order=[9, 8, 7, 6, 5, 4, 3, 2, 1, 0], train_per_task=50, test_per_task=20, val_fraction=0.2)
    assert s.classes_per_task == [[9, 8, 7, 6, 5], [4, 3, 2, 1, 0]]
    assert [len(e.dataset) for e in s.train_stream] == [40, 40]
    assert [len(e.dataset) for e in s.valid_stream] == [10, 10]
    assert [len(e.dataset) for e in s.test_stream] == [20, 20]
    assert split_digits(class_order="random", seed=3).classes_per_task != s.classes_per_task
    assert split_digits(n_tasks=4, class_order=[0, 1, 2, 3, 4, 5, 6, 7]).classes_per_task[3] == [6, 7]  # a subset
    for bad in ([0, 1, 12, 3], [0, 0, 1, 2]):
        with pytest.raises(UserError, match="distinct classes of"):
            split_digits(n_tasks=2, class_order=bad)
    with pytest.raises(UserError, match="divide"):
        split_digits(n_tasks=3)


def _good(n=10, k=2):
    return torch.rand(n, 1, 4, 4), torch.arange(n) % k


@pytest.mark.parametrize(
    "train,match",
    [
        ([_good(), (torch.zeros(0, 1, 4, 4), torch.zeros(0))], "task 1 train is empty"),
        ([_good(), (torch.full((4, 1, 4, 4), float("nan")), torch.zeros(4))], "task 1 train inputs contain NaN"),
        ([_good(), (torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 5, 1]))], "task 1 train labels go up to 5"),
        ([_good(), (torch.rand(4, 1, 4, 4), torch.tensor([0, -1, 0, 1]))], "task 1 train has a negative label"),
        ([_good(), (torch.rand(4, 1, 4, 4), torch.tensor([0, 1]))], "4 inputs but 2 labels"),
    ],
)
def test_bad_tasks_fail_with_the_task_named(train, match):
    with pytest.raises(UserError, match=match):
        task_stream(train, [_good(), _good()], n_classes=[2, 2])


def test_split_mnist_from_the_packaged_file():
    s = split_mnist(train_per_task=100, test_per_task=50)
    assert len(s.train_stream) == 5 and s.classes_per_task[1] == [2, 3]
    x, y, t = s.train_stream[1].dataset[0]
    assert x.shape == (1, 28, 28) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and t == 1


def test_missing_mnist_file_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="MNIST file not found"):
        split_mnist(path=str(tmp_path / "nope.pkl.gz"))


def test_torchvision_source_reads_standard_files(tmp_path):
    """The download path (for users with a network), fed local IDX files so nothing is fetched."""
    import struct

    from cl_adapters.streams.mnist import load_mnist

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 6), ("t10k", 4)):
        images = bytes([7] * (n * 28 * 28))
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + bytes(i % 10 for i in range(n)))
    (x_tr, y_tr), (x_te, y_te) = load_mnist(source="torchvision", root=str(tmp_path))
    assert x_tr.shape == (6, 1, 28, 28) and x_te.shape == (4, 1, 28, 28)
    assert torch.allclose(x_tr, torch.full_like(x_tr, 7 / 255)) and y_te.tolist() == [0, 1, 2, 3]


def test_an_mnist_file_that_would_run_code_is_refused(tmp_path):
    """A pickle names functions to call: the MNIST reader unpickles numpy arrays and nothing else."""
    import gzip
    import pickle

    import pytest

    from cl_adapters.errors import UserError

    victim = tmp_path / "written-by-the-pickle"

    class Payload:
        def __reduce__(self):
            return open, (str(victim), "w")

    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(((Payload(), None), (None, None), (None, None)), f)
    with pytest.raises(UserError, match=r"mnist.pkl.gz: not an MNIST pickle .* it refers to (io|builtins)\.open"):
        split_mnist(path=str(path))
    assert not victim.exists()


def test_split_by_class_and_task_stream_take_numpy_and_name_bad_arguments():
    import numpy as np
    import pytest

    from cl_adapters.errors import UserError
    from cl_adapters.streams import split_by_class

    rng = np.random.default_rng(0)
    x, y = rng.random((60, 1, 4, 4)), np.arange(60) % 4  # float64 numpy images, int64 numpy labels
    s = split_by_class((x, y), (x, y), n_tasks=2, class_order=[3, 2, 1, 0])
    assert s.classes_per_task == [[3, 2], [1, 0]]
    xs, ys, ts = s.train_stream[0].dataset[0]
    assert xs.dtype == torch.float32 and xs.shape == (1, 4, 4) and ts == 0
    first = s.train_stream[0].dataset
    assert sorted({int(first[i][1]) for i in range(len(first))}) == [0, 1]  # 3 -> 0, 2 -> 1: task-local
    with pytest.raises(UserError, match=r"^split_by_class train must be an \(inputs, labels\) pair, got ndarray$"):
        split_by_class(x, (x, y), n_tasks=2)
    with pytest.raises(UserError, match=r"^task 0 train inputs are not an array of numbers"):
        task_stream([([[1.0], [2.0, 3.0]], [0, 1])], [(x[:2], y[:2])])
    assert len(task_stream([(x[:8], y[:8] % 2)], [(x[:4], y[:4] % 2)]).train_stream) == 1
