"""Kernel divergences against float64 numpy double sums and scipy references."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special
import scipy.stats
from jax import test_util as jtu

from divlab.divergences import kernel

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 2))
Y = RNG.normal(loc=0.7, size=(5, 2))
# Paired regression-like data for the conditional estimators.
XC = RNG.normal(size=(7, 3))
YC = np.tanh(XC[:, :1]) + 0.3 * RNG.normal(size=(7, 1))
YHAT = np.tanh(XC[:, :1]) + 0.3 * RNG.normal(size=(7, 1))
WX = RNG.uniform(0.2, 1.0, size=6)
WY = RNG.uniform(0.2, 1.0, size=5)

cauchy_schwarz = jax.jit(kernel.cauchy_schwarz)
conditional_cs = jax.jit(kernel.conditional_cauchy_schwarz)
cs_mi = jax.jit(kernel.cs_mutual_information, static_argnames="normalized")
mmd = jax.jit(kernel.mmd, static_argnames="unbiased")


# ----------------------------------------------------------------------------
# Independent float64 references, written as explicit loops.


def gauss(a, b, sigma):
  return math.exp(-float(np.sum((a - b) ** 2)) / (2.0 * sigma ** 2))


def ref_mean_kernel(p, q, sigma, wp=None, wq=None):
  wp = np.full(len(p), 1.0 / len(p)) if wp is None else wp / wp.sum()
  wq = np.full(len(q), 1.0 / len(q)) if wq is None else wq / wq.sum()
  return sum(wp[i] * wq[j] * gauss(p[i], q[j], sigma)
             for i in range(len(p)) for j in range(len(q)))


def ref_cs(x, y, sigma, wx=None, wy=None):
  return (math.log(ref_mean_kernel(x, x, sigma, wx, wx))
          + math.log(ref_mean_kernel(y, y, sigma, wy, wy))
          - 2.0 * math.log(ref_mean_kernel(x, y, sigma, wx, wy)))


def ref_conditional_cs(x, y, yhat, sigma_x, sigma_y, kx=None, ky=None):
  """Prop. 1 of the CS-IB paper; kx/ky override the kernels (for invariance)."""
  kx = kx or (lambda a, b: gauss(a, b, sigma_x))
  ky = ky or (lambda a, b: gauss(a, b, sigma_y))
  n = len(x)

  def term(first, second):
    total = 0.0
    for j in range(n):
      numerator = sum(kx(x[j], x[i]) * ky(first[j], second[i]) for i in range(n))
      d_j = sum(kx(x[j], x[i]) for i in range(n)) ** 2
      total += numerator / d_j
    return total

  return (math.log(term(y, y)) + math.log(term(yhat, yhat))
          - 2.0 * math.log(term(yhat, y)))


def ref_qmi(x, t, sigma_x, sigma_t):
  n = len(x)
  k = [[gauss(x[i], x[j], sigma_x) for j in range(n)] for i in range(n)]
  q = [[gauss(t[i], t[j], sigma_t) for j in range(n)] for i in range(n)]
  trace_kq = sum(k[i][j] * q[j][i] for i in range(n) for j in range(n))
  sum_k = sum(map(sum, k))
  sum_q = sum(map(sum, q))
  cross = sum(k[i][j] * q[j][l] for i in range(n) for j in range(n) for l in range(n))
  return (math.log(trace_kq / n ** 2) + math.log(sum_k * sum_q / n ** 4)
          - 2.0 * math.log(cross / n ** 3))


def ref_mmd(x, y, sigma, unbiased=False, wx=None, wy=None):
  if not unbiased:
    return (ref_mean_kernel(x, x, sigma, wx, wx) + ref_mean_kernel(y, y, sigma, wy, wy)
            - 2.0 * ref_mean_kernel(x, y, sigma, wx, wy))
  n, m = len(x), len(y)
  kxx = sum(gauss(x[i], x[j], sigma) for i in range(n) for j in range(n) if i != j)
  kyy = sum(gauss(y[i], y[j], sigma) for i in range(m) for j in range(m) if i != j)
  return kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2.0 * ref_mean_kernel(x, y, sigma)


# ----------------------------------------------------------------------------
# Distances, kernels, bandwidth rules.


def test_squared_distances_and_kernel_match_loops():
  expected = np.array([[np.sum((a - b) ** 2) for b in Y] for a in X])
  np.testing.assert_allclose(kernel.squared_distances(X, Y), expected, rtol=1e-5)
  np.testing.assert_allclose(kernel.gaussian_kernel(X, Y, 0.8),
                             np.exp(-expected / (2 * 0.8 ** 2)), rtol=1e-5)
  # Coincident points give exactly zero, never a negative round-off.
  assert np.all(np.diag(np.asarray(kernel.squared_distances(X, X))) == 0.0)


def test_median_heuristic_matches_scipy_pdist():
  pooled = np.concatenate([X, Y])
  np.testing.assert_allclose(kernel.median_heuristic(X, Y),
                             np.median(scipy.spatial.distance.pdist(pooled)), rtol=1e-5)
  # Odd number of pairs (n = 6 -> 15 pairs) and 1-D input.
  np.testing.assert_allclose(kernel.median_heuristic(X[:, 0]),
                             np.median(scipy.spatial.distance.pdist(X[:, :1])), rtol=1e-5)
  assert np.isfinite(jax.jit(jax.grad(kernel.median_heuristic))(jnp.zeros((4, 2)))).all()


@pytest.mark.parametrize("dim", [1, 3])
def test_silverman_bandwidth_matches_scipy_factor(dim):
  samples = np.random.default_rng(4).normal(scale=[2.0, 0.5, 1.0][:dim], size=(40, dim))
  factor = scipy.stats.gaussian_kde(samples.T, bw_method="silverman").factor
  scale = np.sqrt(np.mean(np.var(samples, axis=0, ddof=1)))
  got = kernel.silverman_bandwidth(samples if dim > 1 else samples[:, 0])
  np.testing.assert_allclose(got, factor * scale, rtol=1e-5)
  if dim == 1:  # the textbook 1.06 sigma n^(-1/5)
    np.testing.assert_allclose(got, 1.0592 * np.std(samples, ddof=1) * 40 ** -0.2, rtol=1e-4)


# ----------------------------------------------------------------------------
# Cauchy-Schwarz divergence.


def test_cauchy_schwarz_matches_double_sum():
  np.testing.assert_allclose(cauchy_schwarz(X, Y, 0.9), ref_cs(X, Y, 0.9), rtol=1e-5)
  np.testing.assert_allclose(cauchy_schwarz(X, Y, 0.9, a=WX, b=WY),
                             ref_cs(X, Y, 0.9, WX, WY), rtol=1e-5)


def test_cauchy_schwarz_default_bandwidth_is_median():
  sigma = np.median(scipy.spatial.distance.pdist(np.concatenate([X, Y])))
  np.testing.assert_allclose(cauchy_schwarz(X, Y), ref_cs(X, Y, sigma), rtol=1e-5)


def test_cauchy_schwarz_properties():
  rng = np.random.default_rng(1)
  for _ in range(5):
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(4, 2))
    value = float(cauchy_schwarz(x, y, 1.0))
    assert value >= 0.0
    np.testing.assert_allclose(value, float(cauchy_schwarz(y, x, 1.0)), rtol=1e-5)
  assert float(cauchy_schwarz(X, X, 0.5)) == 0.0
  # Permuted rows are the same empirical measure: 0 up to (clipped) round-off.
  permuted = X[::-1]
  for value in (cauchy_schwarz(X, permuted, 0.5), mmd(X, permuted, 0.5)):
    assert 0.0 <= float(value) < 1e-6


def test_cauchy_schwarz_small_bandwidth_is_finite():
  # Most kernel values underflow in float32 at sigma = 0.05; log space keeps it.
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(5, 2)) * 3, rng.normal(size=(4, 2)) * 3
  sigma = 0.05

  def log_mean(p, q):
    d = np.array([[np.sum((a - b) ** 2) for b in q] for a in p])
    return scipy.special.logsumexp(-d / (2 * sigma ** 2)) - math.log(d.size)

  expected = log_mean(x, x) + log_mean(y, y) - 2 * log_mean(x, y)
  np.testing.assert_allclose(cauchy_schwarz(x, y, sigma), expected, rtol=1e-5)


# ----------------------------------------------------------------------------
# Conditional CS divergence.


def test_conditional_cs_matches_paper_formula():
  got = conditional_cs(XC, YC, YHAT, sigma_x=1.3, sigma_y=0.6)
  np.testing.assert_allclose(got, ref_conditional_cs(XC, YC, YHAT, 1.3, 0.6), rtol=1e-5)


def test_conditional_cs_is_invariant_to_kernel_constants():
  # Normalised Gaussian densities instead of the unnormalised kernel.
  kx = lambda a, b: scipy.stats.multivariate_normal.pdf(a - b, cov=1.3 ** 2 * np.eye(3))
  ky = lambda a, b: 7.0 * scipy.stats.norm.pdf(a[0] - b[0], scale=0.6)
  expected = ref_conditional_cs(XC, YC, YHAT, None, None, kx=kx, ky=ky)
  np.testing.assert_allclose(conditional_cs(XC, YC, YHAT, sigma_x=1.3, sigma_y=0.6),
                             expected, rtol=1e-5)


def test_conditional_cs_zero_when_prediction_is_target():
  assert float(conditional_cs(XC, YC, YC, sigma_x=1.0, sigma_y=1.0)) == 0.0


def test_conditional_cs_small_bandwidth_matches_log_space_reference():
  sigma_x, sigma_y = 0.05, 0.5
  got = conditional_cs(XC, YC, YHAT, sigma_x=sigma_x, sigma_y=sigma_y)
  # Float64 reference, with the kernel on x in log space.
  dx = np.array([[np.sum((a - b) ** 2) for b in XC] for a in XC])
  log_k = -dx / (2 * sigma_x ** 2)

  def log_term(first, second):
    log_l = np.array([[-np.sum((a - b) ** 2) / (2 * sigma_y ** 2) for b in second]
                      for a in first])
    rows = scipy.special.logsumexp(log_k + log_l, axis=1)
    return scipy.special.logsumexp(rows - 2 * scipy.special.logsumexp(log_k, axis=1))

  expected = log_term(YC, YC) + log_term(YHAT, YHAT) - 2 * log_term(YHAT, YC)
  assert np.isfinite(float(got))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------
# CS quadratic mutual information.


def test_cs_mutual_information_matches_triple_sum():
  t = XC[:, :2] ** 2 + 0.2 * np.random.default_rng(3).normal(size=(7, 2))
  got = cs_mi(XC, t, sigma_x=1.5, sigma_t=0.7)
  # A difference of O(1) logs: float32 round-off is absolute, about 1e-6.
  np.testing.assert_allclose(got, ref_qmi(XC, t, 1.5, 0.7), rtol=1e-5, atol=1e-5)
  normalised = ref_qmi(XC, t, 1.5, 0.7) / math.sqrt(
      ref_qmi(XC, XC, 1.5, 1.5) * ref_qmi(t, t, 0.7, 0.7))
  np.testing.assert_allclose(cs_mi(XC, t, sigma_x=1.5, sigma_t=0.7, normalized=True),
                             normalised, rtol=1e-4)


def test_cs_mutual_information_normalised_self_is_one_and_constant_is_zero():
  np.testing.assert_allclose(cs_mi(XC, XC, sigma_x=0.8, sigma_t=0.8, normalized=True),
                             1.0, rtol=1e-5)
  constant = np.ones((7, 2))
  assert float(cs_mi(XC, constant, normalized=True)) == 0.0
  grad = jax.jit(jax.grad(lambda t: kernel.cs_mutual_information(XC, t, normalized=True)))(
      constant)
  assert np.all(np.isfinite(grad))


# ----------------------------------------------------------------------------
# MMD.


@pytest.mark.parametrize("unbiased", [False, True])
def test_mmd_matches_double_sum(unbiased):
  np.testing.assert_allclose(mmd(X, Y, 0.7, unbiased=unbiased),
                             ref_mmd(X, Y, 0.7, unbiased), rtol=1e-5, atol=1e-7)


def test_mmd_weights_and_identical_samples():
  np.testing.assert_allclose(mmd(X, Y, 0.7, a=WX, b=WY), ref_mmd(X, Y, 0.7, False, WX, WY),
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(mmd(X, X, 0.7), 0.0, atol=1e-6)
  # Weights are proportions: scaling them changes nothing.
  np.testing.assert_allclose(mmd(X, Y, 0.7, a=2 * WX), mmd(X, Y, 0.7, a=WX), rtol=1e-6)


# ----------------------------------------------------------------------------
# Gradients, transformations, shapes, errors.


def test_gradients_match_finite_differences():
  with jax.enable_x64(True):
    x, y = jnp.asarray(X), jnp.asarray(Y)
    cases = [
        (lambda a: kernel.cauchy_schwarz(a, y, 0.9), x),
        (lambda a: kernel.mmd(a, y, 0.9, unbiased=True), x),
        (lambda yh: kernel.conditional_cauchy_schwarz(XC, YC, yh, sigma_x=1.3,
                                                      sigma_y=0.6), jnp.asarray(YHAT)),
        (lambda t: kernel.cs_mutual_information(XC, t, sigma_x=1.5, sigma_t=0.7,
                                                normalized=True), jnp.asarray(XC[:, :2] ** 2)),
    ]
    for fn, arg in cases:
      jtu.check_grads(jax.jit(fn), (arg,), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_gradient_at_identical_samples_is_zero_not_nan():
  grad = jax.jit(jax.grad(lambda a: kernel.cauchy_schwarz(a, X, 0.9)))(
      jnp.asarray(X, jnp.float32))
  np.testing.assert_allclose(grad, 0.0, atol=1e-5)


def test_vmap_over_sample_sets_matches_loop():
  xs = np.stack([X, X + 0.5, X * 2.0]).astype(np.float32)
  ys = np.stack([Y, Y, Y - 1.0]).astype(np.float32)
  batched = jax.jit(jax.vmap(lambda a, b: kernel.cauchy_schwarz(a, b, 0.9)))(xs, ys)
  np.testing.assert_allclose(batched, [ref_cs(a, b, 0.9) for a, b in zip(xs, ys)],
                             rtol=1e-5)
  batched = jax.jit(jax.vmap(lambda a, b: kernel.mmd(a, b, 0.9)))(xs, ys)
  np.testing.assert_allclose(batched, [ref_mmd(a, b, 0.9) for a, b in zip(xs, ys)],
                             rtol=1e-5, atol=1e-7)


def test_one_dimensional_input_equals_column():
  x, y = X[:, 0], Y[:, 0]
  assert float(cauchy_schwarz(x, y, 0.5)) == float(cauchy_schwarz(x[:, None], y[:, None], 0.5))
  assert float(mmd(x, y, 0.5)) == float(mmd(x[:, None], y[:, None], 0.5))
  assert (float(conditional_cs(XC[:, 0], YC[:, 0], YHAT[:, 0]))
          == float(conditional_cs(XC[:, :1], YC, YHAT)))
  assert float(cs_mi(XC[:, 0], YC[:, 0])) == float(cs_mi(XC[:, :1], YC))


@pytest.mark.parametrize("call, name", [
    (lambda: kernel.gaussian_kernel(X, Y, 0.0), "sigma"),
    (lambda: kernel.cauchy_schwarz(X, Y, -1.0), "sigma"),
    (lambda: kernel.mmd(X, Y, 0.0), "sigma"),
    (lambda: kernel.conditional_cauchy_schwarz(XC, YC, YHAT, sigma_x=0.0), "sigma_x"),
    (lambda: kernel.conditional_cauchy_schwarz(XC, YC, YHAT, sigma_y=-2.0), "sigma_y"),
    (lambda: kernel.cs_mutual_information(XC, YC, sigma_t=0.0), "sigma_t"),
    (lambda: kernel.cauchy_schwarz(X, Y[:, :1], 1.0), "y"),
    (lambda: kernel.squared_distances(X, np.ones((2, 3))), "y"),
    (lambda: kernel.conditional_cauchy_schwarz(XC, YC[:5], YHAT), "y"),
    (lambda: kernel.conditional_cauchy_schwarz(XC, YC, YHAT[:5]), "yhat"),
    (lambda: kernel.cs_mutual_information(XC, YC[:6]), "t"),
    (lambda: kernel.cauchy_schwarz(X, Y, 1.0, a=WX[:4]), "a"),
    (lambda: kernel.mmd(X, Y, 1.0, unbiased=True, b=WY), "b"),
    (lambda: kernel.mmd(X[:1], Y, 1.0, unbiased=True), "x"),
    (lambda: kernel.cauchy_schwarz(np.ones((2, 2, 2)), Y, 1.0), "x"),
    (lambda: kernel.silverman_bandwidth(np.ones((1, 2))), "x"),
])
def test_bad_arguments_raise_value_error_naming_them(call, name):
  with pytest.raises(ValueError, match=f"`{name}`"):
    call()
