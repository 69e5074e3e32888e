"""Divergences between categorical distributions given by logits.

Every function takes logits -- any real array, normalised inside by a masked
log-softmax over `axis`, so log-probabilities work as well -- and returns one
value per distribution: the input shape with `axis` removed, never reduced over
the batch.

Masking: `where` is a boolean (or integer) array broadcastable to the logits.
A False entry is excluded from both distributions, exactly as if both inputs
held a `-inf` logit there. A distribution whose entries are all excluded gives 0.

Dtype policy: the computation runs in the promotion of the inputs' dtype with
float32 (bfloat16/float16/integer inputs are computed in float32, float64
stays float64) and the result is returned in that compute dtype; gradients come
back in each input's own dtype.

Numerics: everything is evaluated in log space. Zero probabilities and `-inf`
logits give finite values with zero gradients when they occur in both inputs;
logits of magnitude 1e4 are fine. A divergence that is mathematically infinite
(for KL, P putting mass where Q has none) is returned as `+inf`.

Speed: `entropy`, `cross_entropy`, `kl` (and `reverse_kl`) and `js` use fused
`jax.custom_vjp` rules. KL reads each input twice in the forward pass (a max,
then one pass that accumulates both normalisers and the cross term) and once in
the backward pass, which recomputes the probabilities from the inputs and the
saved per-row max and log-normaliser rather than storing anything of the
inputs' size; JS needs one more forward pass for the mixture. The backward
passes are written on the same per-entry expressions as the forward passes, so
when both run in one jit (`jax.grad`, `jax.value_and_grad`) XLA evaluates them
once. These four support reverse mode (`grad`, `vjp`, and forward-over-reverse such as
`jax.hessian`), not pure forward mode (`jax.jvp`, `jax.jacfwd`) of the function
itself.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from divlab import _checks
from divlab.divergences import generators as _generators

__all__ = [
    "masked_log_softmax",
    "entropy",
    "cross_entropy",
    "kl",
    "reverse_kl",
    "js",
    "alpha_divergence",
    "renyi",
    "total_variation",
    "squared_hellinger",
    "chi_squared",
    "f_divergence",
]

ArrayLike = jax.typing.ArrayLike


# ----------------------------------------------------------------------------
# Argument handling (static, at trace time).


def _check_real(x: jax.Array, name: str) -> None:
  dtype = x.dtype
  if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
    raise ValueError(f"`{name}` must hold real numbers, got dtype {dtype}.")


def _as_mask(where: Optional[ArrayLike], shape: tuple[int, ...]) -> Optional[jax.Array]:
  """`where` as a boolean array broadcastable to `shape` (None stays None)."""
  if where is None:
    return None
  mask = jnp.asarray(where)
  if not (mask.dtype == jnp.bool_ or jnp.issubdtype(mask.dtype, jnp.integer)):
    raise ValueError(f"`where` must be a boolean mask, got dtype {mask.dtype}.")
  try:
    broadcast = np.broadcast_shapes(mask.shape, shape)
  except ValueError:
    broadcast = None
  if broadcast != tuple(shape):
    raise ValueError(
        f"`where` of shape {mask.shape} is not broadcastable to the logits' "
        f"shape {tuple(shape)}.")
  return mask.astype(jnp.bool_)


def _prepare(arrays: dict[str, ArrayLike], axis: int, where: Optional[ArrayLike]):
  """Validates named logit arrays; returns (arrays, axis, mask, compute dtype)."""
  names = list(arrays)
  values = [jnp.asarray(arrays[name]) for name in names]
  for name, x in zip(names, values):
    _check_real(x, name)
    if x.ndim == 0:
      raise ValueError(f"`{name}` must have at least one dimension, got a scalar.")
  for name, x in zip(names[1:], values[1:]):
    _checks.check_same_shape(values[0], x, names[0], name)
  axis = _checks.canonical_axis(axis, values[0].ndim)
  mask = _as_mask(where, values[0].shape)
  dtype = jnp.promote_types(jnp.result_type(*values), jnp.float32)
  return values, axis, mask, dtype


def _check_scalar(value: Any, name: str) -> None:
  if jnp.ndim(value) != 0:
    raise ValueError(f"`{name}` must be a scalar, got shape {jnp.shape(value)}.")


def _check_finite(value: Any, name: str) -> None:
  if _checks.is_concrete_number(value) and not math.isfinite(float(value)):
    raise ValueError(f"`{name}` must be finite, got {value!r}.")


# ----------------------------------------------------------------------------
# Shared numerics.


def _masked(x: jax.Array, mask: Optional[jax.Array], dtype) -> jax.Array:
  x = x.astype(dtype)
  return x if mask is None else jnp.where(mask, x, -jnp.inf)


def _row_max(x: jax.Array, axis: int) -> jax.Array:
  """Max over `axis` (kept), 0 for rows that are entirely -inf."""
  top = jnp.max(x, axis=axis, keepdims=True)
  return jnp.where(jnp.isfinite(top), top, 0.0)


def _safe_log(total: jax.Array) -> jax.Array:
  """log of a normaliser; an empty row (total 0) gets 0 so nothing turns NaN."""
  return jnp.log(jnp.where(total > 0, total, 1.0))


def _nonzero_or_one(total: jax.Array) -> jax.Array:
  return jnp.where(total > 0, total, 1.0)


def masked_log_softmax(logits: ArrayLike, *, axis: int = -1,
                       where: Optional[ArrayLike] = None) -> jax.Array:
  """Log-softmax over `axis` with excluded entries set to `-inf`.

  log p_i = x_i - log sum_{j in where} exp(x_j) for included i, -inf otherwise.
  A row with every entry excluded (or every logit -inf) is all -inf, not NaN.
  Gradients are finite everywhere and zero at excluded entries.

  Args:
    logits: `[..., n, ...]` real logits.
    axis: the axis holding the categories.
    where: optional boolean mask broadcastable to `logits`; False excludes.

  Returns:
    Log-probabilities with the shape of `logits`, in at least float32.

  Example:
    >>> lp = masked_log_softmax(jnp.array([0., 0., 5.]),
    ...                         where=jnp.array([True, True, False]))
    >>> [round(float(v), 4) for v in jnp.exp(lp)]
    [0.5, 0.5, 0.0]
  """
  (x,), axis, mask, dtype = _prepare({"logits": logits}, axis, where)
  x = _masked(x, mask, dtype)
  shifted = x - jax.lax.stop_gradient(_row_max(x, axis))
  return shifted - _safe_log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


def _normalise(x: jax.Array, mask: Optional[jax.Array], axis: int, dtype,
               with_sum: bool = True):
  """(shifted logits, row max, log-normaliser): log p = shifted - log_z.

  The max is kept apart from log_z: folding both into one log-sum-exp would
  round away ~1e-4 of log p at logits of magnitude 1e4 in float32. The two
  per-row statistics are what the custom VJPs save for the backward pass.
  """
  x = _masked(x, mask, dtype)
  top = _row_max(x, axis)
  shifted = x - top
  if not with_sum:
    return shifted, top, None
  return shifted, top, _safe_log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


def _log_probs_from_stats(x, mask, top, log_z):
  """Recomputes log p from the logits and saved row statistics (one pass)."""
  return (_masked(x, mask, top.dtype) - top) - log_z


def _pair_log_probs(p_logits, q_logits, axis, where):
  (p, q), axis, mask, _ = _prepare({"p_logits": p_logits, "q_logits": q_logits},
                                   axis, where)
  lp = masked_log_softmax(p, axis=axis, where=mask)
  lq = masked_log_softmax(q, axis=axis, where=mask)
  return lp, lq, axis


def _cotangent(grad: jax.Array, like: jax.Array) -> jax.Array:
  return grad.astype(like.dtype)


# ----------------------------------------------------------------------------
# Entropy, cross-entropy, KL: one fused pass after the max, custom VJPs.


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _entropy_core(logits, mask, axis):
  return _entropy_fwd(logits, mask, axis)[0]


def _entropy_fwd(logits, mask, axis):
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  x = _masked(logits, mask, dtype)
  top = _row_max(x, axis)
  shifted = x - top
  weights = jnp.exp(shifted)
  total = jnp.sum(weights, axis=axis, keepdims=True)
  moment = jnp.sum(jnp.where(weights > 0, weights * shifted, 0.0),
                   axis=axis, keepdims=True)
  log_z = _safe_log(total)
  # Round-off must not make a non-negative quantity negative.
  value = jnp.maximum(log_z - moment / _nonzero_or_one(total), 0.0)
  return jnp.squeeze(value, axis), (logits, mask, top, log_z, value)


def _entropy_bwd(axis, residuals, g):
  logits, mask, top, log_z, value = residuals
  dtype = top.dtype
  log_p = _masked(logits, mask, dtype) - top - log_z
  p = jnp.exp(log_p)
  g = jnp.expand_dims(g, axis)
  grad = -g * jnp.where(p > 0, p * (log_p + value), 0.0)
  return _cotangent(grad, logits), None


_entropy_core.defvjp(_entropy_fwd, _entropy_bwd)


def entropy(logits: ArrayLike, *, axis: int = -1,
            where: Optional[ArrayLike] = None) -> jax.Array:
  """Shannon entropy of softmax(logits), in nats.

  H(P) = -sum_i p_i log p_i, with 0 log 0 = 0 (Shannon 1948).

  Args:
    logits: `[..., n, ...]` real logits of P.
    axis: the axis holding the categories.
    where: optional boolean mask broadcastable to `logits`; False excludes.

  Returns:
    `[...]` entropies (`axis` removed), in at least float32.

  Example:
    >>> round(float(entropy(jnp.zeros(4))), 4)  # log 4
    1.3863
  """
  (x,), axis, mask, _ = _prepare({"logits": logits}, axis, where)
  return _entropy_core(x, mask, axis)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _cross_entropy_core(p_logits, q_logits, mask, axis):
  return _cross_entropy_fwd(p_logits, q_logits, mask, axis)[0]


def _cross_entropy_fwd(p_logits, q_logits, mask, axis):
  dtype = jnp.promote_types(jnp.result_type(p_logits, q_logits), jnp.float32)
  shifted_p, top_p, log_zp = _normalise(p_logits, mask, axis, dtype)
  shifted_q, top_q, log_zq = _normalise(q_logits, mask, axis, dtype)
  weights_p = jnp.exp(shifted_p)
  total_p = jnp.sum(weights_p, axis=axis, keepdims=True)
  cross = jnp.sum(jnp.where(weights_p > 0, weights_p * shifted_q, 0.0),
                  axis=axis, keepdims=True)
  value = jnp.maximum(log_zq - cross / _nonzero_or_one(total_p), 0.0)
  stats = (top_p, log_zp, top_q, log_zq)
  return jnp.squeeze(value, axis), (p_logits, q_logits, mask, stats, value)


def _cross_entropy_bwd(axis, residuals, g):
  p_logits, q_logits, mask, stats, value = residuals
  log_p, log_q = _recompute_log_probs(p_logits, q_logits, mask, stats)
  p, q = jnp.exp(log_p), jnp.exp(log_q)
  g = jnp.expand_dims(g, axis)
  grad_p = -g * jnp.where(p > 0, p * (log_q + value), 0.0)
  grad_q = g * (q - p)
  return _cotangent(grad_p, p_logits), _cotangent(grad_q, q_logits), None


def _recompute_log_probs(p_logits, q_logits, mask, stats):
  top_p, log_zp, top_q, log_zq = stats
  return (_log_probs_from_stats(p_logits, mask, top_p, log_zp),
          _log_probs_from_stats(q_logits, mask, top_q, log_zq))


def cross_entropy(p_logits: ArrayLike, q_logits: ArrayLike, *, axis: int = -1,
                  where: Optional[ArrayLike] = None) -> jax.Array:
  """Cross-entropy of Q relative to P (soft labels P), in nats.

  CE(P, Q) = -sum_i p_i log q_i = H(P) + KL(P || Q). With one-hot P this is
  the usual softmax cross-entropy; it is +inf if P puts mass where Q has none.

  Args:
    p_logits: `[..., n, ...]` logits of the target distribution P.
    q_logits: logits of the model distribution Q, same shape.
    axis: the axis holding the categories.
    where: optional boolean mask broadcastable to the logits; False excludes.

  Returns:
    `[...]` cross-entropies (`axis` removed), in at least float32.

  Example:
    >>> round(float(cross_entropy(jnp.array([0., -jnp.inf]), jnp.zeros(2))), 4)
    0.6931
  """
  (p, q), axis, mask, _ = _prepare({"p_logits": p_logits, "q_logits": q_logits},
                                   axis, where)
  return _cross_entropy_core(p, q, mask, axis)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _kl_core(p_logits, q_logits, mask, axis):
  return _kl_fwd(p_logits, q_logits, mask, axis)[0]


def _kl_terms(p_logits, q_logits, mask, top_p, top_q):
  """exp(shifted p), shifted q and the cross terms e_p (shifted p - shifted q)."""
  dtype = top_p.dtype
  shifted_p = _masked(p_logits, mask, dtype) - top_p
  shifted_q = _masked(q_logits, mask, dtype) - top_q
  weights_p = jnp.exp(shifted_p)
  cross = jnp.where(weights_p > 0, weights_p * (shifted_p - shifted_q), 0.0)
  return weights_p, shifted_q, cross


def _kl_fwd(p_logits, q_logits, mask, axis):
  dtype = jnp.promote_types(jnp.result_type(p_logits, q_logits), jnp.float32)
  _, top_p, _ = _normalise(p_logits, mask, axis, dtype, with_sum=False)
  _, top_q, log_zq = _normalise(q_logits, mask, axis, dtype)
  weights_p, _, cross = _kl_terms(p_logits, q_logits, mask, top_p, top_q)
  total_p = jnp.sum(weights_p, axis=axis, keepdims=True)
  log_zp = _safe_log(total_p)
  # KL = E_p[shifted_p - shifted_q] - log Z_p + log Z_q: the expectation needs
  # only unnormalised weights, so it shares the pass that sums the normalisers.
  expectation = jnp.sum(cross, axis=axis, keepdims=True) / _nonzero_or_one(total_p)
  # The cancellation in E_p[.] - log Z_p + log Z_q can leave -1e-8 for P ~ Q.
  value = jnp.maximum(expectation - log_zp + log_zq, 0.0)
  stats = (top_p, log_zp, top_q, log_zq)
  return jnp.squeeze(value, axis), (p_logits, q_logits, mask, stats, value)


def _kl_bwd(axis, residuals, g):
  p_logits, q_logits, mask, stats, value = residuals
  top_p, log_zp, top_q, log_zq = stats
  # Rebuilt from the same expressions as the forward pass, which XLA shares
  # when both run in one jit: p = e_p / Z_p and
  # p (log p - log q - KL) = cross / Z_p - p (log Z_p - log Z_q + KL).
  weights_p, shifted_q, cross = _kl_terms(p_logits, q_logits, mask, top_p, top_q)
  inv_zp = jnp.exp(-log_zp)
  p = weights_p * inv_zp
  q = jnp.exp(shifted_q) * jnp.exp(-log_zq)
  g = jnp.expand_dims(g, axis)
  grad_p = g * jnp.where(weights_p > 0, cross * inv_zp - p * (log_zp - log_zq + value),
                         0.0)
  grad_q = g * (q - p)
  return _cotangent(grad_p, p_logits), _cotangent(grad_q, q_logits), None


_kl_core.defvjp(_kl_fwd, _kl_bwd)
_cross_entropy_core.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def kl(p_logits: ArrayLike, q_logits: ArrayLike, *, axis: int = -1,
       where: Optional[ArrayLike] = None) -> jax.Array:
  """Kullback-Leibler divergence KL(P || Q) between softmax(p_logits) and softmax(q_logits).

  KL(P || Q) = sum_i p_i log(p_i / q_i), with 0 log(0/q) = 0; +inf if some
  p_i > 0 has q_i = 0 (Kullback & Leibler 1951).

  Args:
    p_logits: `[..., n, ...]` logits of P (the first argument, e.g. a teacher).
    q_logits: logits of Q, same shape.
    axis: the axis holding the categories.
    where: optional boolean mask broadcastable to the logits; False excludes.

  Returns:
    `[...]` divergences (`axis` removed), in at least float32.

  Example:
    >>> round(float(kl(jnp.zeros(2), jnp.array([0., jnp.log(3.)]))), 4)
    0.1438
  """
  (p, q), axis, mask, _ = _prepare({"p_logits": p_logits, "q_logits": q_logits},
                                   axis, where)
  return _kl_core(p, q, mask, axis)


def reverse_kl(p_logits: ArrayLike, q_logits: ArrayLike, *, axis: int = -1,
               where: Optional[ArrayLike] = None) -> jax.Array:
  """Reverse KL divergence KL(Q || P), the mode-seeking direction.

  KL(Q || P) = sum_i q_i log(q_i / p_i) (Kullback & Leibler 1951); identical
  to `kl(q_logits, p_logits)`.

  Args:
    p_logits: `[..., n, ...]` logits of P.
    q_logits: logits of Q, same shape.
    axis: the axis holding the categories.
    where: optional boolean mask broadcastable to the logits; False excludes.

  Returns:
    `[...]` divergences (`axis` removed), in at least float32.

  Example:
    >>> round(float(reverse_kl(jnp.zeros(2), jnp.array([0., jnp.log(3.)]))), 4)
    0.1308
  """
  (p, q), axis, mask, _ = _prepare({"p_logits": p_logits, "q_logits": q_logits},
                                   axis, where)
  return _kl_core(q, p, mask, axis)


# ----------------------------------------------------------------------------
# Generalised Jensen-Shannon: normalisers, then one pass over the mixture.


def _js_stats(p_logits, q_logits, mask, axis, dtype):
  _, top_p, log_zp = _normalise(p_logits, mask, axis, dtype)
  _, top_q, log_zq = _normalise(q_logits, mask, axis, dtype)
  return top_p, log_zp, top_q, log_zq


def _js_parts(p_logits, q_logits, mask, beta, stats):
  """p, q and the terms p log(p/m), q log(q/m), in one pass.

  p is formed as exp(shifted) / Z with the same exp as the normalising sum,
  so inside one jit the forward and backward passes share a single exp per
  entry and input; the only other transcendental is log m.
  """
  top_p, log_zp, top_q, log_zq = stats
  dtype = top_p.dtype
  shifted_p = _masked(p_logits, mask, dtype) - top_p
  shifted_q = _masked(q_logits, mask, dtype) - top_q
  log_p, log_q = shifted_p - log_zp, shifted_q - log_zq
  p = jnp.exp(shifted_p) * jnp.exp(-log_zp)
  q = jnp.exp(shifted_q) * jnp.exp(-log_zq)
  beta = beta.astype(dtype)
  log_m = jnp.log(beta * p + (1 - beta) * q)
  # The mixture is at least each weighted component; the bound repairs the
  # case where tiny weighted probabilities underflow to 0 in the sum.
  log_m = jnp.maximum(log_m, jnp.maximum(jnp.log(beta) + log_p,
                                         jnp.log1p(-beta) + log_q))
  terms_p = jnp.where(p > 0, p * (log_p - log_m), 0.0)
  terms_q = jnp.where(q > 0, q * (log_q - log_m), 0.0)
  return p, q, terms_p, terms_q


def _xlogx(x: jax.Array) -> jax.Array:
  return jnp.where(x > 0, x * jnp.log(jnp.where(x > 0, x, 1.0)), 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _js_core(p_logits, q_logits, mask, beta, axis):
  return _js_fwd(p_logits, q_logits, mask, beta, axis)[0]


def _js_fwd(p_logits, q_logits, mask, beta, axis):
  dtype = jnp.promote_types(jnp.result_type(p_logits, q_logits), jnp.float32)
  stats = _js_stats(p_logits, q_logits, mask, axis, dtype)
  _, _, terms_p, terms_q = _js_parts(p_logits, q_logits, mask, beta, stats)
  kl_pm = jnp.sum(terms_p, axis=axis)
  kl_qm = jnp.sum(terms_q, axis=axis)
  b = beta.astype(dtype)
  # A zero weight silences its term even when that KL is infinite.
  value = (jnp.where(b > 0, b * kl_pm, 0.0)
           + jnp.where(b < 1, (1 - b) * kl_qm, 0.0))
  # 0 <= JS_beta <= binary entropy of beta (log 2 at beta = 1/2).
  bound = -(_xlogx(b) + _xlogx(1 - b))
  value = jnp.clip(value, 0.0, bound)
  return value, (p_logits, q_logits, mask, beta, stats, kl_pm, kl_qm)


def _js_bwd(axis, residuals, g):
  p_logits, q_logits, mask, beta, stats, kl_pm, kl_qm = residuals
  dtype = kl_pm.dtype
  p, q, terms_p, terms_q = _js_parts(p_logits, q_logits, mask, beta, stats)
  b = beta.astype(dtype)
  g_kept = jnp.expand_dims(g, axis)
  # d JS / d p_logits = beta p (log p - log m - KL(P||M)), symmetric for Q;
  # d JS / d beta = KL(P||M) - KL(Q||M). Written on the forward's per-entry
  # terms p log(p/m), so that inside one jit XLA computes them only once.
  grad_p = g_kept * jnp.where(b > 0, b * (terms_p - p * jnp.expand_dims(kl_pm, axis)),
                              0.0)
  grad_q = g_kept * jnp.where(b < 1, (1 - b) * (terms_q
                                                - q * jnp.expand_dims(kl_qm, axis)),
                              0.0)
  grad_beta = jnp.sum(g * (kl_pm - kl_qm)).astype(beta.dtype)
  return (_cotangent(grad_p, p_logits), _cotangent(grad_q, q_logits), None,
          grad_beta)


_js_core.defvjp(_js_fwd, _js_bwd)


def js(p_logits: ArrayLike, q_logits: ArrayLike, *, beta: ArrayLike = 0.5,
       axis: int = -1, where: Optional[ArrayLike] = None) -> jax.Array:
  """Generalised Jensen-Shannon divergence with mixture weight `beta`.

  JS_beta(P, Q) = beta KL(P || M) + (1 - beta) KL(Q || M), M = beta P + (1 - beta) Q
  (Lin 1991). At beta = 1/2 this is the standard, symmetric JS divergence,
  bounded by log 2; it is always finite. TensorFlow Probability's
  `tfp.vi.jensen_shannon` generator (self-normalised) gives twice the
  standard value: KL(P || M) + KL(Q || M).

  Args:
    p_logits: `[..., n, ...]` logits of P.
    q_logits: logits of Q, same shape.
    beta: scalar weight of P in the mixture, in [0, 1]; JS_0 = JS_1 = 0.
    axis: the axis holding the categories.
    where: optional boolean mask broadcastable to the logits; False excludes.

  Returns:
    `[...]` divergences (`axis` removed), in at least float32.

  Example:
    >>> p, q = jnp.array([0., -jnp.inf]), jnp.array([-jnp.inf, 0.])
    >>> round(float(js(p, q)), 4)  # disjoint supports: log 2
    0.6931
  """
  (p, q), axis, mask, dtype = _prepare({"p_logits": p_logits, "q_logits": q_logits},
                                       axis, where)
  _check_scalar(beta, "beta")
  _checks.check_in_range(beta, "beta", 0.0, 1.0)
  return _js_core(p, q, mask, jnp.asarray(beta, dtype), axis)


# ----------------------------------------------------------------------------
# Amari alpha and Renyi: expansions around the KL limits.


def _expansion_sum(log_w, log_other, eps, axis):
  """sum_i w_i expm1(eps log(o_i / w_i)) / eps = (sum w^(1-eps) o^eps - 1) / eps."""
  valid = log_w > -jnp.inf
  log_w = jnp.where(valid, log_w, 0.0)
  t = jnp.where(valid, log_other - log_w, 0.0)
  terms = _generators._weighted_expm1_ratio(log_w, jnp.exp(log_w), t, eps)
  return jnp.sum(jnp.where(valid, terms, 0.0), axis=axis)


def _branch(condition, if_true, if_false, operand):
  """Python branch for a concrete condition, `lax.cond` for a traced one."""
  if _checks.is_concrete_number(condition) or isinstance(condition, bool):
    return if_true(operand) if bool(condition) else if_false(operand)
  return jax.lax.cond(condition, if_true, if_false, operand)


def alpha_divergence(p_logits: ArrayLike, q_logits: ArrayLike, alpha: ArrayLike, *,
                     axis: int = -1, where: Optional[ArrayLike] = None) -> jax.Array:
  """Amari alpha-divergence.

  D_a(P || Q) = (1 - sum_i p_i^a q_i^(1-a)) / (a (1 - a)), with the limits
  D_1 = KL(P || Q) and D_0 = KL(Q || P) (Amari 1985; Amari 2009); a = 1/2
  gives 2 x squared Hellinger. The value is computed as
  -(1/a) sum_i p_i expm1((1-a) log(q_i/p_i)) / (1-a) for a >= 1/2 (and the
  mirror image for a < 1/2), which is exact at a in {0, 1} and loses no
  precision as a approaches them.

  Args:
    p_logits: `[..., n, ...]` logits of P.
    q_logits: logits of Q, same shape.
    alpha: finite real scalar (traced values allowed).
    axis: the axis holding the categories.
    where: optional boolean mask broadcastable to the logits; False excludes.

  Returns:
    `[...]` divergences (`axis` removed), in at least float32.

  Example:
    >>> p, q = jnp.zeros(2), jnp.array([0., jnp.log(3.)])
    >>> round(float(alpha_divergence(p, q, 0.5)), 4)  # 4 (1 - (1+sqrt 3)/(2 sqrt 2))
    0.1363
  """
  _check_scalar(alpha, "alpha")
  _check_finite(alpha, "alpha")
  if _checks.is_concrete_number(alpha) and float(alpha) in (0.0, 1.0):
    divergence = kl if float(alpha) == 1.0 else reverse_kl
    return divergence(p_logits, q_logits, axis=axis, where=where)
  log_p, log_q, axis = _pair_log_probs(p_logits, q_logits, axis, where)
  a = jnp.asarray(alpha, log_p.dtype)

  def near_one(a):
    return -_expansion_sum(log_p, log_q, 1 - a, axis) / a

  def near_zero(a):
    return -_expansion_sum(log_q, log_p, a, axis) / (1 - a)

  return _branch(a >= 0.5, near_one, near_zero, a)


def renyi(p_logits: ArrayLike, q_logits: ArrayLike, alpha: ArrayLike, *,
          axis: int = -1, where: Optional[ArrayLike] = None) -> jax.Array:
  """Renyi divergence of order alpha.

  R_a(P || Q) = log(sum_i p_i^a q_i^(1-a)) / (a - 1), a > 0, with
  R_1 = KL(P || Q) (Renyi 1961). For 1/2 <= a <= 2 it is evaluated as
  -log1p((1-a) S) / (1-a) with S = sum_i p_i expm1((1-a) log(q_i/p_i)) / (1-a),
  which is exact at a = 1 and continuous around it; elsewhere as a log-sum-exp
  of a log p + (1-a) log q.

  Args:
    p_logits: `[..., n, ...]` logits of P.
    q_logits: logits of Q, same shape.
    alpha: positive finite scalar order (traced values allowed).
    axis: the axis holding the categories.
    where: optional boolean mask broadcastable to the logits; False excludes.

  Returns:
    `[...]` divergences (`axis` removed), in at least float32.

  Example:
    >>> p, q = jnp.zeros(2), jnp.array([0., jnp.log(3.)])
    >>> round(float(renyi(p, q, 2.0)), 4)  # log(1/4 (4/1 + 4/3))
    0.2877
  """
  _check_scalar(alpha, "alpha")
  _check_finite(alpha, "alpha")
  _checks.check_positive(alpha, "alpha")
  if _checks.is_concrete_number(alpha) and float(alpha) == 1.0:
    return kl(p_logits, q_logits, axis=axis, where=where)
  log_p, log_q, axis = _pair_log_probs(p_logits, q_logits, axis, where)
  a = jnp.asarray(alpha, log_p.dtype)

  def near_one(a):
    eps = 1 - a
    total = _expansion_sum(log_p, log_q, eps, axis)
    is_zero = eps == 0
    safe_eps = jnp.where(is_zero, 1.0, eps)
    return jnp.where(is_zero, -total, -jnp.log1p(safe_eps * total) / safe_eps)

  def direct(a):
    has_p, has_q = log_p > -jnp.inf, log_q > -jnp.inf
    both = has_p & has_q
    exponent = (a * jnp.where(both, log_p, 0.0)
                + (1 - a) * jnp.where(both, log_q, 0.0))
    # Where q = 0 < p the sum is infinite for a > 1 and blind to it for a < 1.
    lone_p = jnp.where(a > 1, jnp.inf, -jnp.inf)
    exponent = jnp.where(both, exponent, jnp.where(has_p, lone_p, -jnp.inf))
    log_sum = jax.nn.logsumexp(exponent, axis=axis)
    empty = jnp.all(~has_p, axis=axis)
    return jnp.where(empty, 0.0, jnp.where(empty, 0.0, log_sum) / (a - 1))

  return _branch((a >= 0.5) & (a <= 2.0), near_one, direct, a)


# ----------------------------------------------------------------------------
# Pointwise divergences (autodiff through the masked log-softmax).


def total_variation(p_logits: ArrayLike, q_logits: ArrayLike, *, axis: int = -1,
                    where: Optional[ArrayLike] = None) -> jax.Array:
  """Total variation distance.

  TV(P, Q) = (1/2) sum_i |p_i - q_i|, in [0, 1]; the f-divergence of
  f(u) = |u - 1| / 2 (Csiszar 1967).

  Args:
    p_logits: `[..., n, ...]` logits of P.
    q_logits: logits of Q, same shape.
    axis: the axis holding the categories.
    where: optional boolean mask broadcastable to the logits; False excludes.

  Returns:
    `[...]` distances (`axis` removed), in at least float32.

  Example:
    >>> round(float(total_variation(jnp.zeros(2), jnp.array([0., jnp.log(3.)]))), 4)
    0.25
  """
  log_p, log_q, axis = _pair_log_probs(p_logits, q_logits, axis, where)
  return 0.5 * jnp.sum(jnp.abs(jnp.exp(log_p) - jnp.exp(log_q)), axis=axis)


def squared_hellinger(p_logits: ArrayLike, q_logits: ArrayLike, *, axis: int = -1,
                      where: Optional[ArrayLike] = None) -> jax.Array:
  """Squared Hellinger distance, without the 1/2 factor.

  H^2(P, Q) = sum_i (sqrt(p_i) - sqrt(q_i))^2 = 2 (1 - sum_i sqrt(p_i q_i)),
  in [0, 2] (Hellinger 1909); the f-divergence of (sqrt(u) - 1)^2. Summing
  the squared differences keeps the precision that the `1 - sum` form loses
  for close distributions.

  Args:
    p_logits: `[..., n, ...]` logits of P.
    q_logits: logits of Q, same shape.
    axis: the axis holding the categories.
    where: optional boolean mask broadcastable to the logits; False excludes.

  Returns:
    `[...]` values (`axis` removed), in at least float32.

  Example:
    >>> p, q = jnp.array([0., -jnp.inf]), jnp.array([-jnp.inf, 0.])
    >>> round(float(squared_hellinger(p, q)), 4)  # disjoint supports
    2.0
  """
  log_p, log_q, axis = _pair_log_probs(p_logits, q_logits, axis, where)
  return jnp.sum(jnp.square(jnp.exp(0.5 * log_p) - jnp.exp(0.5 * log_q)), axis=axis)


def chi_squared(p_logits: ArrayLike, q_logits: ArrayLike, *, axis: int = -1,
                where: Optional[ArrayLike] = None) -> jax.Array:
  """Pearson chi-squared divergence.

  chi^2(P || Q) = sum_i (p_i - q_i)^2 / q_i (Pearson 1900); +inf if some
  p_i > 0 has q_i = 0. Each term is formed from r = log(p_i / q_i) as
  q_i expm1(r)^2 for p_i <= q_i and exp(log p_i + r) expm1(-r)^2 otherwise,
  so a large ratio never overflows before it is weighted.

  Args:
    p_logits: `[..., n, ...]` logits of P.
    q_logits: logits of Q, same shape.
    axis: the axis holding the categories.
    where: optional boolean mask broadcastable to the logits; False excludes.

  Returns:
    `[...]` divergences (`axis` removed), in at least float32.

  Example:
    >>> round(float(chi_squared(jnp.zeros(2), jnp.array([0., jnp.log(3.)]))), 4)
    0.3333
  """
  log_p, log_q, axis = _pair_log_probs(p_logits, q_logits, axis, where)
  has_p, has_q = log_p > -jnp.inf, log_q > -jnp.inf
  both = has_p & has_q
  ratio = jnp.where(both, log_p - log_q, 0.0)
  above = ratio > 0
  r_above = jnp.where(above, ratio, 0.0)
  r_below = jnp.where(above, 0.0, ratio)
  safe_log_p = jnp.where(has_p, log_p, 0.0)
  terms = jnp.where(above,
                    jnp.exp(safe_log_p + r_above) * jnp.square(jnp.expm1(-r_above)),
                    jnp.exp(log_q) * jnp.square(jnp.expm1(r_below)))
  # p = 0 < q contributes q; q = 0 < p makes the divergence infinite.
  terms = jnp.where(both, terms, jnp.where(has_q, jnp.exp(log_q), 0.0))
  terms = jnp.where(has_p & ~has_q, jnp.inf, terms)
  return jnp.sum(terms, axis=axis)


def _lone_mass(log_w: jax.Array, lone: jax.Array, limit: float) -> jax.Array:
  """w * limit where only this side has mass; a constant +inf when limit is.

  Keeping an infinite limit out of the product keeps 0 * inf out of the
  gradient of every other entry.
  """
  if math.isinf(limit):
    return jnp.where(lone, limit, 0.0)
  return jnp.where(lone, jnp.exp(log_w) * limit, 0.0)


def f_divergence(p_logits: ArrayLike, q_logits: ArrayLike,
                 f: _generators.Generator, *, axis: int = -1,
                 where: Optional[ArrayLike] = None) -> jax.Array:
  """Csiszar f-divergence for a generator from `divlab.divergences.generators`.

  D_f(P || Q) = sum_i q_i f(p_i / q_i) (Csiszar 1967; Ali & Silvey 1966), the
  convention of TFP's E_q[f(p/q)] with p the first argument. Each term is
  evaluated from the log-ratio r = log(p_i/q_i): q_i f(e^r) for r <= 0 and
  p_i f_dual(e^-r) for r > 0, with f_dual(v) = v f(1/v), so the ratio is never
  exponentiated into an overflow. Entries with q_i = 0 < p_i contribute
  p_i lim_{u->inf} f(u)/u, entries with p_i = 0 < q_i contribute q_i f(0+);
  a term whose larger probability underflows to 0 in the compute dtype
  (below ~1e-45 in float32) is dropped.

  Args:
    p_logits: `[..., n, ...]` logits of P.
    q_logits: logits of Q, same shape.
    f: a `generators.Generator`, e.g. `generators.kl_forward()`.
    axis: the axis holding the categories.
    where: optional boolean mask broadcastable to the logits; False excludes.

  Returns:
    `[...]` divergences (`axis` removed), in at least float32.

  Example:
    >>> from divlab.divergences import generators
    >>> p, q = jnp.zeros(2), jnp.array([0., jnp.log(3.)])
    >>> round(float(f_divergence(p, q, generators.pearson())), 4)
    0.3333
  """
  if not isinstance(f, _generators.Generator):
    raise ValueError(
        f"`f` must be a divlab.divergences.generators.Generator, got {type(f).__name__}.")
  log_p, log_q, axis = _pair_log_probs(p_logits, q_logits, axis, where)
  has_p, has_q = log_p > -jnp.inf, log_q > -jnp.inf
  both = has_p & has_q
  p, q = jnp.exp(log_p), jnp.exp(log_q)
  ratio = jnp.where(both, log_p - log_q, 0.0)
  # Each term is expanded around the larger of p and q. A weight that
  # underflows to 0 drops its term, so 0 * f(huge ratio) never turns NaN.
  from_p = both & (ratio > 0) & (p > 0)
  from_q = both & (ratio <= 0) & (q > 0)
  terms = jnp.where(
      from_p, p * f.dual_f_of_log(jnp.where(from_p, -ratio, 0.0)),
      jnp.where(from_q, q * f.f_of_log(jnp.where(from_q, ratio, 0.0)), 0.0))
  only_q = _lone_mass(log_q, has_q & ~has_p, f.f_at_zero)
  only_p = _lone_mass(log_p, has_p & ~has_q, f.dual_at_zero)
  terms = jnp.where(both, terms, only_q + only_p)
  return jnp.sum(terms, axis=axis)
