import numpy as np
import pytest

from cider_mer.metrics import auilc, auilc_over_rates, binary_metrics, seven_metrics, task_metrics


def onehot(pred, c):
    s = np.full((len(pred), c), -5.0)
    s[np.arange(len(pred)), pred] = 0.0
    return s


def test_paper_auilc_check():
    acc2 = [86.4, 83.8, 81.7, 80.6, 76.7, 73.2, 70.1, 65.9, 60.2, 56.6, 57.8]
    assert auilc(acc2) == pytest.approx(72.09, abs=1e-9)
    assert auilc_over_rates(acc2, np.linspace(0, 1, 11)) == pytest.approx(72.09, abs=1e-9)


def test_binary_non0_counts_neutral_prediction_as_wrong():
    labels = np.array([0, 0, 2, 2, 1, 1])
    pred = np.array([0, 1, 2, 0, 1, 2])  # sample 1 predicted neutral: wrong for Non0
    m = binary_metrics(onehot(pred, 3), labels)
    # Non0 samples: 0,1,2,3 -> correct 0 and 2 -> 50 %
    assert m["non0_acc2"] == pytest.approx(50.0)
    # Acc3 over all six: correct 0, 2, 4 -> 50 %
    assert m["acc3"] == pytest.approx(50.0)


def test_binary_has0_argmax_over_neg_pos_only():
    labels = np.array([0, 1, 2, 0])
    # neutral logit is largest everywhere: Has0 ignores it and compares neg vs pos
    scores = np.array([[0.0, 5.0, -1.0], [-1.0, 5.0, 0.0], [-1.0, 5.0, 0.0], [-1.0, 5.0, 0.0]])
    m = binary_metrics(scores, labels)
    # truth non-neg: [0, 1, 1, 0]; pred (pos > neg): [0, 1, 1, 1] -> 3/4
    assert m["has0_acc2"] == pytest.approx(75.0)
    assert m["non0_acc2"] == pytest.approx(0.0)


def test_weighted_f1_matches_hand_computation():
    labels = np.array([0, 0, 0, 2])
    pred = np.array([0, 0, 2, 2])
    m = binary_metrics(onehot(pred, 3), labels)
    # class 0: p=1, r=2/3, f1=0.8 (support 3); class 2: p=.5, r=1, f1=2/3 (support 1)
    assert m["non0_f1"] == pytest.approx(100 * (0.8 * 3 + (2 / 3) * 1) / 4)


def test_seven_metrics_and_expected_score():
    labels = np.array([0, 3, 6, 6])
    pred = np.array([0, 3, 6, 5])
    m = seven_metrics(onehot(pred, 7) * 10, labels)
    assert m["acc7"] == pytest.approx(75.0)
    assert m["mae"] == pytest.approx(0.25, abs=1e-3)
    assert task_metrics("seven", onehot(pred, 7), labels)["acc7"] == pytest.approx(75.0)


def test_auilc_needs_two_values():
    with pytest.raises(ValueError):
        auilc([1.0])
