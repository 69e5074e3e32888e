"""The one set of reductions every loss uses.

A loss returns per-example (or per-token) values; these helpers turn them into a
scalar without silently counting padding. A fully masked input gives 0, not NaN.

Reductions:
  * ``"none"``: return the values unchanged (masked entries set to 0).
  * ``"sum"``: sum of the included entries.
  * ``"mean"``: mean over the included entries (token-mean when `where` masks
    padding tokens).
  * ``"sequence_mean"``: mean over the last axis per sequence, then mean over
    the sequences that have at least one included token.
  * ``"normalizer"``: sum divided by a caller-given ``normalizer`` -- e.g. the
    global token count of a gradient-accumulation step, so micro-batches add up
    to the exact full-batch mean.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from divlab import _checks

REDUCTIONS = ("none", "sum", "mean", "sequence_mean", "normalizer")


def _safe_divide(num: jax.Array, den: jax.Array) -> jax.Array:
  """num / den with 0 where den == 0 (and finite gradients there)."""
  nonzero = den != 0
  return jnp.where(nonzero, num / jnp.where(nonzero, den, 1), 0)


def reduce_loss(values: jax.typing.ArrayLike,
                reduction: str = "mean",
                *,
                where: Optional[jax.typing.ArrayLike] = None,
                normalizer: Optional[jax.typing.ArrayLike] = None) -> jax.Array:
  """Reduces per-example loss values.

  Args:
    values: per-example or per-token losses, shape ``[...]``, floating.
    reduction: one of ``"none", "sum", "mean", "sequence_mean", "normalizer"``.
    where: optional boolean mask broadcastable to ``values``; False entries are
      excluded (their value and gradient are exactly 0, even if they hold NaN).
    normalizer: the divisor for ``reduction="normalizer"`` (e.g. a global token
      count), a positive scalar; must be given for that reduction and only for
      it.

  Returns:
    A scalar, or ``values`` with excluded entries zeroed for ``"none"``.

  Example:
    >>> reduce_loss(jnp.array([1., 2., 3.]), "mean", where=jnp.array([1, 1, 0], bool))
    Array(1.5, dtype=float32)
  """
  if reduction not in REDUCTIONS:
    raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}.")
  if (normalizer is None) == (reduction == "normalizer"):
    raise ValueError("`normalizer` must be given exactly when reduction='normalizer'.")
  if normalizer is not None:
    # A [B] normalizer would silently turn the scalar loss into a vector.
    _checks.check_positive(normalizer, "normalizer")
  values = jnp.asarray(values)
  _checks.check_floating(values, "values")
  if reduction == "sequence_mean" and values.ndim < 1:
    raise ValueError("`values` must have shape [..., T] for "
                     "reduction='sequence_mean', got a scalar.")
  if where is None:
    mask = jnp.ones(values.shape, dtype=bool)
  else:
    mask = _checks.broadcast_mask(where, values.shape, "where")
  masked = jnp.where(mask, values, 0)
  if reduction == "none":
    return masked
  if reduction == "sum":
    return masked.sum()
  if reduction == "mean":
    return _safe_divide(masked.sum(), mask.sum().astype(values.dtype))
  if reduction == "normalizer":
    return masked.sum() / jnp.asarray(normalizer, values.dtype)
  # sequence_mean
  counts = mask.sum(-1).astype(values.dtype)
  per_seq = _safe_divide(masked.sum(-1), counts)
  has_tokens = counts > 0
  return _safe_divide(jnp.where(has_tokens, per_seq, 0).sum(),
                      has_tokens.sum().astype(values.dtype))
