"""Tests for divlab.eval.classification against direct numpy computations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divlab import eval as dl_eval

RTOL = 1e-5
ATOL = 1e-6


def np_softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def np_ece(logits, labels, num_bins):
  """Guo et al.'s loop: bins (lo, hi], weight |B|/n, gap |acc - conf|."""
  probs = np_softmax(logits)
  confidence = probs.max(-1)
  correct = (probs.argmax(-1) == labels).astype(np.float64)
  edges = np.linspace(0, 1, num_bins + 1)
  ece = 0.0
  for lo, hi in zip(edges[:-1], edges[1:]):
    members = (confidence > lo) & (confidence <= hi)
    if members.any():
      ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
  return ece


@pytest.fixture
def rng():
  return np.random.default_rng(1)


class TestAccuracy:

  def test_matches_numpy_with_mask(self, rng):
    logits = rng.normal(size=(3, 7, 5))
    labels = rng.integers(0, 5, size=(3, 7))
    where = rng.random((3, 7)) < 0.6
    got = jax.jit(dl_eval.accuracy)(jnp.asarray(logits, jnp.float32), labels, where)
    expected = (logits.argmax(-1) == labels)[where].mean()
    np.testing.assert_allclose(got, expected, rtol=RTOL)

  def test_fully_masked_is_zero(self):
    got = dl_eval.accuracy(jnp.zeros((2, 3)), jnp.array([0, 1]),
                           where=jnp.zeros(2, bool))
    assert float(got) == 0.0

  def test_bad_labels_raise(self):
    with pytest.raises(ValueError, match="labels"):
      dl_eval.accuracy(jnp.zeros((2, 3)), jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match="labels"):
      dl_eval.accuracy(jnp.zeros((2, 3)), jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="where"):
      dl_eval.accuracy(jnp.zeros((2, 3)), jnp.array([0, 1]), where=jnp.ones(3, bool))


class TestECE:

  @pytest.mark.parametrize("num_bins", [1, 5, 15])
  def test_matches_loop_reference(self, rng, num_bins):
    logits = rng.normal(size=(200, 4)) * 2
    labels = rng.integers(0, 4, size=200)
    got = dl_eval.expected_calibration_error(jnp.asarray(logits, jnp.float32), labels,
                                             num_bins=num_bins)
    np.testing.assert_allclose(got, np_ece(logits, labels, num_bins), rtol=1e-4,
                               atol=1e-6)

  def test_hand_example(self):
    # Two examples at confidence 0.8 (one right), one at 0.6 (wrong), 10 bins:
    # bin (0.7, 0.8]: |B| = 2, acc 0.5, conf 0.8; bin (0.5, 0.6]: acc 0, conf 0.6.
    # ECE = 2/3 * 0.3 + 1/3 * 0.6 = 0.4.
    logits = jnp.log(jnp.array([[0.8, 0.2], [0.8, 0.2], [0.4, 0.6]]))
    labels = jnp.array([0, 1, 0])
    got = dl_eval.expected_calibration_error(logits, labels, num_bins=10)
    np.testing.assert_allclose(got, 0.4, rtol=1e-5)

  def test_mask_equals_slicing(self, rng):
    logits = jnp.asarray(rng.normal(size=(30, 3)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 3, size=30))
    where = jnp.arange(30) < 17
    masked = dl_eval.expected_calibration_error(logits, labels, where=where)
    sliced = dl_eval.expected_calibration_error(logits[:17], labels[:17])
    np.testing.assert_allclose(masked, sliced, rtol=1e-6)

  def test_bad_num_bins_raises(self):
    with pytest.raises(ValueError, match="num_bins"):
      dl_eval.expected_calibration_error(jnp.zeros((2, 2)), jnp.array([0, 1]),
                                         num_bins=0)


class TestMargins:

  def test_matches_numpy(self, rng):
    logits = rng.normal(size=(4, 6, 5)) * 3
    labels = rng.integers(0, 5, size=(4, 6))
    got = jax.jit(dl_eval.margins)(jnp.asarray(logits, jnp.float32), labels)
    correct = np.take_along_axis(logits, labels[..., None], -1)[..., 0]
    others = np.where(np.arange(5) == labels[..., None], -np.inf, logits)
    expected = correct - np.log(np.exp(others).sum(-1))
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=1e-5)

  def test_is_the_logit_of_the_label_probability(self, rng):
    logits = rng.normal(size=(8, 3))
    labels = rng.integers(0, 3, size=8)
    p = np_softmax(logits)[np.arange(8), labels]
    got = dl_eval.margins(jnp.asarray(logits, jnp.float32), labels)
    np.testing.assert_allclose(got, np.log(p / (1 - p)), rtol=1e-4, atol=1e-5)

  def test_large_logits_are_finite(self):
    got = dl_eval.margins(jnp.array([[1e4, 0.0, -1e4]]), jnp.array([1]))
    np.testing.assert_allclose(got, [-1e4], rtol=1e-6)

  def test_single_class_raises(self):
    with pytest.raises(ValueError, match="2 classes"):
      dl_eval.margins(jnp.zeros((2, 1)), jnp.array([0, 0]))


class TestKLToReference:

  def test_matches_numpy_direction_ref_first(self, rng):
    logits = rng.normal(size=(5, 4))
    ref_logits = rng.normal(size=(5, 4))
    where = np.array([1, 1, 0, 1, 0], bool)
    got = dl_eval.kl_to_reference(jnp.asarray(logits, jnp.float32),
                                  jnp.asarray(ref_logits, jnp.float32), where)
    p_ref, p = np_softmax(ref_logits), np_softmax(logits)
    per_example = (p_ref * np.log(p_ref / p)).sum(-1)
    np.testing.assert_allclose(got, per_example[where].mean(), rtol=RTOL, atol=ATOL)

  def test_identical_models_give_zero_and_nan_padding_is_ignored(self):
    logits = jnp.array([[1.0, 2.0, 3.0], [jnp.nan, 0.0, 0.0]])
    got = dl_eval.kl_to_reference(logits, logits, where=jnp.array([True, False]))
    np.testing.assert_allclose(got, 0.0, atol=1e-7)

  def test_shape_mismatch_raises(self):
    with pytest.raises(ValueError, match="ref_logits"):
      dl_eval.kl_to_reference(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
