"""Tests for divlab.eval.klom: hand-computed histograms and np.histogram references."""
import numpy as np
import pytest

from divlab import eval as dl_eval


def reference_klom_column(p_samples, q_samples, num_bins=20, clip=100.0,
                          floor=1e-5):
  """One point, written out with np.histogram on the joint clipped range."""
  p_samples = np.clip(np.asarray(p_samples, np.float64), -clip, clip)
  q_samples = np.clip(np.asarray(q_samples, np.float64), -clip, clip)
  lo = min(p_samples.min(), q_samples.min())
  hi = max(p_samples.max(), q_samples.max())
  if lo >= hi:
    hi = lo + 1.0
  p = np.histogram(p_samples, bins=num_bins, range=(lo, hi))[0] / len(p_samples)
  q = np.histogram(q_samples, bins=num_bins, range=(lo, hi))[0] / len(q_samples)
  q = np.where(p > 0, np.maximum(q, floor), q)
  q = q / q.sum()
  support = p > 0
  return float(np.sum(p[support] * np.log(p[support] / q[support])))


class TestKLoM:

  def test_hand_example_without_floor(self):
    # Bins over [0, 4]: [0,1) [1,2) [2,3) [3,4]. p = (.5, .25, 0, .25),
    # q = (.25, .25, .25, .25): KL = .5 log 2.
    got = dl_eval.klom([[0.0], [0.0], [1.0], [3.0]], [[0.0], [1.0], [2.0], [4.0]],
                       num_bins=4)
    np.testing.assert_allclose(got, [0.5 * np.log(2.0)], rtol=1e-12)

  def test_hand_example_with_floor(self):
    # Bins over [0, 3] with edges 0, .75, 1.5, 2.25, 3 (last bin closed).
    # p = (.5, 0, 0, .5); q = (.75, .25, 0, 0) -> floored where p > 0:
    # (.75, .25, 0, 1e-5), renormalised by 1 + 1e-5.
    got = dl_eval.klom([[0.0], [0.0], [3.0], [3.0]], [[0.0], [0.0], [0.0], [1.0]],
                       num_bins=4)
    total = 1.0 + 1e-5
    expected = 0.5 * np.log(0.5 * total / 0.75) + 0.5 * np.log(0.5 * total / 1e-5)
    np.testing.assert_allclose(got, [expected], rtol=1e-12)

  def test_clipping(self):
    unlearned = np.array([[500.0], [300.0]])
    oracle = np.array([[100.0], [150.0]])
    # Clipped at 100 every margin is 100: one bin, identical distributions.
    np.testing.assert_allclose(dl_eval.klom(unlearned, oracle), [0.0], atol=1e-15)
    # With a wider clip the samples separate: p in the top bins, q at the
    # bottom. Bins over [100, 500], width 20: p = .5 in bins 10 and 19,
    # q = .5 in bins 0 and 2; q floored to 1e-5 in p's two bins.
    got = dl_eval.klom(unlearned, oracle, clip=1000.0)
    total = 1.0 + 2e-5
    np.testing.assert_allclose(got, [np.log(0.5 * total / 1e-5)], rtol=1e-12)

  def test_identical_samples_give_zero(self):
    margins = np.random.default_rng(4).normal(size=(10, 6)) * 5
    np.testing.assert_allclose(dl_eval.klom(margins, margins), np.zeros(6),
                               atol=1e-15)

  def test_matches_np_histogram_reference_per_column(self):
    rng = np.random.default_rng(5)
    unlearned = rng.normal(0.5, 2.0, size=(50, 12)) * rng.uniform(1, 40, size=12)
    oracle = rng.normal(0.0, 2.0, size=(40, 12)) * rng.uniform(1, 40, size=12)
    unlearned[3, 0] = 1e6  # Clipped to 100.
    oracle[:, 1] = 7.0  # A degenerate oracle column.
    for num_bins in (5, 20):
      got = dl_eval.klom(unlearned, oracle, num_bins=num_bins)
      expected = [reference_klom_column(unlearned[:, m], oracle[:, m], num_bins)
                  for m in range(12)]
      np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)

  def test_samples_on_interior_edges_follow_np_histogram(self):
    # 0.1 * k lands on bin edges, where floating-point rounding is delicate.
    unlearned = (np.arange(11) * 0.1)[:, None]
    oracle = (np.arange(11)[::-1] * 0.1 + 0.05).clip(0, 1.0)[:, None]
    got = dl_eval.klom(unlearned, oracle, num_bins=10)
    np.testing.assert_allclose(
        got, [reference_klom_column(unlearned[:, 0], oracle[:, 0], 10)],
        rtol=1e-12)

  def test_bad_inputs_raise(self):
    good = np.zeros((3, 2))
    with pytest.raises(ValueError, match="unlearned_margins"):
      dl_eval.klom(np.zeros(3), good)
    with pytest.raises(ValueError, match="same"):
      dl_eval.klom(good, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
      dl_eval.klom(good, np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="num_bins"):
      dl_eval.klom(good, good, num_bins=0)
    with pytest.raises(ValueError, match="clip"):
      dl_eval.klom(good, good, clip=0.0)
    with pytest.raises(ValueError, match="floor"):
      dl_eval.klom(good, good, floor=0.0)


class TestKLoMSummary:

  def test_percentiles(self):
    got = dl_eval.klom_summary(np.arange(101.0))
    assert got == {"mean": 50.0, "p50": 50.0, "p95": 95.0, "p99": 99.0}
    got = dl_eval.klom_summary([0.0, 1.0, 3.0], percentiles=(50, 75, 99.5))
    # Linear interpolation between order statistics 0, 1, 3 at positions 0, 1, 2.
    assert got["mean"] == pytest.approx(4.0 / 3.0)
    assert got["p50"] == pytest.approx(1.0)
    assert got["p75"] == pytest.approx(2.0)
    assert got["p99.5"] == pytest.approx(1.0 + 0.99 * 2.0)

  def test_bad_inputs_raise(self):
    with pytest.raises(ValueError, match="values"):
      dl_eval.klom_summary([])
    with pytest.raises(ValueError, match="percentiles"):
      dl_eval.klom_summary([1.0], percentiles=(101,))
    with pytest.raises(ValueError, match="NaN"):
      dl_eval.klom_summary([np.nan])
