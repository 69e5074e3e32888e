"""Argument handling shared by the sample-based divergences (kernel, transport, dependence).

Two kinds of check live here, and every sample-based function uses both:

* **Eager checks** on static information (shapes, dtypes, Python numbers and
  concrete arrays) raise a ValueError naming the argument: empty sample sets,
  non-scalar or non-finite bandwidths, negative or all-zero weights.
* **Traced guards** for what only the data can tell: a NaN or infinite sample,
  or a parameter that is traced under `jit` and turns out to be out of range.
  They produce a boolean flag, and `nan_unless` turns the final scalar into NaN
  (value and gradient) when the flag is False. The flag is one reduction over
  the inputs, against the O(n^2) work of the estimators, so it costs nothing
  measurable, and a bad input can never come back as a plausible number.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from divlab import _checks


def float_samples(x: jax.typing.ArrayLike, name: str) -> jax.Array:
  """Samples as `[n, d]` in a real floating dtype of at least float32 precision.

  A 1-D array is n scalar samples. An empty sample set (n = 0), samples without
  features (d = 0) and complex samples are refused, naming the argument.
  """
  x = _checks.as_samples(x, name)
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    raise ValueError(f"`{name}` must be real, got dtype {x.dtype}.")
  if x.shape[0] == 0:
    raise ValueError(f"`{name}` must hold at least one sample, got shape {x.shape}.")
  if x.shape[1] == 0:
    raise ValueError(f"`{name}` must have at least one feature, got shape {x.shape}.")
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def check_same_dim(x: jax.Array, y: jax.Array, name_x: str, name_y: str) -> None:
  if x.shape[1] != y.shape[1]:
    raise ValueError(
        f"`{name_x}` and `{name_y}` must have the same feature dimension, got "
        f"{x.shape[1]} and {y.shape[1]}.")


def check_same_count(x: jax.Array, y: jax.Array, name_x: str, name_y: str) -> None:
  if x.shape[0] != y.shape[0]:
    raise ValueError(
        f"`{name_x}` and `{name_y}` must hold paired samples (same n), got "
        f"{x.shape[0]} and {y.shape[0]}.")


def check_min_count(x: jax.Array, minimum: int, name: str) -> None:
  if x.shape[0] < minimum:
    raise ValueError(
        f"`{name}` needs at least {minimum} samples, got {x.shape[0]}.")


def all_finite(*arrays: jax.Array) -> jax.Array:
  """Traced flag: every entry of every array is finite (no NaN, no +-inf)."""
  flag = jnp.asarray(True)
  for array in arrays:
    flag = flag & jnp.all(jnp.isfinite(array))
  return flag


def nan_unless(value: jax.Array, ok: jax.Array) -> jax.Array:
  """`value` where `ok`, else NaN, with a NaN gradient too.

  A multiplication (by 1 or by NaN) rather than `jnp.where`: a `where` would
  send a zero gradient into the rejected branch, so a training step would
  carry on silently with a NaN loss but finite updates.
  """
  return value * jnp.where(ok, 1.0, jnp.nan).astype(value.dtype)


def check_positive_finite(value, name: str) -> None:
  """Eager check of a positive, finite scalar parameter (traced values pass)."""
  if jnp.ndim(value) != 0:
    raise ValueError(f"`{name}` must be a scalar, got shape {jnp.shape(value)}.")
  _checks.check_in_range(value, name, 0.0, np.inf, low_inclusive=False,
                         high_inclusive=False)


def positive_finite(value) -> jax.Array:
  """Traced flag for a parameter that must be positive and finite (NaN fails)."""
  value = jnp.asarray(value)
  return (value > 0) & jnp.isfinite(value)


def check_bandwidth(sigma, name: str) -> None:
  """Eager check of a kernel bandwidth: a positive, finite scalar.

  Array-valued bandwidths are refused rather than read as per-dimension
  scales: every estimator here (and the papers behind them) uses an isotropic
  kernel, and a shape-(d,) sigma would be indistinguishable from a per-sample
  one. Per-dimension scales are the same as dividing each feature by its scale
  and using sigma = 1, which the caller can write explicitly.
  """
  if sigma is None:
    return
  if jnp.ndim(sigma) != 0:
    raise ValueError(
        f"`{name}` must be a scalar bandwidth, got shape {jnp.shape(sigma)}; for "
        "per-dimension scales divide each feature by its scale and use 1.0.")
  _checks.check_in_range(sigma, name, 0.0, np.inf, low_inclusive=False,
                         high_inclusive=False)


def normalised_weights(weights: Optional[jax.typing.ArrayLike], n: int, dtype,
                       name: str) -> tuple[jax.Array, jax.Array]:
  """Sample weights summing to one (uniform when None) and a traced validity flag.

  Concrete weights that are negative, non-finite or sum to zero raise a
  ValueError naming the argument; traced ones (inside `jit`) cannot be checked
  eagerly, so the returned flag is False for them and the caller's result
  becomes NaN.
  """
  if weights is None:
    return jnp.full((n,), 1.0 / n, dtype), jnp.asarray(True)
  if jnp.shape(weights) != (n,):
    raise ValueError(
        f"`{name}` must have shape ({n},) to match its samples, got "
        f"{jnp.shape(weights)}.")
  if not isinstance(weights, jax.core.Tracer):
    concrete = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(concrete)):
      raise ValueError(f"`{name}` must be finite, got {concrete}.")
    if np.any(concrete < 0):
      raise ValueError(f"`{name}` must be non-negative, got {concrete}.")
    if not concrete.sum() > 0:
      raise ValueError(f"`{name}` must have a positive sum, got {concrete}.")
  weights = jnp.asarray(weights, dtype)
  total = jnp.sum(weights)
  ok = jnp.all(weights >= 0) & (total > 0) & jnp.isfinite(total)
  return weights / jnp.where(ok, total, 1.0), ok
