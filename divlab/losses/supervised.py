"""Plain supervised losses (the baselines every family compares against)."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from divlab import _checks
from divlab.losses.reductions import reduce_loss

__all__ = ["softmax_cross_entropy", "squared_error"]


def softmax_cross_entropy(logits: jax.typing.ArrayLike,
                          labels: jax.typing.ArrayLike,
                          *,
                          where: Optional[jax.typing.ArrayLike] = None,
                          reduction: str = "none") -> jax.Array:
  """Cross-entropy with integer labels: -log softmax(z)_y.

  Computed in at least float32 (bf16 logits are upcast).

  Args:
    logits: ``[..., C]`` unnormalised scores (floating).
    labels: ``[...]`` integer class indices in ``[0, C)`` (an integer dtype).
    where: optional boolean mask of valid examples/tokens, shape ``[...]`` or
      ``[..., 1]`` exactly (never a class mask; see `divlab._checks.example_mask`).
    reduction: see ``divlab.losses.reduce_loss`` (default per-example).

  Returns:
    ``[...]`` per-example losses, or a scalar for a reducing ``reduction``.

  Example:
    >>> softmax_cross_entropy(jnp.zeros((1, 4)), jnp.array([2]))  # log 4
    Array([1.3862944], dtype=float32)
  """
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  _checks.check_floating(logits, "logits")
  if logits.ndim < 1:
    raise ValueError("`logits` must have a class axis, shape [..., C]; got a scalar.")
  _checks.check_integer(labels, "labels")
  if labels.shape != logits.shape[:-1]:
    raise ValueError(f"`labels` must have shape {logits.shape[:-1]} (logits without "
                     f"the class axis), got {labels.shape}.")
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  values = -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32),
                                axis=-1)[..., 0]
  return reduce_loss(values, reduction,
                     where=_checks.example_mask(where, logits.shape))


def squared_error(predictions: jax.typing.ArrayLike,
                  targets: jax.typing.ArrayLike,
                  *,
                  where: Optional[jax.typing.ArrayLike] = None,
                  reduction: str = "none") -> jax.Array:
  """Squared error summed over the last axis: sum_k (yhat_k - y_k)^2.

  Args:
    predictions: ``[..., K]`` floating.
    targets: ``[..., K]`` (same shape; a ``[B]`` target must be given as
      ``[B, 1]`` explicitly).
    where: optional boolean mask of valid examples, broadcastable to ``[...]``.
    reduction: see ``divlab.losses.reduce_loss``.

  Returns:
    ``[...]`` per-example squared errors (or a scalar when reduced).

  Example:
    >>> squared_error(jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 0.0]]))
    Array([5.], dtype=float32)
  """
  predictions = jnp.asarray(predictions)
  targets = jnp.asarray(targets)
  _checks.check_floating(predictions, "predictions")
  _checks.check_floating(targets, "targets")
  if predictions.ndim < 1:
    raise ValueError("`predictions` must have shape [..., K]; got a scalar.")
  if predictions.shape != targets.shape:
    raise ValueError(f"`predictions` and `targets` must have the same shape, got "
                     f"{predictions.shape} and {targets.shape}.")
  values = jnp.sum(jnp.square(predictions - targets), axis=-1)
  return reduce_loss(values, reduction,
                     where=_checks.broadcast_mask(where, values.shape, "where"))
