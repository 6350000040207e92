import numpy as np
import pytest

from cl_adapters.metrics import acc, bwt, forgetting, fwt, intransigence, summarize, transfer_vs_single

# R[i, j]: accuracy on task j after training task i (hand-made, 3 tasks)
R = np.array(
    [
        [0.9, 0.2, 0.1],
        [0.7, 0.8, 0.3],
        [0.6, 0.9, 0.5],
    ]
)


def test_acc_is_mean_of_last_row():
    assert acc(R) == pytest.approx((0.6 + 0.9 + 0.5) / 3)


def test_bwt_gem():
    # (R[2,0]-R[0,0] + R[2,1]-R[1,1]) / 2 = (-0.3 + 0.1) / 2
    assert bwt(R) == pytest.approx(-0.1)


def test_forgetting_uses_max_over_earlier_rows():
    # task 0: max(0.9, 0.7) - 0.6 = 0.3; task 1: max(0.2, 0.8) - 0.9 = -0.1
    assert forgetting(R) == pytest.approx(0.1)
    # the max differs from Avalanche's first-value convention when accuracy rises then falls
    R2 = np.array([[0.5, 0.0], [0.4, 0.9]])
    assert forgetting(R2) == pytest.approx(0.1)
    R3 = np.array([[0.5, 0.1, 0.0], [0.8, 0.9, 0.0], [0.6, 0.9, 0.7]])
    assert forgetting(R3) == pytest.approx(((0.8 - 0.6) + (0.9 - 0.9)) / 2)


def test_fwt_against_untrained_baseline():
    b = np.array([0.5, 0.25, 0.2])
    # (R[0,1]-b[1] + R[1,2]-b[2]) / 2 = (-0.05 + 0.1) / 2
    assert fwt(R, b) == pytest.approx(0.025)


def test_transfer_and_intransigence():
    S = np.array([0.8, 0.8, 0.8])
    assert transfer_vs_single(R, S) == pytest.approx(((0.9 - 0.8) + 0 + (0.5 - 0.8)) / 3)
    J = np.array([1.0, 0.9, 0.8])
    assert intransigence(R, J) == pytest.approx(((1.0 - 0.9) + (0.9 - 0.8) + (0.8 - 0.5)) / 3)


def test_single_task_and_perfect_retention():
    assert bwt([[0.7]]) == 0.0 and forgetting([[0.7]]) == 0.0
    same = np.array([[0.9, 0.1], [0.9, 0.8]])
    assert bwt(same) == 0.0 and forgetting(same) == 0.0


def test_summarize_keys_and_bad_shapes():
    assert set(summarize(R, b=[0, 0, 0])) == {"acc", "bwt", "forgetting", "fwt"}
    with pytest.raises(ValueError, match="square"):
        acc(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="one entry per task"):
        fwt(R, [0.1, 0.2])
