"""bf16 inputs outside the categorical module: sample divergences and losses.

Dtype policy checked here (the same as the categorical divergences): bf16
inputs are computed in float32, the value comes back as float32 and the
gradient in the input dtype (bf16). Each value is compared with a float64
numpy transcription of the documented formula, evaluated on the bf16-rounded
inputs (so the only error left is the float32 computation), and each gradient
with central finite differences of that transcription at bf16 tolerance.
"""
import jax
import jax.numpy as jnp
import numpy as np
from scipy import special
import pytest

from divlab.divergences import dependence
from divlab.divergences import kernel
from divlab.divergences import transport
from divlab.losses import bottleneck
from divlab.losses import preference
from divlab.losses import unlearning
from finite_differences import central_differences

_RNG = np.random.default_rng(17)
X = jnp.asarray(_RNG.normal(size=(6, 2)), jnp.bfloat16)
Y = jnp.asarray(_RNG.normal(size=(5, 2)) + 0.5, jnp.bfloat16)
Z = jnp.asarray(_RNG.normal(size=(6, 2)), jnp.bfloat16)
LOGP = jnp.asarray(-np.abs(_RNG.normal(size=(6, 2))) * 4, jnp.bfloat16)


def _f64(a):
  return np.asarray(jnp.asarray(a, jnp.float32), np.float64)


def _sqdist(a, b):
  return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def _np_mmd(x, y, sigma=1.0):
  k = lambda a, b: np.exp(-_sqdist(a, b) / (2 * sigma ** 2))
  return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


def _np_cauchy_schwarz(x, y, sigma=1.0):
  k = lambda a, b: np.exp(-_sqdist(a, b) / (2 * sigma ** 2))
  return (-2 * np.log(k(x, y).mean()) + np.log(k(x, x).mean())
          + np.log(k(y, y).mean()))


def _np_sinkhorn_cost(x, y, epsilon=1.0, iters=300):
  """Primal <P, C> of the entropic plan, log-domain Sinkhorn in float64."""
  cost = _sqdist(x, y)
  log_a, log_b = -np.log(len(x)) * np.ones(len(x)), -np.log(len(y)) * np.ones(len(y))
  f, g = np.zeros(len(x)), np.zeros(len(y))
  for _ in range(iters):
    f = -epsilon * special.logsumexp((g[None, :] - cost) / epsilon + log_b[None, :], 1)
    g = -epsilon * special.logsumexp((f[:, None] - cost) / epsilon + log_a[:, None], 0)
  plan = np.exp((f[:, None] + g[None, :] - cost) / epsilon + log_a[:, None] + log_b[None, :])
  return (plan * cost).sum()


def _np_w2_1d(x, y):
  """Exact W_2 between two equal-size 1-D samples: sorted pairs."""
  return np.sqrt(np.mean((np.sort(x) - np.sort(y)) ** 2))


def _np_dcov(x, y):
  def centred(a):
    d = np.sqrt(_sqdist(a, a))
    return d - d.mean(0, keepdims=True) - d.mean(1, keepdims=True) + d.mean()
  return (centred(x) * centred(y)).mean()


def _np_hsic(x, y, sigma=1.0):
  n = len(x)
  k = np.exp(-_sqdist(x, x) / (2 * sigma ** 2))
  l = np.exp(-_sqdist(y, y) / (2 * sigma ** 2))
  h = np.eye(n) - np.ones((n, n)) / n
  return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def _log_sigmoid(v):
  return -np.logaddexp(0.0, -v)


# name -> (jax function of one bf16 array, numpy float64 function, input).
CASES = {
    "kernel.mmd": (lambda x: kernel.mmd(x, Y, 1.0),
                   lambda x: _np_mmd(x, _f64(Y)), X),
    "kernel.cauchy_schwarz": (lambda x: kernel.cauchy_schwarz(x, Y, 1.0),
                              lambda x: _np_cauchy_schwarz(x, _f64(Y)), X),
    # Converged to 1e-6 in the marginals (the default 1e-3 leaves 7e-5 of the
    # cost), so that the value is compared at float32 accuracy.
    "transport.sinkhorn": (lambda x: transport.sinkhorn(x, Y, 1.0, threshold=1e-6),
                           lambda x: _np_sinkhorn_cost(x, _f64(Y)), X),
    "transport.sliced_wasserstein": (
        lambda x: transport.sliced_wasserstein(x[:, 0], Z[:, 0], jax.random.key(0)),
        lambda x: _np_w2_1d(x[:, 0], _f64(Z)[:, 0]), X),
    "dependence.distance_covariance": (
        lambda x: dependence.distance_covariance(x, Z),
        lambda x: _np_dcov(x, _f64(Z)), X),
    "dependence.hsic": (lambda x: dependence.hsic(x, Z, sigma_x=1.0, sigma_y=1.0),
                        lambda x: _np_hsic(x, _f64(Z)), X),
    "bottleneck.gaussian_kl_to_standard_normal": (
        lambda m: bottleneck.gaussian_kl_to_standard_normal(m, Z).sum(),
        lambda m: 0.5 * (m ** 2 + np.exp(_f64(Z)) - 1 - _f64(Z)).sum(), X),
    "unlearning.npo": (
        lambda lp: unlearning.npo(lp[:, 0], LOGP[:, 1], beta=0.5).sum(),
        lambda lp: (-(2 / 0.5) * _log_sigmoid(0.5 * (_f64(LOGP)[:, 1] - lp[:, 0]))).sum(),
        LOGP),
    "preference.dpo": (
        lambda lp: preference.dpo(lp[:, 0], lp[:, 1], LOGP[:, 1], LOGP[:, 0],
                                  beta=0.5).sum(),
        lambda lp: (-_log_sigmoid(0.5 * ((lp[:, 0] - _f64(LOGP)[:, 1])
                                         - (lp[:, 1] - _f64(LOGP)[:, 0])))).sum(),
        LOGP),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bf16_value_matches_float64_and_is_float32(name):
  fn, reference, x = CASES[name]
  value = jax.jit(fn)(x)
  assert value.dtype == jnp.float32, value.dtype
  # float32 arithmetic on the rounded inputs: a few 1e-7 relative here.
  np.testing.assert_allclose(float(value), reference(_f64(x)), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bf16_gradient_is_finite_bf16_and_close_to_finite_differences(name):
  fn, reference, x = CASES[name]
  grad = jax.jit(jax.grad(fn))(x)
  assert grad.dtype == jnp.bfloat16, grad.dtype
  assert np.all(np.isfinite(_f64(grad)))
  expected = central_differences(reference, _f64(x), step=1e-5)
  # bf16 holds 8 significant bits: each entry is rounded by at most 2^-9 of
  # itself, and its float32 computation from rounded inputs adds less than
  # that relative to the largest entry (2.4e-3 of it at most here). An absolute
  # tolerance scaled to the gradient keeps small gradients (HSIC's is 0.02)
  # from passing whatever they hold.
  scale = np.abs(expected).max()
  np.testing.assert_allclose(_f64(grad), expected, rtol=2.0 ** -7, atol=2.0 ** -8 * scale)
