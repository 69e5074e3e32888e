"""Tests for divlab.eval.mia_auc against scikit-learn and hand counts."""
import numpy as np
import pytest
from sklearn import metrics

from divlab import eval as dl_eval


def sklearn_auc(members, nonmembers):
  labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
  return metrics.roc_auc_score(labels, -np.r_[members, nonmembers])


class TestMIAAUC:

  def test_matches_sklearn_continuous(self):
    rng = np.random.default_rng(2)
    members = rng.gamma(1.0, 0.5, size=40)
    nonmembers = rng.gamma(1.5, 0.5, size=55)
    assert dl_eval.mia_auc(members, nonmembers) == pytest.approx(
        sklearn_auc(members, nonmembers), abs=1e-12)

  def test_matches_sklearn_with_many_ties(self):
    rng = np.random.default_rng(3)
    members = rng.integers(0, 4, size=30).astype(float)
    nonmembers = rng.integers(1, 5, size=25).astype(float)
    assert dl_eval.mia_auc(members, nonmembers) == pytest.approx(
        sklearn_auc(members, nonmembers), abs=1e-12)

  def test_hand_counted_pairs(self):
    # Pairs (m, n): (0.1, 0.3) win, (0.1, 0.2) win, (0.2, 0.3) win, (0.2, 0.2) tie.
    assert dl_eval.mia_auc([0.1, 0.2], [0.3, 0.2]) == pytest.approx(3.5 / 4)
    assert dl_eval.mia_auc([1.0, 1.0], [1.0]) == pytest.approx(0.5)
    assert dl_eval.mia_auc([5.0], [0.0, 1.0]) == pytest.approx(0.0)
    assert dl_eval.mia_auc([0.0], [np.inf]) == pytest.approx(1.0)

  def test_bad_inputs_raise(self):
    with pytest.raises(ValueError, match="member_losses"):
      dl_eval.mia_auc([], [1.0])
    with pytest.raises(ValueError, match="nonmember_losses"):
      dl_eval.mia_auc([1.0], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="NaN"):
      dl_eval.mia_auc([np.nan], [1.0])
