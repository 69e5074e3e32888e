"""Token log-probs, sequence sums/means, per-token KL and entropy vs numpy float64."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divlab.losses import sequence
from divlab.losses import unlearning

RTOL, ATOL = 1e-5, 1e-6


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  top = z.max(-1, keepdims=True)
  return z - top - np.log(np.exp(z - top).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 7)) * 3
  ref_logits = rng.normal(size=(3, 5, 7)) * 2
  targets = rng.integers(0, 7, size=(3, 5))
  where = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
  return logits, ref_logits, targets, where


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def test_token_log_probs_and_likelihoods_match_numpy(inputs):
  logits, _, targets, where = inputs
  targets_with_ignore = np.where(where, targets, -100)
  token = np.take_along_axis(np_log_softmax(logits), targets[..., None], -1)[..., 0]
  token = token * where
  got = jax.jit(sequence.token_log_probs)(_f32(logits), targets_with_ignore, where)
  np.testing.assert_allclose(got, token, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(
      jax.jit(sequence.sequence_log_likelihood)(_f32(logits), targets_with_ignore, where),
      token.sum(-1), rtol=RTOL, atol=ATOL)
  counts = where.sum(-1)
  means = np.where(counts > 0, token.sum(-1) / np.maximum(counts, 1), 0.0)
  np.testing.assert_allclose(
      jax.jit(sequence.sequence_mean_log_likelihood)(_f32(logits), targets_with_ignore,
                                                     where),
      means, rtol=RTOL, atol=ATOL)
  # Without a mask every position counts.
  full = np.take_along_axis(np_log_softmax(logits), targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(sequence.sequence_mean_log_likelihood(_f32(logits), targets),
                             full.mean(-1), rtol=RTOL, atol=ATOL)


def test_unlearning_reexports_the_one_copy():
  assert unlearning.sequence_log_likelihood is sequence.sequence_log_likelihood


def test_sequence_sum_and_mean_with_broadcast_mask():
  values = np.arange(12.0).reshape(3, 4)
  where = np.array([[True, False, True, True]])  # [1, T] broadcasts over rows
  np.testing.assert_allclose(sequence.sequence_sum(_f32(values), where),
                             (values * where).sum(-1))
  np.testing.assert_allclose(sequence.sequence_mean(_f32(values), where),
                             (values * where).sum(-1) / 3)
  with pytest.raises(ValueError, match="where"):
    sequence.sequence_sum(_f32(values), np.ones((3, 5), bool))


def test_token_kl_matches_numpy_in_both_directions(inputs):
  logits, ref_logits, _, where = inputs
  lp, lq = np_log_softmax(logits), np_log_softmax(ref_logits)
  kl_pq = (np.exp(lp) * (lp - lq)).sum(-1) * where
  kl_qp = (np.exp(lq) * (lq - lp)).sum(-1) * where
  kl = jax.jit(sequence.token_kl)
  np.testing.assert_allclose(kl(_f32(logits), _f32(ref_logits), where), kl_pq,
                             rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(kl(_f32(ref_logits), _f32(logits), where), kl_qp,
                             rtol=RTOL, atol=ATOL)


def test_token_entropy_matches_numpy(inputs):
  logits, _, _, where = inputs
  lp = np_log_softmax(logits)
  want = -(np.exp(lp) * lp).sum(-1) * where
  np.testing.assert_allclose(jax.jit(sequence.token_entropy)(_f32(logits), where), want,
                             rtol=RTOL, atol=ATOL)


def test_padding_with_nonfinite_logits_gives_finite_values_and_zero_gradients():
  logits = jnp.array([[[0.0, 1.0, 2.0], [jnp.nan, -jnp.inf, jnp.inf]]])
  ref = jnp.array([[[1.0, 0.0, -1.0], [jnp.inf, jnp.nan, 0.0]]])
  where = jnp.array([[True, False]])
  targets = jnp.array([[2, -100]])
  functions = {
      "log_likelihood": lambda z: sequence.sequence_log_likelihood(z, targets, where),
      "mean": lambda z: sequence.sequence_mean_log_likelihood(z, targets, where),
      "kl": lambda z: sequence.sequence_sum(sequence.token_kl(ref, z, where), where),
      "entropy": lambda z: sequence.sequence_sum(sequence.token_entropy(z, where), where),
  }
  # Only the first position counts: its float64 values.
  log_p = np_log_softmax([0.0, 1.0, 2.0])
  log_r = np_log_softmax([1.0, 0.0, -1.0])
  expected = {"log_likelihood": log_p[2], "mean": log_p[2],
              "kl": np.sum(np.exp(log_r) * (log_r - log_p)),
              "entropy": -np.sum(np.exp(log_p) * log_p)}
  # Closed-form gradients at the valid position: onehot - softmax for the
  # log-likelihood, softmax(z) - p_ref for KL(p_ref || softmax(z)), and
  # -p (log p + H) for the entropy.
  p, r = np.exp(log_p), np.exp(log_r)
  expected_grad = {"log_likelihood": np.eye(3)[2] - p, "mean": np.eye(3)[2] - p,
                   "kl": p - r, "entropy": -p * (log_p + expected["entropy"])}
  for name, fn in functions.items():
    value, grad = jax.value_and_grad(lambda z: fn(z).sum())(logits)
    np.testing.assert_allclose(value, expected[name], rtol=RTOL, atol=ATOL, err_msg=name)
    np.testing.assert_allclose(grad[0, 0], expected_grad[name], rtol=1e-5, atol=1e-6,
                               err_msg=name)
    np.testing.assert_array_equal(grad[0, 1], 0.0, err_msg=name)


def test_gradient_of_log_likelihood_is_onehot_minus_softmax(inputs):
  logits, _, targets, where = inputs
  grad = jax.grad(lambda z: sequence.sequence_log_likelihood(z, targets, where).sum())(
      _f32(logits))
  want = (np.eye(7)[targets] - np.exp(np_log_softmax(logits))) * where[..., None]
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)


def test_bf16_inputs_compute_in_float32(inputs):
  logits, _, targets, _ = inputs
  got = sequence.token_log_probs(jnp.asarray(logits, jnp.bfloat16), targets)
  assert got.dtype == jnp.float32
  lp = np_log_softmax(np.asarray(jnp.asarray(logits, jnp.bfloat16), np.float64))
  np.testing.assert_allclose(got, np.take_along_axis(lp, targets[..., None], -1)[..., 0],
                             rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="targets"):
    sequence.token_log_probs(jnp.zeros((2, 3, 4)), jnp.zeros((2, 4), jnp.int32))
  with pytest.raises(ValueError, match="targets"):
    sequence.token_log_probs(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match="logits"):
    sequence.token_log_probs(jnp.zeros((4,)), jnp.zeros((), jnp.int32))
  with pytest.raises(ValueError, match="q_logits"):
    sequence.token_kl(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 5)))
  with pytest.raises(ValueError, match="token_values"):
    sequence.sequence_mean(jnp.zeros((2, 3), jnp.int32))
