"""Bad and edge inputs of every sample-based divergence: refused by name, NaN, or the limit.

Each case asserts one exact outcome: a ValueError whose message names the
argument, a NaN (never a plausible finite number), or the correct value at an
edge, computed here independently (closed forms, subsets, numpy float64).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divlab import divergences as dv

RNG = np.random.default_rng(0)
X = RNG.normal(size=(5, 2))
Y = RNG.normal(loc=0.5, size=(4, 2))
# Paired samples for the conditional and dependence measures.
XP = RNG.normal(size=(6, 2))
YP = np.tanh(XP[:, :1]) + 0.3 * RNG.normal(size=(6, 1))
EMPTY = np.zeros((0, 2))
KEY = jax.random.PRNGKey(0)


def with_entry(array, index, value):
  array = np.array(array, dtype=np.float64)
  array[index] = value
  return array


# ----------------------------------------------------------------------------
# Refused eagerly, naming the argument.

ERROR_CASES = {
    "mmd empty x": (lambda: dv.mmd(EMPTY, Y), "x"),
    "mmd empty y": (lambda: dv.mmd(X, EMPTY), "y"),
    "cauchy_schwarz empty x": (lambda: dv.cauchy_schwarz(EMPTY, Y, 1.0), "x"),
    "sinkhorn empty x": (lambda: dv.sinkhorn(EMPTY, Y, 0.1), "x"),
    "sinkhorn_divergence empty y": (lambda: dv.sinkhorn_divergence(X, EMPTY, 0.1), "y"),
    "sliced_wasserstein empty x": (lambda: dv.sliced_wasserstein(EMPTY, Y, KEY), "x"),
    "gaussian_kernel empty y": (lambda: dv.gaussian_kernel(X, EMPTY, 1.0), "y"),
    "median_heuristic empty x": (lambda: dv.median_heuristic(EMPTY), "x"),
    "distance_covariance empty x": (lambda: dv.distance_covariance(EMPTY, EMPTY), "x"),
    "hsic empty x": (lambda: dv.hsic(EMPTY, EMPTY), "x"),
    "jdcov empty xs[0]": (lambda: dv.jdcov([EMPTY, EMPTY]), "xs\\[0\\]"),
    "mmd samples without features": (lambda: dv.mmd(np.zeros((3, 0)), np.zeros((3, 0))), "x"),
    "mmd complex samples": (lambda: dv.mmd(X.astype(np.complex64), Y), "x"),
    "mmd per-dimension sigma": (lambda: dv.mmd(X, Y, np.array([1.0, 2.0])), "sigma"),
    "mmd negative sigma": (lambda: dv.mmd(X, Y, -1.0), "sigma"),
    "cauchy_schwarz infinite sigma": (lambda: dv.cauchy_schwarz(X, Y, math.inf), "sigma"),
    "gaussian_kernel zero sigma": (lambda: dv.gaussian_kernel(X, Y, 0.0), "sigma"),
    "conditional_cs NaN sigma_y": (
        lambda: dv.conditional_cauchy_schwarz(XP, YP, YP, sigma_y=math.nan), "sigma_y"),
    "cs_mutual_information array sigma_t": (
        lambda: dv.cs_mutual_information(XP, YP, sigma_t=np.ones(6)), "sigma_t"),
    "hsic infinite sigma_x": (lambda: dv.hsic(XP, YP, sigma_x=math.inf), "sigma_x"),
    "sinkhorn weights all -1": (lambda: dv.sinkhorn(X, Y, 0.1, a=-np.ones(5)), "a"),
    "sinkhorn weights all 0": (lambda: dv.sinkhorn(X, Y, 0.1, a=np.zeros(5)), "a"),
    "sinkhorn_divergence one negative weight": (
        lambda: dv.sinkhorn_divergence(X, Y, 0.1, b=np.array([1.0, -0.5, 1.0, 1.0])), "b"),
    "mmd weights of the wrong shape": (lambda: dv.mmd(X, Y, 1.0, b=np.ones(5)), "b"),
    "cauchy_schwarz NaN weight": (
        lambda: dv.cauchy_schwarz(X, Y, 1.0, a=with_entry(np.ones(5), 2, math.nan)), "a"),
    "mmd unbiased with weights": (lambda: dv.mmd(X, Y, 1.0, unbiased=True, a=np.ones(5)), "a"),
    "sinkhorn infinite epsilon": (lambda: dv.sinkhorn(X, Y, math.inf), "epsilon"),
    "sinkhorn infinite threshold": (lambda: dv.sinkhorn(X, Y, 0.1, threshold=math.inf),
                                    "threshold"),
    "sinkhorn array epsilon": (lambda: dv.sinkhorn(X, Y, np.array([0.1, 0.2])), "epsilon"),
    "sliced_wasserstein array p": (
        lambda: dv.sliced_wasserstein(X, Y, KEY, p=np.array([1.0, 2.0])), "p"),
    "jdcov infinite c": (lambda: dv.jdcov([XP, YP], c=math.inf), "c"),
    "distance_correlation unpaired": (lambda: dv.distance_correlation(X, Y), "y"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_refused_with_the_argument_named(case):
  call, name = ERROR_CASES[case]
  with pytest.raises(ValueError, match=f"`{name}`"):
    call()


# ----------------------------------------------------------------------------
# NaN or infinite samples: NaN, never a finite number. Every function is run
# under jit; the two sample arguments are the ones corrupted.

SCALAR_FUNCTIONS = {
    "mmd": lambda x, y: dv.mmd(x, y),
    "mmd_unbiased": lambda x, y: dv.mmd(x, y, 1.0, unbiased=True),
    "cauchy_schwarz": lambda x, y: dv.cauchy_schwarz(x, y),
    "conditional_cs": lambda x, y: dv.conditional_cauchy_schwarz(x, y, y + 0.1),
    "cs_mutual_information": lambda x, y: dv.cs_mutual_information(x, y),
    "cs_mi_normalized": lambda x, y: dv.cs_mutual_information(x, y, normalized=True),
    "median_heuristic": lambda x, y: dv.median_heuristic(x, y),
    "silverman_bandwidth": lambda x, y: dv.silverman_bandwidth(x),
    "sinkhorn": lambda x, y: dv.sinkhorn(x, y, 0.5),
    "sinkhorn_divergence": lambda x, y: dv.sinkhorn_divergence(x, y, 0.5),
    "sliced_wasserstein": lambda x, y: dv.sliced_wasserstein(x, y, KEY),
    "distance_covariance": lambda x, y: dv.distance_covariance(x, y),
    "distance_correlation": lambda x, y: dv.distance_correlation(x, y),
    "jdcov": lambda x, y: dv.jdcov([x, y]),
    "ccdcov": lambda x, y: dv.ccdcov(y, x),
    "hsic": lambda x, y: dv.hsic(x, y),
}
# Compiled once per function and shared by the NaN / +inf / -inf cases.
JITTED = {name: jax.jit(fn) for name, fn in SCALAR_FUNCTIONS.items()}
# Paired inputs of the same feature dimension suit every function above.
XS, YS = XP, XP[::-1] + 0.3 * YP


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", list(SCALAR_FUNCTIONS))
def test_nan_or_infinite_sample_gives_nan(name, bad):
  fn = JITTED[name]
  assert np.isfinite(fn(XS, YS))  # the clean inputs give a number
  assert np.isnan(fn(with_entry(XS, (2, 1), bad), YS))


def test_nan_sample_gradient_is_nan_too():
  grad = jax.jit(jax.grad(lambda x: dv.mmd(x, YS, 1.0)))(with_entry(XS, (0, 0), math.nan))
  assert np.all(np.isnan(grad))


def test_unconverged_sinkhorn_gradient_is_nan():
  grad = jax.jit(jax.grad(lambda x: dv.sinkhorn(x, Y, 0.5, max_iterations=2)))(X)
  assert np.all(np.isnan(grad))


# Per-entry helpers: a corrupt sample spoils only its own row, with the limit
# for an infinite one.


def test_gram_matrices_are_per_entry_with_the_limit_for_an_infinite_sample():
  x = with_entry(X, (1, 0), math.inf)
  x = with_entry(x, (3, 1), math.nan)
  distances = np.asarray(jax.jit(dv.squared_distances)(x, Y))
  kernel = np.asarray(jax.jit(dv.gaussian_kernel)(x, Y, 1.5))
  reference = ((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
  clean = [0, 2, 4]
  np.testing.assert_allclose(distances[clean], reference[clean], rtol=1e-6)
  np.testing.assert_allclose(kernel[clean], np.exp(-reference[clean] / 4.5), rtol=1e-6)
  assert np.all(distances[1] == np.inf) and np.all(kernel[1] == 0.0)
  assert np.all(np.isnan(distances[3])) and np.all(np.isnan(kernel[3]))


# ----------------------------------------------------------------------------
# Out-of-range parameters that are traced under jit: NaN, not a silent number.

TRACED_CASES = {
    "mmd sigma -1": (lambda s: dv.mmd(X, Y, s), -1.0),
    "mmd sigma inf": (lambda s: dv.mmd(X, Y, s), math.inf),
    "cauchy_schwarz sigma 0": (lambda s: dv.cauchy_schwarz(X, Y, s), 0.0),
    "gaussian_kernel sigma nan": (lambda s: dv.gaussian_kernel(X, Y, s), math.nan),
    "conditional_cs sigma_y -1": (
        lambda s: dv.conditional_cauchy_schwarz(XP, YP, YP, sigma_y=s), -1.0),
    "cs_mutual_information sigma_x 0": (
        lambda s: dv.cs_mutual_information(XP, YP, sigma_x=s), 0.0),
    "hsic sigma_y -2": (lambda s: dv.hsic(XP, YP, sigma_y=s), -2.0),
    "sinkhorn epsilon -0.1": (lambda e: dv.sinkhorn(X, Y, e), -0.1),
    "sinkhorn_divergence epsilon inf": (lambda e: dv.sinkhorn_divergence(X, Y, e), math.inf),
    "sliced_wasserstein p 0.5": (lambda p: dv.sliced_wasserstein(X, Y, KEY, p=p), 0.5),
    "jdcov c -1": (lambda c: dv.jdcov([XP, YP], c=c), -1.0),
    "sinkhorn weights all -1": (lambda w: dv.sinkhorn(X, Y, 0.5, a=w), -np.ones(5)),
    "sinkhorn weights all 0": (lambda w: dv.sinkhorn(X, Y, 0.5, a=w), np.zeros(5)),
    "mmd one negative weight": (
        lambda w: dv.mmd(X, Y, 1.0, b=w), np.array([1.0, -0.5, 1.0, 1.0])),
    "cauchy_schwarz weights all 0": (lambda w: dv.cauchy_schwarz(X, Y, 1.0, a=w),
                                     np.zeros(5)),
}


@pytest.mark.parametrize("case", list(TRACED_CASES))
def test_traced_out_of_range_parameter_gives_nan(case):
  fn, bad = TRACED_CASES[case]
  assert np.all(np.isnan(jax.jit(fn)(jnp.asarray(bad))))


def test_traced_valid_parameters_match_eager_values():
  weights = RNG.uniform(0.5, 1.5, size=5)
  np.testing.assert_allclose(jax.jit(lambda s: dv.mmd(X, Y, s))(1.3), dv.mmd(X, Y, 1.3),
                             rtol=1e-6)
  np.testing.assert_allclose(
      jax.jit(lambda w: dv.cauchy_schwarz(X, Y, 1.0, a=w))(weights),
      dv.cauchy_schwarz(X, Y, 1.0, a=weights), rtol=1e-6)


# ----------------------------------------------------------------------------
# Edges that already behave, with independent values.


def test_zero_weights_drop_their_samples():
  # A zero weight is the same measure as the sample removed.
  a = np.array([1.0, 0.0, 2.0, 0.0, 1.0])
  kept = a > 0
  np.testing.assert_allclose(dv.mmd(X, Y, 1.0, a=a), dv.mmd(X[kept], Y, 1.0, a=a[kept]),
                             rtol=1e-6)
  sinkhorn = jax.jit(lambda x, a: dv.sinkhorn(x, Y, 0.5, a=a, threshold=1e-6))
  np.testing.assert_allclose(sinkhorn(X, a), sinkhorn(X[kept], a[kept]), rtol=1e-4)


def test_single_samples_have_closed_forms():
  x, y, sigma = X[:1], Y[:1], 0.7
  gap = float(np.sum((x - y) ** 2))
  np.testing.assert_allclose(dv.mmd(x, y, sigma), 2 - 2 * math.exp(-gap / (2 * sigma ** 2)),
                             rtol=1e-6)
  np.testing.assert_allclose(dv.cauchy_schwarz(x, y, sigma), gap / sigma ** 2, rtol=1e-5)
  np.testing.assert_allclose(dv.sliced_wasserstein(x[:, :1], y[:, :1], KEY),
                             abs(float(x[0, 0] - y[0, 0])), rtol=1e-6)
  np.testing.assert_allclose(dv.median_heuristic(x, y), math.sqrt(gap), rtol=1e-6)
