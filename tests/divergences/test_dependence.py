"""Distance covariance family and HSIC against float64 loop references and exact identities."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.spatial.distance
from jax import test_util as jtu

from divlab.divergences import dependence

RNG = np.random.default_rng(0)
N = 7
X = RNG.normal(size=(N, 2))
Y = np.sin(X[:, :1]) + 0.4 * RNG.normal(size=(N, 1))
Z = RNG.normal(size=(N, 3))

dcov = jax.jit(dependence.distance_covariance, static_argnames="unbiased")
dcor = jax.jit(dependence.distance_correlation, static_argnames="unbiased")
jdcov = jax.jit(dependence.jdcov, static_argnames=("unbiased", "c"))
ccdcov = jax.jit(dependence.ccdcov, static_argnames="unbiased")
hsic = jax.jit(dependence.hsic)


# ----------------------------------------------------------------------------
# Float64 references written as loops over the definitions.


def distances(x):
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  return np.array([[math.sqrt(np.sum((a - b) ** 2)) for b in x] for a in x])


def double_centred(x):
  a = distances(x)
  n = len(a)
  row = [sum(a[i, l] for l in range(n)) / n for i in range(n)]
  col = [sum(a[k, j] for k in range(n)) / n for j in range(n)]
  grand = sum(a[k, l] for k in range(n) for l in range(n)) / n ** 2
  return np.array([[a[i, j] - row[i] - col[j] + grand for j in range(n)] for i in range(n)])


def u_centred(x):
  a = distances(x)
  n = len(a)
  row = [sum(a[i, l] for l in range(n)) for i in range(n)]
  col = [sum(a[k, j] for k in range(n)) for j in range(n)]
  total = sum(a[k, l] for k in range(n) for l in range(n))
  return np.array([[0.0 if i == j else a[i, j] - row[i] / (n - 2) - col[j] / (n - 2)
                    + total / ((n - 1) * (n - 2)) for j in range(n)] for i in range(n)])


def ref_dcov(x, y, unbiased):
  n = len(x)
  if unbiased:
    a, b = u_centred(x), u_centred(y)
    return sum(a[i, j] * b[i, j] for i in range(n) for j in range(n) if i != j) / (n * (n - 3))
  a, b = double_centred(x), double_centred(y)
  return sum(a[i, j] * b[i, j] for i in range(n) for j in range(n)) / n ** 2


def ref_jdcov(xs, unbiased, c):
  """Chakraborty & Zhang's estimators with U~ = -(centred distances)."""
  n, d = len(xs[0]), len(xs)
  mats = [-(u_centred(x) if unbiased else double_centred(x)) for x in xs]
  total = sum(np.prod([m[i, j] + c for m in mats]) for i in range(n) for j in range(n))
  if unbiased:
    return total / (n * (n - 3)) - c ** d * n / (n - 3)
  return total / n ** 2 - c ** d


def ref_hsic(x, y, sigma_x, sigma_y):
  n = len(x)
  k = np.exp(-distances(x) ** 2 / (2 * sigma_x ** 2))
  l = np.exp(-distances(y) ** 2 / (2 * sigma_y ** 2))
  h = np.eye(n) - np.ones((n, n)) / n
  return np.trace(k @ h @ l @ h) / (n - 1) ** 2


# ----------------------------------------------------------------------------
# Distance covariance and correlation.


@pytest.mark.parametrize("unbiased", [False, True])
def test_distance_covariance_matches_centring_loops(unbiased):
  np.testing.assert_allclose(dcov(X, Y, unbiased=unbiased), ref_dcov(X, Y, unbiased),
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(dcov(X, Z, unbiased=unbiased), ref_dcov(X, Z, unbiased),
                             rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("unbiased", [False, True])
def test_distance_covariance_exact_identities(unbiased):
  # Distances of -2.5 x + 1 are 2.5 times those of x.
  np.testing.assert_allclose(dcov(X, -2.5 * X + 1.0, unbiased=unbiased),
                             2.5 * ref_dcov(X, X, unbiased), rtol=1e-5)
  np.testing.assert_allclose(dcor(X, -2.5 * X + 1.0, unbiased=unbiased), 1.0, rtol=1e-5)
  # A constant variable has zero distance matrix: no dependence, exactly.
  constant = np.full((N, 2), 3.0)
  assert float(dcov(X, constant, unbiased=unbiased)) == 0.0
  assert float(dcor(X, constant, unbiased=unbiased)) == 0.0


def test_distance_correlation_matches_reference():
  for unbiased in (False, True):
    expected = ref_dcov(X, Y, unbiased) / math.sqrt(
        ref_dcov(X, X, unbiased) * ref_dcov(Y, Y, unbiased))
    np.testing.assert_allclose(dcor(X, Y, unbiased=unbiased), expected, rtol=1e-5)
  assert 0.0 <= float(dcor(X, Z)) <= 1.0


# ----------------------------------------------------------------------------
# Joint distance covariance.


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("c", [1.0, 2.5])
def test_jdcov_matches_product_formula(unbiased, c):
  expected = ref_jdcov([X, Y, Z], unbiased, c)
  with jax.enable_x64(True):
    np.testing.assert_allclose(jdcov([X, Y, Z], unbiased=unbiased, c=c), expected,
                               rtol=1e-10)
  # float32: centring O(1) distances leaves absolute round-off of ~c * 1e-6.
  np.testing.assert_allclose(jdcov([X, Y, Z], unbiased=unbiased, c=c), expected,
                             rtol=1e-5, atol=c * 1e-5)


@pytest.mark.parametrize("unbiased", [False, True])
def test_jdcov_expands_into_pairwise_and_triple_terms(unbiased):
  # JdCov^2(X, Y, Z; c) = c * (sum of pairwise dCov^2) + E[U_X U_Y U_Z]; the
  # centred matrices have zero row sums, so no other terms survive.
  c = 1.7
  pairs = sum(ref_dcov(a, b, unbiased) for a, b in itertools.combinations([X, Y, Z], 2))
  if unbiased:
    a, b, z = u_centred(X), u_centred(Y), u_centred(Z)
    triple = -np.sum(a * b * z) / (N * (N - 3))
  else:
    a, b, z = double_centred(X), double_centred(Y), double_centred(Z)
    triple = -np.mean(a * b * z)
  with jax.enable_x64(True):
    np.testing.assert_allclose(jdcov([X, Y, Z], unbiased=unbiased, c=c), c * pairs + triple,
                               rtol=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_jdcov_of_two_variables_is_dcov(unbiased):
  np.testing.assert_allclose(jdcov([X, Y], unbiased=unbiased), dcov(X, Y, unbiased=unbiased),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(jdcov([X, Y, Z], unbiased=unbiased),
                             jdcov([Z, X, Y], unbiased=unbiased), rtol=1e-5, atol=1e-7)


def test_ccdcov_is_dcov_with_concatenated_attributes():
  s1, s2 = Z[:, 0], Z[:, 1:]
  expected = ref_dcov(Y, np.column_stack([s1, s2]), True)
  np.testing.assert_allclose(ccdcov(Y, [s1, s2]), expected, rtol=1e-5)
  np.testing.assert_allclose(ccdcov(Y, Z), expected, rtol=1e-5)
  np.testing.assert_allclose(ccdcov(Y, [s1, s2], unbiased=False),
                             ref_dcov(Y, Z, False), rtol=1e-5)


# ----------------------------------------------------------------------------
# HSIC.


def test_hsic_matches_trace_formula():
  np.testing.assert_allclose(hsic(X, Y, sigma_x=1.2, sigma_y=0.5),
                             ref_hsic(X, Y, 1.2, 0.5), rtol=1e-5)
  sigma_x = np.median(scipy.spatial.distance.pdist(X))
  sigma_y = np.median(scipy.spatial.distance.pdist(Y))
  np.testing.assert_allclose(hsic(X, Y), ref_hsic(X, Y, sigma_x, sigma_y), rtol=1e-5)
  assert float(hsic(X, np.zeros(N))) == 0.0


def test_hsic_default_bandwidth_with_mostly_tied_binary_attribute():
  # 6 of 7 equal: the median pair distance is 0, so the mean (6/21) is used.
  s = np.array([0.0] * 6 + [1.0])
  expected = ref_hsic(X, s, np.median(scipy.spatial.distance.pdist(X)), 6 / 21)
  np.testing.assert_allclose(hsic(X, s), expected, rtol=1e-5)


# ----------------------------------------------------------------------------
# Gradients, transformations, shapes, errors.


def test_gradients_match_finite_differences():
  with jax.enable_x64(True):
    x = jnp.asarray(X)
    cases = [
        lambda a: dependence.distance_covariance(a, Y),
        lambda a: dependence.distance_covariance(a, Y, unbiased=True),
        lambda a: dependence.distance_correlation(a, Y),
        lambda a: dependence.jdcov([a, Y, Z]),
        lambda a: dependence.hsic(a, Y, sigma_x=1.2, sigma_y=0.5),
    ]
    for fn in cases:
      jtu.check_grads(jax.jit(fn), (x,), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_gradient_with_coincident_points_is_finite():
  tied = np.concatenate([X[:4], X[:3]])  # three duplicated rows
  for unbiased in (False, True):
    grad = jax.jit(jax.grad(lambda a, u=unbiased: dependence.distance_covariance(
        a, Y, unbiased=u)))(jnp.asarray(tied, jnp.float32))
    assert np.all(np.isfinite(grad))
  grad = jax.jit(jax.grad(lambda a: dependence.distance_correlation(a, np.ones(N))))(
      jnp.asarray(X, jnp.float32))
  assert np.all(np.asarray(grad) == 0.0)


def test_vmap_matches_loop():
  xs = np.stack([X, 2.0 * X, X ** 2]).astype(np.float32)
  ys = np.stack([Y, Y, -Y]).astype(np.float32)
  batched = jax.jit(jax.vmap(lambda a, b: dependence.distance_covariance(a, b, unbiased=True)))(
      xs, ys)
  np.testing.assert_allclose(batched, [ref_dcov(a, b, True) for a, b in zip(xs, ys)],
                             rtol=1e-4, atol=1e-6)
  batched = jax.jit(jax.vmap(lambda a, b: dependence.hsic(a, b, sigma_x=1.0, sigma_y=1.0)))(
      xs, ys)
  np.testing.assert_allclose(batched, [ref_hsic(a, b, 1.0, 1.0) for a, b in zip(xs, ys)],
                             rtol=1e-5)


def test_one_dimensional_input_equals_column():
  y = Y[:, 0]
  assert float(dcov(X, y)) == float(dcov(X, y[:, None]))
  assert float(jdcov([X, y, Z[:, 0]])) == float(jdcov([X, y[:, None], Z[:, :1]]))
  assert float(hsic(X, y)) == float(hsic(X, y[:, None]))


@pytest.mark.parametrize("call, name", [
    (lambda: dependence.distance_covariance(X, Y[:5]), "y"),
    (lambda: dependence.distance_covariance(X[:3], Y[:3], unbiased=True), "x"),
    (lambda: dependence.distance_correlation(np.ones((N, 2, 2)), Y), "x"),
    (lambda: dependence.jdcov([X]), "xs"),
    (lambda: dependence.jdcov(np.stack([X, X])), "xs"),
    (lambda: dependence.jdcov([X, Y[:5]]), r"xs\[1\]"),
    (lambda: dependence.jdcov([X, Y], c=0.0), "c"),
    (lambda: dependence.ccdcov(Y, [Z[:, 0], Z[:5, 1]]), r"sensitive\[1\]"),
    (lambda: dependence.ccdcov(Y, Z[:5]), "sensitive"),
    (lambda: dependence.hsic(X, Y, sigma_x=0.0), "sigma_x"),
    (lambda: dependence.hsic(X, Y, sigma_y=-1.0), "sigma_y"),
])
def test_bad_arguments_raise_value_error_naming_them(call, name):
  with pytest.raises(ValueError, match=f"`{name}`"):
    call()
