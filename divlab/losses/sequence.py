"""Token-level quantities of language models, shared by every LM family.

Everything here takes next-token logits ``[..., T, V]`` already aligned with
their targets (for a causal LM, the logits at positions ``0..T-2`` predict the
tokens at ``1..T-1``: shift before calling) and an optional token mask
``where`` ``[..., T]`` (False = padding, or prompt tokens that are not scored).
Masked positions contribute exactly 0 and a zero gradient whatever their
logits hold (NaN and +-inf included), so padded logits never leak NaN into a
loss.

* `token_log_probs`: ``log pi(y_t | y_<t)`` per token;
* `sequence_sum` / `sequence_mean`: per-sequence sum or per-token mean of
  per-token values (``l`` and ``lbar`` of the preference-optimisation papers);
* `sequence_log_likelihood`: ``sum_t log pi(y_t | y_<t)`` (NPO, DPO, ...);
* `token_kl`: the full-vocabulary KL(P_t || Q_t) per token (TDPO's SeqKL is
  its sequence sum with P the reference);
* `token_entropy`: the entropy of the next-token distribution per token.

All return at least float32 (bf16 inputs are upcast).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from divlab import _checks
from divlab import divergences

__all__ = [
    "token_log_probs",
    "sequence_sum",
    "sequence_mean",
    "sequence_log_likelihood",
    "sequence_mean_log_likelihood",
    "token_kl",
    "token_entropy",
]

ArrayLike = jax.typing.ArrayLike


def _as_float(x: ArrayLike, name: str) -> jax.Array:
  x = jnp.asarray(x)
  _checks.check_floating(x, name)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_logits(logits: jax.Array, name: str) -> None:
  if logits.ndim < 2:
    raise ValueError(f"`{name}` must have shape [..., T, V], got {logits.shape}.")


def _token_mask(where: Optional[ArrayLike], shape: tuple[int, ...]) -> Optional[jax.Array]:
  return _checks.broadcast_mask(where, shape, "where")


def _blank_logits(logits: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  """Replaces masked positions' logits by zeros before any arithmetic.

  Masking only the output would let a NaN or inf logit at a padded position
  turn into a NaN gradient (0 * inf) in the backward pass.
  """
  return logits if mask is None else jnp.where(mask[..., None], logits, 0)


def token_log_probs(logits: ArrayLike,
                    targets: ArrayLike,
                    where: Optional[ArrayLike] = None) -> jax.Array:
  """Log-probability of each target token: log softmax(z_t)[y_t].

  ``log pi(y_t | y_<t) = z_t[y_t] - logsumexp(z_t)``; 0 at masked positions.

  Args:
    logits: ``[..., T, V]`` next-token logits aligned with ``targets``.
    targets: ``[..., T]`` integer ids in ``[0, V)`` at unmasked positions
      (anything, e.g. an ignore index of -100, at masked ones).
    where: optional ``[..., T]`` bool, False to exclude a position.

  Returns:
    ``[..., T]`` log-probabilities (<= 0), at least float32.

  Example:
    >>> token_log_probs(jnp.log(jnp.array([[[0.5, 0.5], [0.9, 0.1]]])),
    ...                 jnp.array([[0, 1]]))
    Array([[-0.6931472, -2.3025851]], dtype=float32)
  """
  logits = _as_float(logits, "logits")
  _check_logits(logits, "logits")
  targets = jnp.asarray(targets)
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    raise ValueError(f"`targets` must be integer token ids, got {targets.dtype}.")
  if targets.shape != logits.shape[:-1]:
    raise ValueError(f"`targets` must have shape {logits.shape[:-1]} (the logits "
                     f"without the vocabulary axis), got {targets.shape}.")
  mask = _token_mask(where, targets.shape)
  logits = _blank_logits(logits, mask)
  if mask is not None:
    targets = jnp.where(mask, targets, 0)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32),
                               axis=-1)[..., 0]
  return picked if mask is None else jnp.where(mask, picked, 0)


def sequence_sum(token_values: ArrayLike,
                 where: Optional[ArrayLike] = None) -> jax.Array:
  """Per-sequence sum of per-token values: sum_t where_t v_t.

  Args:
    token_values: ``[..., T]`` per-token values (e.g. `token_log_probs`).
    where: optional ``[..., T]`` bool mask of the positions to count.

  Returns:
    ``[...]`` sums, at least float32; masked entries count as 0 even if
    they hold NaN.

  Example:
    >>> sequence_sum(jnp.array([[1., 2., jnp.nan]]), jnp.array([[1, 1, 0]], bool))
    Array([3.], dtype=float32)
  """
  values = _as_float(token_values, "token_values")
  if values.ndim < 1:
    raise ValueError("`token_values` must have shape [..., T].")
  mask = _token_mask(where, values.shape)
  return (values if mask is None else jnp.where(mask, values, 0)).sum(-1)


def sequence_mean(token_values: ArrayLike,
                  where: Optional[ArrayLike] = None) -> jax.Array:
  """Per-sequence mean over the counted tokens: sum_t where_t v_t / sum_t where_t.

  A sequence with no counted token gets 0 (not NaN), with a zero gradient.

  Args:
    token_values: ``[..., T]`` per-token values.
    where: optional ``[..., T]`` bool mask of the positions to count.

  Returns:
    ``[...]`` means, at least float32.

  Example:
    >>> sequence_mean(jnp.array([[1., 3., 9.], [1., 1., 1.]]),
    ...               jnp.array([[1, 1, 0], [0, 0, 0]], bool))
    Array([2., 0.], dtype=float32)
  """
  values = _as_float(token_values, "token_values")
  if values.ndim < 1:
    raise ValueError("`token_values` must have shape [..., T].")
  mask = _token_mask(where, values.shape)
  if mask is None:
    return values.mean(-1)
  counts = mask.sum(-1).astype(values.dtype)
  total = jnp.where(mask, values, 0).sum(-1)
  return jnp.where(counts > 0, total / jnp.maximum(counts, 1), 0)


def sequence_log_likelihood(logits: ArrayLike,
                            targets: ArrayLike,
                            where: Optional[ArrayLike] = None) -> jax.Array:
  """Summed log-probability of target tokens: sum_t where_t log softmax(z_t)[y_t].

  This is ``log pi(y | x)`` of a completion, the ``l`` that DPO, f-DPO,
  TDPO, KTO and NPO take (the released NPO and DPO trainers sum per-token
  log-probabilities the same way). Padded positions contribute exactly 0 and
  a zero gradient, whatever their logits or targets hold.

  Args:
    logits: ``[..., T, V]`` next-token logits, already aligned with
      ``targets`` (shift them before calling for a causal LM).
    targets: ``[..., T]`` integer token ids in ``[0, V)`` at valid positions.
    where: optional ``[..., T]`` boolean mask of the positions to count.

  Returns:
    ``[...]`` per-sequence log-likelihoods (<= 0), at least float32.

  Example:
    >>> sequence_log_likelihood(jnp.zeros((1, 3, 4)), jnp.array([[0, 1, 2]]),
    ...                         where=jnp.array([[True, True, False]]))
    Array([-2.7725887], dtype=float32)
  """
  return sequence_sum(token_log_probs(logits, targets, where), where)


def sequence_mean_log_likelihood(logits: ArrayLike,
                                 targets: ArrayLike,
                                 where: Optional[ArrayLike] = None) -> jax.Array:
  """Per-token mean log-probability: sum_t where_t log pi(y_t|.) / sum_t where_t.

  The length-normalised ``lbar`` that IPO, SimPO and ORPO take; 0 for a
  sequence with no counted token.

  Args:
    logits: ``[..., T, V]`` next-token logits aligned with ``targets``.
    targets: ``[..., T]`` integer token ids.
    where: optional ``[..., T]`` boolean mask of the positions to count.

  Returns:
    ``[...]`` mean log-probabilities (<= 0), at least float32.

  Example:
    >>> sequence_mean_log_likelihood(jnp.zeros((1, 3, 4)), jnp.array([[0, 1, 2]]),
    ...                              where=jnp.array([[True, True, False]]))
    Array([-1.3862944], dtype=float32)
  """
  return sequence_mean(token_log_probs(logits, targets, where), where)


def token_kl(p_logits: ArrayLike,
             q_logits: ArrayLike,
             where: Optional[ArrayLike] = None) -> jax.Array:
  """Full-vocabulary KL(P_t || Q_t) between two models' next-token distributions.

  ``KL_t = sum_v p_t(v) log(p_t(v) / q_t(v))`` with ``p_t = softmax(p_logits_t)``
  (`divlab.divergences.kl` over the vocabulary axis), 0 at masked positions.
  ``sequence_sum(token_kl(ref_logits, logits, m), m)`` is TDPO's SeqKL
  (Zeng et al., 2024, "Token-level Direct Preference Optimization");
  ``token_kl(logits, ref_logits)`` is the per-token reverse KL to a reference
  that policy-gradient methods penalise.

  Args:
    p_logits: ``[..., T, V]`` logits of P (the first argument).
    q_logits: ``[..., T, V]`` logits of Q.
    where: optional ``[..., T]`` bool token mask.

  Returns:
    ``[..., T]`` per-token KL (>= 0), at least float32.

  Example:
    >>> kl = token_kl(jnp.zeros((1, 1, 2)), jnp.log(jnp.array([[[0.25, 0.75]]])))
    >>> kl.shape, round(float(kl[0, 0]), 4)
    ((1, 1), 0.1438)
  """
  p_logits = _as_float(p_logits, "p_logits")
  q_logits = _as_float(q_logits, "q_logits")
  _check_logits(p_logits, "p_logits")
  _checks.check_same_shape(p_logits, q_logits, "p_logits", "q_logits")
  mask = _token_mask(where, p_logits.shape[:-1])
  values = divergences.kl(_blank_logits(p_logits, mask), _blank_logits(q_logits, mask))
  return values if mask is None else jnp.where(mask, values, 0)


def token_entropy(logits: ArrayLike, where: Optional[ArrayLike] = None) -> jax.Array:
  """Entropy of each next-token distribution: H_t = -sum_v p_t(v) log p_t(v).

  Args:
    logits: ``[..., T, V]`` next-token logits.
    where: optional ``[..., T]`` bool token mask (0 at masked positions).

  Returns:
    ``[..., T]`` entropies in nats, at least float32.

  Example:
    >>> token_entropy(jnp.zeros((1, 2, 4)), jnp.array([[True, False]]))
    Array([[1.3862944, 0.       ]], dtype=float32)
  """
  logits = _as_float(logits, "logits")
  _check_logits(logits, "logits")
  mask = _token_mask(where, logits.shape[:-1])
  values = divergences.entropy(_blank_logits(logits, mask))
  return values if mask is None else jnp.where(mask, values, 0)
