"""Kernel divergences between sample sets: Cauchy-Schwarz, conditional CS, CS-QMI, MMD.

All estimators use the unnormalised Gaussian kernel
`k(a, b) = exp(-||a - b||^2 / (2 sigma^2))`. The Cauchy-Schwarz quantities are
ratios of kernel sums, so any normalising constant of the kernel cancels; they
are evaluated in log space (logsumexp of `-||a - b||^2 / (2 sigma^2)`), which
keeps them finite when the bandwidth is small and most kernel values underflow.

Samples are `[n, d]` arrays; a 1-D array is read as n scalar samples. Every
function returns a scalar, works under `jit`, `vmap` and `grad`, and computes in
at least float32.

Bad inputs: an empty sample set, a non-scalar, non-positive or infinite
bandwidth, and weights that are negative, non-finite, all zero or of the wrong
shape raise a ValueError naming the argument. What only the data can reveal
gives NaN (value and gradient) instead of a plausible number: a NaN or infinite
sample (an infinite sample has no well-defined limit here, since two of them
are at distance inf - inf), and, under `jit`, a traced bandwidth or weight
vector outside its domain. The Gram-matrix helpers (`squared_distances`,
`gaussian_kernel`) are per-entry instead: see their docstrings.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from divlab.divergences import _samples

__all__ = [
    "squared_distances",
    "gaussian_kernel",
    "median_heuristic",
    "silverman_bandwidth",
    "cauchy_schwarz",
    "conditional_cauchy_schwarz",
    "cs_mutual_information",
    "mmd",
]


def _safe_sqrt(value: jax.Array) -> jax.Array:
  """sqrt that is 0 with a zero (not NaN) gradient where `value` <= 0."""
  positive = value > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, value, 1.0)), 0.0)


def _pairwise_sq_dist(x: jax.Array, y: jax.Array) -> jax.Array:
  # The difference form (rather than |a|^2 + |b|^2 - 2<a, b>) is exact for
  # coincident points, never negative, and XLA fuses it into one reduction.
  return jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)


def squared_distances(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike) -> jax.Array:
  """Matrix of squared Euclidean distances between two sample sets.

  `D_ij = ||x_i - y_j||^2`, computed from differences so that it is exactly 0
  for coincident points and never negative. Per entry: an entry that involves
  a NaN sample is NaN, one between an infinite and a finite sample is inf (the
  limit), and one between two infinite samples follows IEEE arithmetic.

  Args:
    x: samples `[n, d]` (or `[n]` for scalar samples), n >= 1.
    y: samples `[m, d]` (or `[m]`), m >= 1.

  Returns:
    `[n, m]` array of squared distances.

  Example:
    >>> squared_distances(jnp.array([0., 1.]), jnp.array([3.]))
    Array([[9.],
           [4.]], dtype=float32)
  """
  x = _samples.float_samples(x, "x")
  y = _samples.float_samples(y, "y")
  _samples.check_same_dim(x, y, "x", "y")
  return _pairwise_sq_dist(x, y)


def _gaussian_log_kernel(x: jax.Array, y: jax.Array, sigma) -> jax.Array:
  return -_pairwise_sq_dist(x, y) / (2.0 * jnp.square(sigma))


def gaussian_kernel(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike,
                    sigma: jax.typing.ArrayLike) -> jax.Array:
  """Gaussian (RBF) Gram matrix between two sample sets, without normalisation.

  `K_ij = exp(-||x_i - y_j||^2 / (2 sigma^2))`.

  Per entry, like `squared_distances`: an entry that involves a NaN sample is
  NaN, and one between an infinite and a finite sample is 0 (the limit). A
  traced `sigma` outside (0, inf) under `jit` makes the whole matrix NaN.

  Args:
    x: samples `[n, d]` (or `[n]`), n >= 1.
    y: samples `[m, d]` (or `[m]`), m >= 1.
    sigma: positive, finite scalar bandwidth (array-valued bandwidths are
      refused: scale the features instead).

  Returns:
    `[n, m]` kernel matrix with entries in [0, 1].

  Example:
    >>> gaussian_kernel(jnp.array([0.]), jnp.array([0., 2.]), 1.0)
    Array([[1.        , 0.13533528]], dtype=float32)
  """
  _samples.check_bandwidth(sigma, "sigma")
  x = _samples.float_samples(x, "x")
  y = _samples.float_samples(y, "y")
  _samples.check_same_dim(x, y, "x", "y")
  return _samples.nan_unless(jnp.exp(_gaussian_log_kernel(x, y, sigma)),
                             _samples.positive_finite(sigma))


def median_heuristic(x: jax.typing.ArrayLike,
                     y: Optional[jax.typing.ArrayLike] = None) -> jax.Array:
  """Median pairwise Euclidean distance of the pooled sample, a kernel bandwidth.

  Variant: the median of `||z_i - z_j||` (distances, not squared distances) over
  the distinct pairs `i < j` of the pooled sample `z = concat(x, y)`; no factor
  of 1/2 or sqrt(2) is applied, so `sigma = median_heuristic(x, y)` plugs
  directly into `exp(-||a - b||^2 / (2 sigma^2))`. With an even number of pairs
  the two middle distances are averaged (numpy's convention).

  The result is differentiable; wrap it in `jax.lax.stop_gradient` when it is
  used as a bandwidth that should not receive gradients (the functions of this
  module that default to it do so). It is 0 when more than half of the pairs
  coincide; those defaults then fall back to the mean pairwise distance.

  References:
    Gretton et al., "A kernel two-sample test", JMLR 2012 (Sec. 8).

  Args:
    x: samples `[n, d]` (or `[n]`).
    y: optional second sample `[m, d]` (or `[m]`), pooled with `x`.

  Returns:
    Scalar median distance; NaN if any sample is NaN or infinite. The pooled
    sample needs at least 2 points.

  Example:
    >>> median_heuristic(jnp.array([0., 1., 3.]))  # distances 1, 3, 2
    Array(2., dtype=float32)
  """
  samples = [_samples.float_samples(x, "x")]
  if y is not None:
    samples.append(_samples.float_samples(y, "y"))
    _samples.check_same_dim(samples[0], samples[1], "x", "y")
  return _samples.nan_unless(jnp.median(_pooled_pair_distances(*samples)),
                             _samples.all_finite(*samples))


def silverman_bandwidth(x: jax.typing.ArrayLike) -> jax.Array:
  """Silverman's rule-of-thumb bandwidth for an isotropic Gaussian kernel.

  `h = (4 / (d + 2))^(1 / (d + 4)) * n^(-1 / (d + 4)) * s`, with `s` the square
  root of the mean over dimensions of the unbiased per-dimension variances.
  In 1-D this is `1.06 s n^(-1/5)`; the factor equals scipy's
  `gaussian_kde(..., bw_method="silverman").factor`. Silverman's robust
  variant with `min(s, IQR / 1.34)` is not used.

  References:
    Silverman, "Density Estimation for Statistics and Data Analysis", 1986,
    eq. (3.28) and (4.14).

  Args:
    x: samples `[n, d]` (or `[n]`), n >= 2.

  Returns:
    Scalar bandwidth; NaN if any sample is NaN or infinite.

  Example:
    >>> silverman_bandwidth(jnp.array([-1., 0., 1.]))  # (4/3)^0.2 3^-0.2 * 1
    Array(0.850283, dtype=float32)
  """
  x = _samples.float_samples(x, "x")
  _samples.check_min_count(x, 2, "x")
  n, d = x.shape
  scale = jnp.sqrt(jnp.mean(jnp.var(x, axis=0, ddof=1)))
  factor = (4.0 / (d + 2.0)) ** (1.0 / (d + 4.0)) * n ** (-1.0 / (d + 4.0))
  return _samples.nan_unless(factor * scale, _samples.all_finite(x))


def _pooled_pair_distances(*samples: jax.Array) -> jax.Array:
  """Euclidean distances over the distinct pairs i < j of the pooled samples."""
  dtype = jnp.result_type(*samples)
  z = jnp.concatenate([s.astype(dtype) for s in samples], axis=0)
  _samples.check_min_count(z, 2, "x")
  rows, cols = np.triu_indices(z.shape[0], k=1)
  return _safe_sqrt(_pairwise_sq_dist(z, z)[rows, cols])


def _default_bandwidth(*samples: jax.Array) -> jax.Array:
  """Median heuristic with fallbacks, gradient stopped: the `sigma=None` default.

  When more than half of the pairs coincide (e.g. a binary attribute) the
  median is 0, so the mean pairwise distance is used; for a constant sample
  every bandwidth gives the same kernel and 1 is used.
  """
  distances = _pooled_pair_distances(*samples)
  median, mean = jnp.median(distances), jnp.mean(distances)
  bandwidth = jnp.where(median > 0, median, jnp.where(mean > 0, mean, 1.0))
  return jax.lax.stop_gradient(bandwidth)


def _bandwidth_or_default(sigma, name: str, *samples: jax.Array):
  """(bandwidth, traced validity flag): `sigma`, or the median default when None."""
  if sigma is None:
    return _default_bandwidth(*samples), jnp.asarray(True)
  _samples.check_bandwidth(sigma, name)
  return sigma, _samples.positive_finite(sigma)


def _log_weighted_sum(log_k: jax.Array, wx: jax.Array, wy: jax.Array) -> jax.Array:
  """log sum_ij wx_i wy_j exp(log_k_ij), stable for very negative log_k."""
  return jax.nn.logsumexp(log_k, b=wx[:, None] * wy[None, :])


def cauchy_schwarz(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike,
                   sigma: Optional[jax.typing.ArrayLike] = None, *,
                   a: Optional[jax.typing.ArrayLike] = None,
                   b: Optional[jax.typing.ArrayLike] = None) -> jax.Array:
  """Cauchy-Schwarz divergence between two sample sets (Gaussian kernel).

  `D_CS = log mean(K_xx) + log mean(K_yy) - 2 log mean(K_xy)`, with all three
  Gram matrices built from the same kernel `exp(-||.||^2 / (2 sigma^2))` and all
  pairs (including i = j) in the means. With weights the means become
  `sum_ij a_i a_j K_xx_ij` etc. It is >= 0 (Cauchy-Schwarz inequality for the
  kernel mean embeddings; float round-off below 0 is clipped), 0 for identical
  samples, symmetric, and invariant to the kernel's normalising constant.

  References:
    Principe, Xu, Fisher, "Information-theoretic learning", 2000;
    Yu et al., "Cauchy-Schwarz Divergence Information Bottleneck for
    Regression", ICLR 2024.

  Args:
    x: samples `[n, d]` (or `[n]`).
    y: samples `[m, d]` (or `[m]`).
    sigma: positive, finite scalar kernel bandwidth; default None uses the
      median heuristic of the pooled sample (`median_heuristic(x, y)`,
      gradient stopped; the mean pairwise distance if that median is 0, and 1
      for a constant sample).
    a: optional non-negative weights `[n]` of the x samples (normalised to sum
      to one; a positive sum is required); default uniform.
    b: optional non-negative weights `[m]` of the y samples; default uniform.

  Returns:
    Scalar divergence (natural log); NaN for a NaN or infinite sample, and for
    a traced `sigma` or weight vector outside its domain under `jit`.

  Example:
    >>> x = jnp.array([[0.], [1.]])
    >>> float(cauchy_schwarz(x, x, 1.0))
    0.0
  """
  x = _samples.float_samples(x, "x")
  y = _samples.float_samples(y, "y")
  _samples.check_same_dim(x, y, "x", "y")
  sigma, sigma_ok = _bandwidth_or_default(sigma, "sigma", x, y)
  dtype = jnp.promote_types(x.dtype, y.dtype)
  wx, wx_ok = _samples.normalised_weights(a, x.shape[0], dtype, "a")
  wy, wy_ok = _samples.normalised_weights(b, y.shape[0], dtype, "b")
  log_xx = _log_weighted_sum(_gaussian_log_kernel(x, x, sigma), wx, wx)
  log_yy = _log_weighted_sum(_gaussian_log_kernel(y, y, sigma), wy, wy)
  log_xy = _log_weighted_sum(_gaussian_log_kernel(x, y, sigma), wx, wy)
  # >= 0 in exact arithmetic; clip the round-off of nearly identical samples.
  divergence = jnp.maximum(log_xx + log_yy - 2.0 * log_xy, 0.0)
  ok = _samples.all_finite(x, y) & sigma_ok & wx_ok & wy_ok
  return _samples.nan_unless(divergence, ok)


def conditional_cauchy_schwarz(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike,
                               yhat: jax.typing.ArrayLike, *,
                               sigma_x: jax.typing.ArrayLike = 1.0,
                               sigma_y: jax.typing.ArrayLike = 1.0,
                               denominator: str = "squared_sum") -> jax.Array:
  """Conditional CS divergence D_CS(p(y|x) || q(yhat|x)) from paired samples.

  The prediction term of the CS information bottleneck (Yu et al., ICLR 2024,
  Proposition 1). With K the Gram matrix of x, L1 of y, L2 of yhat and the
  cross matrix `L21_ji = k(yhat_j, y_i)`:

    D = log sum_j [sum_i K_ji L1_ji / d_j] + log sum_j [sum_i K_ji L2_ji / d_j]
        - 2 log sum_j [sum_i K_ji L21_ji / d_j],   d_j = (sum_i K_ji)^2.

  Source followed: the paper's Proposition 1 for `d_j = (sum_i K_ji)^2` (the
  squared kernel-density estimate of p(x_j), as the derivation requires); the
  authors' released code divides by `sum_i K_ji^2` instead, available as
  `denominator="sum_of_squares"` for ablations. The orientation of L21
  (row j is yhat_j, column i is y_i) follows both
  the paper and the released code. The released code reports bits (log2); this
  function uses the natural log. L1, L2 and L21 share one bandwidth `sigma_y`.
  Every term is a ratio of kernel sums, so D is invariant to constant factors
  on either kernel; it is exactly 0 when `yhat == y`.

  References:
    Yu, Yu, Lokse, Jenssen, Principe, "Cauchy-Schwarz Divergence Information
    Bottleneck for Regression", ICLR 2024.

  Args:
    x: conditioning samples `[n, d_x]` (or `[n]`).
    y: targets `[n, d_y]` (or `[n]`), paired with x.
    yhat: predictions `[n, d_y]` (or `[n]`), paired with x.
    sigma_x: positive, finite scalar bandwidth of the kernel on x; default 1.0
      (the paper's training script, on standardised inputs).
    sigma_y: positive, finite scalar bandwidth of the kernel on y and yhat;
      default 1.0.
    denominator: `"squared_sum"` for `d_j = (sum_i K_ji)^2` (the paper) or
      `"sum_of_squares"` for `d_j = sum_i K_ji^2` (the released code).

  Returns:
    Scalar divergence (natural log); NaN for a NaN or infinite sample, and for
    a traced bandwidth outside (0, inf) under `jit`.

  Example:
    >>> x = jnp.array([0., 1., 2.]); y = jnp.array([0., 1., 1.])
    >>> float(conditional_cauchy_schwarz(x, y, y))
    0.0
  """
  _samples.check_bandwidth(sigma_x, "sigma_x")
  _samples.check_bandwidth(sigma_y, "sigma_y")
  if denominator not in ("squared_sum", "sum_of_squares"):
    raise ValueError("`denominator` must be 'squared_sum' or 'sum_of_squares', "
                     f"got {denominator!r}.")
  x = _samples.float_samples(x, "x")
  y = _samples.float_samples(y, "y")
  yhat = _samples.float_samples(yhat, "yhat")
  _samples.check_same_count(x, y, "x", "y")
  _samples.check_same_count(x, yhat, "x", "yhat")
  _samples.check_same_dim(y, yhat, "y", "yhat")
  # Rows are j (the point whose conditional is evaluated), columns i.
  log_k = _gaussian_log_kernel(x, x, sigma_x)
  log_l1 = _gaussian_log_kernel(y, y, sigma_y)
  log_l2 = _gaussian_log_kernel(yhat, yhat, sigma_y)
  log_l21 = _gaussian_log_kernel(yhat, y, sigma_y)
  if denominator == "squared_sum":
    log_d = 2.0 * jax.nn.logsumexp(log_k, axis=1)
  else:
    log_d = jax.nn.logsumexp(2.0 * log_k, axis=1)

  def log_term(log_l):
    return jax.nn.logsumexp(jax.nn.logsumexp(log_k + log_l, axis=1) - log_d)

  divergence = log_term(log_l1) + log_term(log_l2) - 2.0 * log_term(log_l21)
  ok = (_samples.all_finite(x, y, yhat) & _samples.positive_finite(sigma_x)
        & _samples.positive_finite(sigma_y))
  return _samples.nan_unless(divergence, ok)


def _cs_qmi(log_k: jax.Array, log_q: jax.Array) -> jax.Array:
  n = log_k.shape[0]
  log_n = jnp.log(jnp.asarray(n, log_k.dtype))
  log_trace = jax.nn.logsumexp(log_k + log_q) - 2.0 * log_n  # tr(KQ) = sum K*Q
  log_marginals = (jax.nn.logsumexp(log_k) + jax.nn.logsumexp(log_q)
                   - 4.0 * log_n)
  # 1'KQ1 = sum_j (sum_i K_ij)(sum_l Q_jl), both kernels symmetric.
  log_cross = jax.nn.logsumexp(
      jax.nn.logsumexp(log_k, axis=0) + jax.nn.logsumexp(log_q, axis=1)
  ) - 3.0 * log_n
  return log_trace + log_marginals - 2.0 * log_cross


def cs_mutual_information(x: jax.typing.ArrayLike, t: jax.typing.ArrayLike, *,
                          sigma_x: jax.typing.ArrayLike = 1.0,
                          sigma_t: jax.typing.ArrayLike = 1.0,
                          normalized: bool = False) -> jax.Array:
  """Cauchy-Schwarz quadratic mutual information between paired samples.

  `I_CS(x; t) = D_CS(p(x, t) || p(x) p(t))`, estimated with K the Gram matrix
  of x and Q that of t (Yu et al., ICLR 2024, Proposition 2):

    I_CS = log(tr(KQ) / N^2) + log(1'K1 1'Q1 / N^4) - 2 log(1'KQ1 / N^3).

  `normalized=True` returns `I(x; t) / sqrt(I(x; x) I(t; t))`, the form the
  CS-IB compression term is trained with (I(x; x) uses sigma_x on both sides,
  I(t; t) uses sigma_t); it is 1 for t = x and is defined as 0 when a variable
  is constant (zero self-information). Natural log (the released code uses
  log2, which the normalised form does not depend on).

  References:
    Yu et al., "Cauchy-Schwarz Divergence Information Bottleneck for
    Regression", ICLR 2024 (Prop. 2); Principe, "Information Theoretic
    Learning", 2010 (CS-QMI).

  Args:
    x: samples `[n, d_x]` (or `[n]`).
    t: samples `[n, d_t]` (or `[n]`), paired with x.
    sigma_x: positive, finite scalar bandwidth on x; default 1.0 (the paper's
      script).
    sigma_t: positive, finite scalar bandwidth on t; default 1.0.
    normalized: return the normalised form described above.

  Returns:
    Scalar mutual information (>= 0 up to round-off); NaN for a NaN or
    infinite sample, and for a traced bandwidth outside (0, inf) under `jit`.

  Example:
    >>> x = jnp.array([0., 1., 3.])
    >>> float(cs_mutual_information(x, x, normalized=True))
    1.0
  """
  _samples.check_bandwidth(sigma_x, "sigma_x")
  _samples.check_bandwidth(sigma_t, "sigma_t")
  x = _samples.float_samples(x, "x")
  t = _samples.float_samples(t, "t")
  _samples.check_same_count(x, t, "x", "t")
  ok = (_samples.all_finite(x, t) & _samples.positive_finite(sigma_x)
        & _samples.positive_finite(sigma_t))
  log_k = _gaussian_log_kernel(x, x, sigma_x)
  log_q = _gaussian_log_kernel(t, t, sigma_t)
  mutual = _cs_qmi(log_k, log_q)
  if not normalized:
    return _samples.nan_unless(mutual, ok)
  # Self-informations are >= 0 in exact arithmetic; clip round-off before sqrt.
  self_x = jnp.maximum(_cs_qmi(log_k, log_k), 0.0)
  self_t = jnp.maximum(_cs_qmi(log_q, log_q), 0.0)
  denominator = _safe_sqrt(self_x * self_t)
  safe_denominator = jnp.where(denominator > 0, denominator, 1.0)
  normalised = jnp.where(denominator > 0, mutual / safe_denominator, 0.0)
  return _samples.nan_unless(normalised, ok)


def mmd(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike,
        sigma: Optional[jax.typing.ArrayLike] = None, *,
        unbiased: bool = False,
        a: Optional[jax.typing.ArrayLike] = None,
        b: Optional[jax.typing.ArrayLike] = None) -> jax.Array:
  """Squared maximum mean discrepancy with a Gaussian kernel.

  Biased V-statistic (default):
    `MMD^2_b = mean(K_xx) + mean(K_yy) - 2 mean(K_xy)` (all pairs, >= 0;
    float round-off below 0 is clipped),
  with weights `sum_ij a_i a_j K_xx_ij + ... - 2 sum_ij a_i b_j K_xy_ij`.
  Unbiased U-statistic (`unbiased=True`, uniform weights only):
    `MMD^2_u = sum_{i!=j} K_xx_ij / (n(n-1)) + sum_{i!=j} K_yy_ij / (m(m-1))
    - 2 mean(K_xy)` (may be negative).

  References:
    Gretton et al., "A kernel two-sample test", JMLR 2012 (eqs. 3 and 5).

  Args:
    x: samples `[n, d]` (or `[n]`).
    y: samples `[m, d]` (or `[m]`).
    sigma: positive, finite scalar bandwidth; default None uses the median
      heuristic of the pooled sample, with the same fallbacks as in
      `cauchy_schwarz`.
    unbiased: return the U-statistic (needs n, m >= 2 and no weights).
    a: optional non-negative weights `[n]` with a positive sum (normalised);
      biased form only.
    b: optional non-negative weights `[m]` (normalised); biased form only.

  Returns:
    Scalar squared MMD; NaN for a NaN or infinite sample, and for a traced
    `sigma` or weight vector outside its domain under `jit`.

  Example:
    >>> x = jnp.array([0., 1.]); y = jnp.array([0., 1.])
    >>> float(mmd(x, y, 1.0))
    0.0
  """
  x = _samples.float_samples(x, "x")
  y = _samples.float_samples(y, "y")
  _samples.check_same_dim(x, y, "x", "y")
  sigma, sigma_ok = _bandwidth_or_default(sigma, "sigma", x, y)
  ok = _samples.all_finite(x, y) & sigma_ok
  k_xx = jnp.exp(_gaussian_log_kernel(x, x, sigma))
  k_yy = jnp.exp(_gaussian_log_kernel(y, y, sigma))
  k_xy = jnp.exp(_gaussian_log_kernel(x, y, sigma))
  if unbiased:
    if a is not None or b is not None:
      raise ValueError("`a` and `b` (weights) are only supported with unbiased=False.")
    _samples.check_min_count(x, 2, "x")
    _samples.check_min_count(y, 2, "y")
    n, m = x.shape[0], y.shape[0]
    within_x = (jnp.sum(k_xx) - jnp.trace(k_xx)) / (n * (n - 1))
    within_y = (jnp.sum(k_yy) - jnp.trace(k_yy)) / (m * (m - 1))
    return _samples.nan_unless(within_x + within_y - 2.0 * jnp.mean(k_xy), ok)
  dtype = jnp.promote_types(x.dtype, y.dtype)
  wx, wx_ok = _samples.normalised_weights(a, x.shape[0], dtype, "a")
  wy, wy_ok = _samples.normalised_weights(b, y.shape[0], dtype, "b")
  # The V-statistic is >= 0 in exact arithmetic; clip round-off below 0.
  squared = jnp.maximum(wx @ k_xx @ wx + wy @ k_yy @ wy - 2.0 * wx @ k_xy @ wy, 0.0)
  return _samples.nan_unless(squared, ok & wx_ok & wy_ok)
