"""Classification metrics on logits: accuracy, calibration, margins, KL to a reference.

All functions here are JAX (they run under `jit` on device) and take logits
with the class axis last, ``[..., C]``. ``where`` is a mask of valid
*examples*, shape broadcastable to ``[...]``; excluded examples do not count,
and a fully masked batch gives 0 rather than NaN. Metrics are computed in at
least float32.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from divlab import _checks
from divlab import divergences
from divlab.losses.reductions import reduce_loss

__all__ = [
    "accuracy",
    "expected_calibration_error",
    "margins",
    "kl_to_reference",
]

ArrayLike = jax.typing.ArrayLike


def _logits(logits: ArrayLike, name: str = "logits") -> jax.Array:
  logits = jnp.asarray(logits)
  _checks.check_floating(logits, name)
  if logits.ndim < 1:
    raise ValueError(f"`{name}` must have a class axis, shape [..., C]; got a scalar.")
  return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


def _labels(labels: ArrayLike, logits: jax.Array) -> jax.Array:
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"`labels` must be integer class indices, got {labels.dtype}.")
  if labels.shape != logits.shape[:-1]:
    raise ValueError(f"`labels` must have shape {logits.shape[:-1]} (the logits "
                     f"without the class axis), got {labels.shape}.")
  return labels.astype(jnp.int32)


def accuracy(logits: ArrayLike,
             labels: ArrayLike,
             where: Optional[ArrayLike] = None) -> jax.Array:
  """Top-1 accuracy: mean over valid examples of [argmax_j z_j == y].

  Ties in the logits go to the lowest class index (``argmax``'s rule).

  Args:
    logits: ``[..., C]`` scores.
    labels: ``[...]`` integer labels.
    where: optional mask of valid examples, broadcastable to ``[...]``.

  Returns:
    A scalar in ``[0, 1]``.

  Example:
    >>> accuracy(jnp.array([[2.0, 1.0], [0.0, 3.0]]), jnp.array([0, 0]))
    Array(0.5, dtype=float32)
  """
  logits = _logits(logits)
  labels = _labels(labels, logits)
  mask = _checks.broadcast_mask(where, labels.shape, "where")
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(logits.dtype)
  return reduce_loss(correct, "mean", where=mask)


def expected_calibration_error(logits: ArrayLike,
                               labels: ArrayLike,
                               num_bins: int = 15,
                               where: Optional[ArrayLike] = None) -> jax.Array:
  """Expected calibration error with equal-width confidence bins.

  ``ECE = sum_b (|B_b| / n) |acc(B_b) - conf(B_b)|``, where the confidence of
  an example is its top softmax probability and ``B_b`` holds the examples
  whose confidence lies in ``(b/num_bins, (b+1)/num_bins]`` (Guo et al., "On
  Calibration of Modern Neural Networks", 2017, whose code uses these
  half-open bins and 15 of them).

  Args:
    logits: ``[..., C]`` scores.
    labels: ``[...]`` integer labels.
    num_bins: number of equal-width bins on ``[0, 1]`` (a Python int >= 1).
    where: optional mask of valid examples, broadcastable to ``[...]``.

  Returns:
    A scalar in ``[0, 1]``.

  Example:
    >>> # Confidence 0.5 (both logits equal), right half the time: ECE = 0.
    >>> expected_calibration_error(jnp.zeros((2, 2)), jnp.array([0, 1]))
    Array(0., dtype=float32)
  """
  if not isinstance(num_bins, int) or isinstance(num_bins, bool) or num_bins < 1:
    raise ValueError(f"`num_bins` must be a Python int >= 1, got {num_bins!r}.")
  logits = _logits(logits)
  labels = _labels(labels, logits)
  mask = _checks.broadcast_mask(where, labels.shape, "where")
  if mask is None:
    mask = jnp.ones(labels.shape, bool)
  probs = jax.nn.softmax(logits, axis=-1)
  confidence = probs.max(axis=-1)
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(logits.dtype)
  edges = jnp.linspace(0.0, 1.0, num_bins + 1, dtype=logits.dtype)
  in_bin = ((confidence[..., None] > edges[:-1]) &
            (confidence[..., None] <= edges[1:]) & mask[..., None])
  in_bin = in_bin.reshape(-1, num_bins).astype(logits.dtype)
  # |B_b|/n * |acc_b - conf_b| = |sum_{B_b} correct - sum_{B_b} conf| / n, so
  # empty bins need no special case.
  gap = jnp.abs(in_bin.T @ correct.reshape(-1) - in_bin.T @ confidence.reshape(-1))
  return gap.sum() / jnp.maximum(mask.sum(), 1).astype(logits.dtype)


def margins(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
  """Correct-class margin: m = z_y - logsumexp_{j != y} z_j.

  This is the model output that KLoM compares across models (Georgiev et al.,
  "Attribute-to-Delete: Machine Unlearning via Datamodel Matching", 2024); it
  equals ``log p_y - log(1 - p_y)``, the logit of the correct-class
  probability. A ``-inf`` logit for every other class gives ``+inf``.

  Args:
    logits: ``[..., C]`` scores with ``C >= 2``.
    labels: ``[...]`` integer labels.

  Returns:
    ``[...]`` margins, at least float32.

  Example:
    >>> margins(jnp.array([[2.0, 0.0, 0.0]]), jnp.array([0]))  # 2 - log 2
    Array([1.3068528], dtype=float32)
  """
  logits = _logits(logits)
  if logits.shape[-1] < 2:
    raise ValueError(f"`logits` need at least 2 classes for a margin, got "
                     f"{logits.shape[-1]}.")
  labels = _labels(labels, logits)
  is_label = jnp.arange(logits.shape[-1]) == labels[..., None]
  correct = jnp.sum(jnp.where(is_label, logits, 0), axis=-1)
  others = jax.nn.logsumexp(jnp.where(is_label, -jnp.inf, logits), axis=-1)
  return correct - others


def kl_to_reference(logits: ArrayLike,
                    ref_logits: ArrayLike,
                    where: Optional[ArrayLike] = None) -> jax.Array:
  """Mean KL(P_ref || P) between a reference model's and a model's predictions.

  ``mean_i sum_c p_ref(c|x_i) log(p_ref(c|x_i) / p(c|x_i))``: the reference
  (e.g. a model retrained without the forget set) is the first argument of the
  KL, as in the NPO paper's synthetic experiment, which measures
  ``F.kl_div(log p_model, log p_retain, log_target=True)`` = KL(P_retain ||
  P_model).

  Args:
    logits: ``[..., C]`` logits of the evaluated model.
    ref_logits: ``[..., C]`` logits of the reference model.
    where: optional mask of valid examples, broadcastable to ``[...]``.

  Returns:
    A scalar >= 0.

  Example:
    >>> kl_to_reference(jnp.zeros((1, 2)), jnp.array([[0.0, jnp.log(3.0)]]))
    Array(0.13081205, dtype=float32)
  """
  logits = _logits(logits)
  ref_logits = _logits(ref_logits, "ref_logits")
  _checks.check_same_shape(logits, ref_logits, "logits", "ref_logits")
  mask = _checks.broadcast_mask(where, logits.shape[:-1], "where")
  if mask is not None:
    # Padded rows may hold anything; blank them so they cannot produce NaN.
    logits = jnp.where(mask[..., None], logits, 0)
    ref_logits = jnp.where(mask[..., None], ref_logits, 0)
  values = divergences.kl(ref_logits, logits)
  return reduce_loss(values, "mean", where=mask)
