"""softmax_cross_entropy and squared_error against float64 numpy and closed forms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from divlab.losses import supervised

_RNG = np.random.default_rng(11)
LOGITS = (3.0 * _RNG.normal(size=(2, 3, 5))).astype(np.float32)
LABELS = _RNG.integers(0, 5, size=(2, 3))
PREDICTIONS = _RNG.normal(size=(2, 3, 4)).astype(np.float32)
TARGETS = _RNG.normal(size=(2, 3, 4)).astype(np.float32)
WHERE = np.array([[True, False, True], [True, True, False]])


def np_cross_entropy(logits, labels):
  log_probs = scipy.special.log_softmax(np.asarray(logits, np.float64), axis=-1)
  return -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]


def np_squared_error(predictions, targets):
  return np.sum((np.float64(predictions) - np.float64(targets)) ** 2, -1)


@pytest.mark.parametrize("reduction,reduce", [
    ("none", lambda v: np.where(WHERE, v, 0.0)),
    ("sum", lambda v: v[WHERE].sum()),
    ("mean", lambda v: v[WHERE].mean()),
])
def test_cross_entropy_and_squared_error_match_numpy(reduction, reduce):
  ce = jax.jit(supervised.softmax_cross_entropy, static_argnames="reduction")
  se = jax.jit(supervised.squared_error, static_argnames="reduction")
  np.testing.assert_allclose(ce(LOGITS, LABELS, where=WHERE, reduction=reduction),
                             reduce(np_cross_entropy(LOGITS, LABELS)), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(se(PREDICTIONS, TARGETS, where=WHERE, reduction=reduction),
                             reduce(np_squared_error(PREDICTIONS, TARGETS)), rtol=1e-6,
                             atol=1e-6)


def test_gradients_are_the_closed_forms():
  # d CE / d z = softmax(z) - onehot(y); d SE / d yhat = 2 (yhat - y); zero
  # where masked.
  grad_ce = jax.jit(jax.grad(lambda z: supervised.softmax_cross_entropy(
      z, LABELS, where=WHERE, reduction="sum")))(LOGITS)
  expected = (scipy.special.softmax(np.float64(LOGITS), axis=-1) - np.eye(5)[LABELS])
  np.testing.assert_allclose(grad_ce, expected * WHERE[..., None], rtol=1e-5, atol=1e-6)
  grad_se = jax.jit(jax.grad(lambda p: supervised.squared_error(
      p, TARGETS, where=WHERE, reduction="sum")))(PREDICTIONS)
  np.testing.assert_allclose(
      grad_se, 2 * (np.float64(PREDICTIONS) - TARGETS) * WHERE[..., None], rtol=1e-6,
      atol=1e-6)


def test_cross_entropy_of_large_and_bf16_logits():
  # Logits of size 1e4: -log softmax(z)_y = logsumexp(z) - z_y without overflow.
  big = np.array([[1e4, 0.0, -1e4], [1e4, 1e4 - 2.0, 0.0]], np.float32)
  labels = np.array([1, 1])
  np.testing.assert_allclose(supervised.softmax_cross_entropy(big, labels),
                             [1e4, 2.0 + np.log1p(np.exp(-2.0))], rtol=1e-6)
  # bf16 logits are computed in float32: the float64 value of the rounded logits.
  bf16 = jnp.asarray(LOGITS, jnp.bfloat16)
  got = supervised.softmax_cross_entropy(bf16, LABELS)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, np_cross_entropy(np.asarray(bf16, np.float64), LABELS),
                             rtol=1e-6, atol=1e-6)
