"""Dependence measures between paired samples: distance covariance family and HSIC.

Each function takes paired samples (the same n rows, any feature dimensions;
a 1-D array is n scalar samples) and returns a scalar that is 0 in population
exactly when the variables are independent. Distances are Euclidean, taken with
a square root whose gradient is 0 (not NaN) at coincident points, so every
function works under `jit`, `vmap` and `grad`.

Bad inputs: too few samples, unpaired samples and a non-scalar, non-positive
or infinite bandwidth or constant raise a ValueError naming the argument. A NaN
or infinite sample gives NaN (value and gradient), not a plausible number (a
NaN distance would otherwise pass the zero-distance guard of the square root as
a 0); so does, under `jit`, a traced bandwidth or `c` outside (0, inf).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp

from divlab.divergences import _samples
# Package-internal kernel helpers, shared with the kernel estimators.
from divlab.divergences.kernel import (  # pylint: disable=g-multiple-import
    _default_bandwidth, _gaussian_log_kernel, _pairwise_sq_dist, _safe_sqrt)

__all__ = [
    "distance_covariance",
    "distance_correlation",
    "jdcov",
    "ccdcov",
    "hsic",
]


def _distance_matrix(x: jax.Array) -> jax.Array:
  return _safe_sqrt(_pairwise_sq_dist(x, x))


def _double_centred(distances: jax.Array) -> jax.Array:
  """A_ij = a_ij - a_i. - a_.j + a_.. (row, column and grand means)."""
  return (distances - jnp.mean(distances, axis=0, keepdims=True)
          - jnp.mean(distances, axis=1, keepdims=True) + jnp.mean(distances))


def _u_centred(distances: jax.Array) -> jax.Array:
  """U-centring of Szekely & Rizzo (2014), eq. (3.1); zero diagonal; needs n >= 4.

  A~_ij = a_ij - sum_l a_il / (n-2) - sum_k a_kj / (n-2)
          + sum_kl a_kl / ((n-1)(n-2))   for i != j.
  """
  n = distances.shape[0]
  centred = (distances
             - jnp.sum(distances, axis=0, keepdims=True) / (n - 2)
             - jnp.sum(distances, axis=1, keepdims=True) / (n - 2)
             + jnp.sum(distances) / ((n - 1) * (n - 2)))
  return jnp.where(jnp.eye(n, dtype=bool), 0.0, centred)


def _centred_distances(x: jax.Array, unbiased: bool) -> jax.Array:
  distances = _distance_matrix(x)
  return _u_centred(distances) if unbiased else _double_centred(distances)


def _inner(a: jax.Array, b: jax.Array, unbiased: bool) -> jax.Array:
  """<A, B>: mean of A*B (V) or sum of A~*B~ / (n(n-3)) (U, diagonal is 0)."""
  n = a.shape[0]
  if unbiased:
    return jnp.sum(a * b) / (n * (n - 3))
  return jnp.mean(a * b)


def _paired(x, y, unbiased: bool, name_x: str = "x", name_y: str = "y"):
  x = _samples.float_samples(x, name_x)
  y = _samples.float_samples(y, name_y)
  _samples.check_same_count(x, y, name_x, name_y)
  _samples.check_min_count(x, 4 if unbiased else 2, name_x)
  return x, y


def distance_covariance(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, *,
                        unbiased: bool = False) -> jax.Array:
  """Squared distance covariance dCov^2(x, y) of paired samples.

  V-statistic (default; Szekely, Rizzo, Bakirov 2007): with the double-centred
  distance matrices `A_ij = a_ij - a_i. - a_.j + a_..` (a_ij = ||x_i - x_j||,
  dots are means) and B likewise for y, `dCov^2_n = mean_ij A_ij B_ij >= 0`.
  Unbiased (`unbiased=True`; Szekely & Rizzo 2014): with U-centred matrices
  `A~_ij = a_ij - a_i+/(n-2) - a_+j/(n-2) + a_++/((n-1)(n-2))` (+ are sums,
  A~_ii = 0), `dCov^2_u = sum_{i!=j} A~_ij B~_ij / (n(n-3))`, which can be
  negative and needs n >= 4.

  References:
    Szekely, Rizzo, Bakirov, "Measuring and testing dependence by correlation
    of distances", Ann. Statist. 2007; Szekely & Rizzo, "Partial distance
    correlation with methods for dissimilarities", Ann. Statist. 2014.

  Args:
    x: samples `[n, p]` (or `[n]`).
    y: samples `[n, q]` (or `[n]`), paired with x.
    unbiased: return the U-statistic instead of the V-statistic.

  Returns:
    Scalar squared distance covariance; NaN for a NaN or infinite sample.

  Example:
    >>> x = jnp.array([0., 1., 2.])
    >>> round(float(distance_covariance(x, 2 * x)), 4)  # 2 dVar^2(x)
    0.9877
  """
  x, y = _paired(x, y, unbiased)
  covariance = _inner(_centred_distances(x, unbiased),
                      _centred_distances(y, unbiased), unbiased)
  return _samples.nan_unless(covariance, _samples.all_finite(x, y))


def distance_correlation(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, *,
                         unbiased: bool = False) -> jax.Array:
  """Squared distance correlation R^2(x, y) = dCov^2(x, y) / sqrt(dVar^2(x) dVar^2(y)).

  With `unbiased=False` all three terms are V-statistics and R^2 lies in
  [0, 1], equal to 1 when y is an affine similarity of x (Szekely et al.
  2007). With `unbiased=True` they are U-statistics: the bias-corrected R*^2 of
  Szekely & Rizzo (2013/2014), which can be slightly negative. Defined as 0 when
  either variable is constant (zero distance variance). The value is the
  square, like `distance_covariance`; take a square root for dCor itself.

  References:
    Szekely, Rizzo, Bakirov 2007; Szekely & Rizzo, "The distance correlation
    t-test of independence in high dimension", J. Multivariate Anal. 2013.

  Args:
    x: samples `[n, p]` (or `[n]`).
    y: samples `[n, q]` (or `[n]`), paired with x.
    unbiased: use U-statistics (n >= 4) instead of V-statistics.

  Returns:
    Scalar squared distance correlation; NaN for a NaN or infinite sample.

  Example:
    >>> x = jnp.array([0., 1., 3.])
    >>> round(float(distance_correlation(x, 1.0 - 3.0 * x)), 5)
    1.0
  """
  x, y = _paired(x, y, unbiased)
  a = _centred_distances(x, unbiased)
  b = _centred_distances(y, unbiased)
  variance_product = _inner(a, a, unbiased) * _inner(b, b, unbiased)
  positive = variance_product > 0
  denominator = jnp.sqrt(jnp.where(positive, variance_product, 1.0))
  correlation = jnp.where(positive, _inner(a, b, unbiased) / denominator, 0.0)
  return _samples.nan_unless(correlation, _samples.all_finite(x, y))


def jdcov(xs: Sequence[jax.typing.ArrayLike], *, unbiased: bool = True,
          c: float = 1.0) -> jax.Array:
  """Squared joint distance covariance JdCov^2 of several paired variables.

  JdCov^2(X_1..X_d; c) = E[prod_m (U_m(X_m, X_m') + c)] - c^d, with
  `U_m(x, x') = E|x - X'| + E|X - x'| - |x - x'| - E|X - X'|` (note the sign: U is
  minus the centred distance), is 0 iff the d variables are jointly
  independent; for d = 2 it equals dCov^2. Estimators (Chakraborty & Zhang 2019):

    U-statistic (default):  sum_{i,j} prod_m (U~^m_ij + c) / (n(n-3)) - c^d n/(n-3),
    V-statistic:            mean_{i,j} prod_m (U^^m_ij + c) - c^d,

  with U~^m = -(U-centred distance matrix of X_m), whose diagonal is 0, and
  U^^m = -(double-centred distance matrix). The U-statistic sum runs over all
  (i, j), diagonal included (each diagonal term is c^d); written over i != j it
  is `sum_{i!=j} prod_m (U~^m_ij + c) / (n(n-3)) - c^d (n-1)/(n-3)`, and it is
  evaluated as `sum_{i!=j} [prod_m (U~^m_ij + c) - c^d] / (n(n-3))`, which is
  the same number without the float32 cancellation. Source: the
  authors' R package `jdcov` and the distance-covariance fairness code, which
  agree on this form and on the sign of U~. The U-statistic is unbiased but can
  be negative and needs n >= 4.

  References:
    Chakraborty & Zhang, "Distance metrics for measuring joint dependence with
    application to causal inference", JASA 2019.

  Args:
    xs: a sequence of d >= 2 sample arrays, each `[n, p_m]` (or `[n]`), paired.
    unbiased: U-statistic (default, as in the fairness code) or V-statistic.
    c: the positive, finite constant c weighting lower-order dependence
      (default 1).

  Returns:
    Scalar squared joint distance covariance; NaN for a NaN or infinite
    sample, and for a traced `c` outside (0, inf) under `jit`.

  Example:
    >>> x = jnp.array([0., 1., 2.])
    >>> round(float(jdcov([x, 2 * x], unbiased=False)), 4)  # = dCov^2 for d = 2
    0.9877
  """
  if not isinstance(xs, (list, tuple)) or len(xs) < 2:
    raise ValueError(
        "`xs` must be a list or tuple of at least two sample arrays (an array "
        "is refused rather than split along an axis).")
  _samples.check_positive_finite(c, "c")
  samples = [_samples.float_samples(x, f"xs[{m}]") for m, x in enumerate(xs)]
  for m, x in enumerate(samples[1:], start=1):
    _samples.check_same_count(samples[0], x, "xs[0]", f"xs[{m}]")
  _samples.check_min_count(samples[0], 4 if unbiased else 2, "xs[0]")
  ok = _samples.all_finite(*samples) & _samples.positive_finite(c)
  n = samples[0].shape[0]
  # excess = prod_m (U_m + c) - c^k, accumulated over k without ever forming
  # the product: excess_k = excess_{k-1} (U_k + c) + c^(k-1) U_k. Subtracting
  # c^d from the summed product instead loses digits in float32. The excess is
  # 0 on the diagonal, which is why the U-statistic's n/(n-3) offset cancels.
  excess = 0.0
  for k, x in enumerate(samples):
    u = -_centred_distances(x, unbiased)
    excess = excess * (u + c) + c ** k * u
  covariance = jnp.sum(excess) / (n * (n - 3)) if unbiased else jnp.mean(excess)
  return _samples.nan_unless(covariance, ok)


def ccdcov(yhat: jax.typing.ArrayLike,
           sensitive: Union[jax.typing.ArrayLike, Sequence[jax.typing.ArrayLike]], *,
           unbiased: bool = True) -> jax.Array:
  """Squared distance covariance between predictions and concatenated sensitive attributes.

  `CCdCov^2 = dCov^2(yhat, concat(S_1, ..., S_k))`: the sensitive attributes
  are joined along features into one vector, so the penalty targets
  dependence of yhat on all of them jointly (not one at a time). Unbiased
  U-statistic by default, as in the distance-covariance fairness code.
  Source: "Machine Learning with Multitype Protected Attributes: Intersectional
  Fairness through Regularisation", which proposes CCdCov.

  Args:
    yhat: predictions `[n, q]` (or `[n]`).
    sensitive: one array `[n, k]` (or `[n]`) or a sequence of such arrays,
      concatenated along features.
    unbiased: U-statistic (default, n >= 4) or V-statistic.

  Returns:
    Scalar squared distance covariance; NaN for a NaN or infinite sample.

  Example:
    >>> yhat = jnp.array([0., 1., 2., 4.]); s = jnp.array([1., 1., 1., 1.])
    >>> float(ccdcov(yhat, [s, 2 * s]))  # constant attributes: no dependence
    0.0
  """
  if isinstance(sensitive, (list, tuple)):
    if not sensitive:
      raise ValueError("`sensitive` must hold at least one array.")
    parts = [_samples.float_samples(s, f"sensitive[{k}]")
             for k, s in enumerate(sensitive)]
    for k, part in enumerate(parts[1:], start=1):
      _samples.check_same_count(parts[0], part, "sensitive[0]", f"sensitive[{k}]")
    dtype = jnp.result_type(*parts)
    sensitive = jnp.concatenate([part.astype(dtype) for part in parts], axis=1)
  yhat, sensitive = _paired(yhat, sensitive, unbiased, "yhat", "sensitive")
  covariance = _inner(_centred_distances(yhat, unbiased),
                      _centred_distances(sensitive, unbiased), unbiased)
  return _samples.nan_unless(covariance, _samples.all_finite(yhat, sensitive))


def hsic(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, *,
         sigma_x: Optional[jax.typing.ArrayLike] = None,
         sigma_y: Optional[jax.typing.ArrayLike] = None) -> jax.Array:
  """Biased HSIC estimate with Gaussian kernels.

  `HSIC_b = tr(K H L H) / (n-1)^2`, with `K_ij = exp(-||x_i - x_j||^2 / (2
  sigma_x^2))`, L likewise on y, and the centring matrix `H = I - 11'/n`
  (Gretton et al. 2005, eq. 4). It is >= 0.

  References:
    Gretton, Bousquet, Smola, Scholkopf, "Measuring statistical dependence with
    Hilbert-Schmidt norms", ALT 2005.

  Args:
    x: samples `[n, p]` (or `[n]`).
    y: samples `[n, q]` (or `[n]`), paired with x.
    sigma_x: positive, finite scalar bandwidth on x; default None uses the
      median heuristic of x (`median_heuristic(x)`, gradient stopped; the mean
      pairwise distance if that median is 0, 1 for a constant sample), Gretton
      et al.'s choice.
    sigma_y: positive, finite scalar bandwidth on y; default None: the same
      rule on y.

  Returns:
    Scalar HSIC; NaN for a NaN or infinite sample, and for a traced bandwidth
    outside (0, inf) under `jit`.

  Example:
    >>> x = jnp.array([0., 1., 2.])
    >>> float(hsic(x, jnp.ones(3), sigma_x=1.0, sigma_y=1.0))
    0.0
  """
  x, y = _paired(x, y, unbiased=False)
  _samples.check_bandwidth(sigma_x, "sigma_x")
  _samples.check_bandwidth(sigma_y, "sigma_y")
  ok = _samples.all_finite(x, y)
  if sigma_x is None:
    sigma_x = _default_bandwidth(x)
  else:
    ok = ok & _samples.positive_finite(sigma_x)
  if sigma_y is None:
    sigma_y = _default_bandwidth(y)
  else:
    ok = ok & _samples.positive_finite(sigma_y)
  k = jnp.exp(_gaussian_log_kernel(x, x, sigma_x))
  l = jnp.exp(_gaussian_log_kernel(y, y, sigma_y))
  n = x.shape[0]
  # tr(K H L H) = tr(HKH HLH) = sum_ij (HKH)_ij (HLH)_ij, HKH being K
  # double-centred; centring both makes a constant variable give exactly 0.
  value = jnp.sum(_double_centred(k) * _double_centred(l)) / (n - 1) ** 2
  return _samples.nan_unless(value, ok)
