"""Masked divergences against a float64 numpy transcription that never masks.

The reference drops the excluded entries (a numpy slice, not a -inf logit), so
it shares nothing with the library's masking path. Values are compared with it
directly and gradients at kept entries with its central finite differences;
gradients at excluded entries must be exactly 0.
"""
import jax
import jax.numpy as jnp
import numpy as np
from scipy import special
import pytest

from divlab import divergences
from finite_differences import central_differences

_RNG = np.random.default_rng(1717)
P = _RNG.normal(size=(3, 6)) * 2
Q = _RNG.normal(size=(3, 6)) * 2
# A different kept set per row, one row keeping only two entries.
WHERE = np.array([[1, 1, 0, 1, 0, 1],
                  [0, 1, 1, 1, 1, 1],
                  [1, 0, 0, 0, 0, 1]], bool)


def _log_softmax(x):
  return x - special.logsumexp(x)


def _np_entropy(p_row):
  lp = _log_softmax(p_row)
  return -(np.exp(lp) * lp).sum()


def _np_kl(p_row, q_row):
  lp, lq = _log_softmax(p_row), _log_softmax(q_row)
  return (np.exp(lp) * (lp - lq)).sum()


def _np_js(p_row, q_row, beta=0.5):
  p, q = np.exp(_log_softmax(p_row)), np.exp(_log_softmax(q_row))
  m = beta * p + (1 - beta) * q
  return beta * (p * np.log(p / m)).sum() + (1 - beta) * (q * np.log(q / m)).sum()


def _probs(p_row, q_row):
  return np.exp(_log_softmax(p_row)), np.exp(_log_softmax(q_row))


def _np_alpha(p_row, q_row, alpha=0.3):
  p, q = _probs(p_row, q_row)
  return (1 - (p ** alpha * q ** (1 - alpha)).sum()) / (alpha * (1 - alpha))


def _np_renyi(p_row, q_row, alpha=0.7):
  p, q = _probs(p_row, q_row)
  return np.log((p ** alpha * q ** (1 - alpha)).sum()) / (alpha - 1)


def _np_hellinger(p_row, q_row):
  p, q = _probs(p_row, q_row)
  return ((np.sqrt(p) - np.sqrt(q)) ** 2).sum()


def _np_chi2(p_row, q_row):
  p, q = _probs(p_row, q_row)
  return ((p - q) ** 2 / q).sum()


def _np_tv(p_row, q_row):
  p, q = _probs(p_row, q_row)
  return 0.5 * np.abs(p - q).sum()


def _per_row(fn, *rows_of_arrays):
  """fn applied to the kept entries of each row (plain numpy slices)."""
  return np.array([fn(*(a[r][WHERE[r]] for a in rows_of_arrays))
                   for r in range(WHERE.shape[0])])


@pytest.fixture(scope="module")
def masked_fns():
  return {
      "entropy": jax.jit(lambda p, q: divergences.entropy(p, where=WHERE)),
      "kl": jax.jit(lambda p, q: divergences.kl(p, q, where=WHERE)),
      "js": jax.jit(lambda p, q: divergences.js(p, q, where=WHERE)),
      "reverse_kl": jax.jit(lambda p, q: divergences.reverse_kl(p, q, where=WHERE)),
      "alpha": jax.jit(lambda p, q: divergences.alpha_divergence(p, q, alpha=0.3,
                                                                  where=WHERE)),
      "renyi": jax.jit(lambda p, q: divergences.renyi(p, q, alpha=0.7, where=WHERE)),
      "squared_hellinger": jax.jit(
          lambda p, q: divergences.squared_hellinger(p, q, where=WHERE)),
      "chi_squared": jax.jit(lambda p, q: divergences.chi_squared(p, q, where=WHERE)),
      "total_variation": jax.jit(
          lambda p, q: divergences.total_variation(p, q, where=WHERE)),
  }


NUMPY = {
    "entropy": lambda p, q: _per_row(_np_entropy, p),
    "kl": lambda p, q: _per_row(_np_kl, p, q),
    "js": lambda p, q: _per_row(_np_js, p, q),
    "reverse_kl": lambda p, q: _per_row(lambda a, b: _np_kl(b, a), p, q),
    "alpha": lambda p, q: _per_row(_np_alpha, p, q),
    "renyi": lambda p, q: _per_row(_np_renyi, p, q),
    "squared_hellinger": lambda p, q: _per_row(_np_hellinger, p, q),
    "chi_squared": lambda p, q: _per_row(_np_chi2, p, q),
    "total_variation": lambda p, q: _per_row(_np_tv, p, q),
}


@pytest.mark.parametrize("name", sorted(NUMPY))
def test_masked_value_equals_the_sliced_float64_reference(masked_fns, name):
  got = masked_fns[name](jnp.asarray(P, jnp.float32), jnp.asarray(Q, jnp.float32))
  np.testing.assert_allclose(np.asarray(got), NUMPY[name](P, Q), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(NUMPY))
@pytest.mark.parametrize("wrt", [0, 1])
def test_masked_gradient_matches_finite_differences_and_is_zero_outside(
    masked_fns, name, wrt):
  # A weighted sum, so each row's gradient is scaled differently.
  row_weights = np.array([1.0, -0.7, 2.0])
  loss = lambda p, q: jnp.sum(masked_fns[name](p, q) * row_weights)
  got = np.asarray(jax.grad(loss, argnums=wrt)(jnp.asarray(P, jnp.float32),
                                               jnp.asarray(Q, jnp.float32)))
  if wrt == 0:
    reference = lambda p: float(NUMPY[name](p, Q) @ row_weights)
    expected = central_differences(reference, P.copy())
  else:
    reference = lambda q: float(NUMPY[name](P, q) @ row_weights)
    expected = central_differences(reference, Q.copy())
  # Excluded entries do not enter the numpy function: their difference is 0.
  np.testing.assert_allclose(got[WHERE], expected[WHERE], rtol=1e-4, atol=2e-6)
  assert np.all(got[~WHERE] == 0.0), got[~WHERE]


def test_masked_entropy_gradient_ignores_excluded_logits():
  """Changing an excluded logit changes neither the entropy nor its gradient."""
  grad_fn = jax.jit(jax.grad(lambda p: divergences.entropy(p, where=WHERE).sum()))
  moved = P.copy()
  moved[~WHERE] += 5.0
  a = np.asarray(grad_fn(jnp.asarray(P, jnp.float32)))
  b = np.asarray(grad_fn(jnp.asarray(moved, jnp.float32)))
  np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  # The closed form at kept entries: dH/dx_i = -p_i (log p_i + H), p over kept.
  expected = np.zeros_like(P)
  for r in range(P.shape[0]):
    lp = _log_softmax(P[r][WHERE[r]])
    expected[r, WHERE[r]] = -np.exp(lp) * (lp + _np_entropy(P[r][WHERE[r]]))
  np.testing.assert_allclose(a, expected, rtol=1e-5, atol=1e-6)
