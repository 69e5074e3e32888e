"""Divergences between categorical distributions given by logits.

Every function takes logits -- any real array, normalised inside by a masked
log-softmax over `axis`, so log-probabilities work as well -- and returns one
value per distribution: the input shape with `axis` removed, never reduced over
the batch.

Masking: `where` is a boolean (or integer) array broadcastable to the logits.
A False entry is excluded from both distributions, exactly as if both inputs
held a `-inf` logit there. A distribution whose entries are all excluded gives 0.

Dtype policy: bfloat16/float16/float32 logits are read in their own dtype and
accumulated in float32 (float64 stays float64); the result is returned in
that compute dtype, and gradients come back in each input's own dtype.

Numerics: everything is evaluated in log space. Zero probabilities and `-inf`
logits give finite values with zero gradients when they occur in both inputs;
logits of magnitude 1e4 are fine. A divergence that is mathematically infinite
(for KL, P putting mass where Q has none) is returned as `+inf`. Special
values are treated alike by every function: a row holding a NaN gives NaN
(value and gradient); a `+inf` logit is the limit of a growing logit, so a row
with `+inf` entries is the point mass on them (the values equal those of a
logit of 1e30, or `+inf` where that limit is infinite); a concrete parameter
outside its domain raises ValueError, a traced one (under `jit`) gives NaN.

Speed: `entropy`, `cross_entropy`, `kl` (and `reverse_kl`) and `js` use
`jax.custom_vjp` rules that keep only per-row statistics (a max and a
log-normaliser per distribution, O(rows)) and recompute per-entry terms in the
backward pass. Off the CPU an optimisation barrier stops XLA from sharing
`[rows, V]` terms between the passes (written to HBM, they cost more than
recomputing), and on CUDA the forward statistics of KL and JS come from
one-pass Pallas kernels that read each input once (`_pallas_stats`; last axis,
no mask). On the CPU the forward takes two fused passes and shares its
per-entry terms with the backward inside one jit. These four support reverse
mode (`grad`, `vjp`, and forward-over-reverse such as `jax.hessian`), not pure
forward mode (`jax.jvp`, `jax.jacfwd`) of the function itself.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from divlab import _checks
from divlab.divergences import _logspace
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


def _check_finite(value: Any, name: str) -> None:
  if _checks.is_concrete_number(value) and not math.isfinite(float(value)):
    raise ValueError(f"`{name}` must be finite, got {value!r}.")


# ----------------------------------------------------------------------------
# Shared numerics.
#
# Special values: a NaN anywhere in a row makes that row's value (and its
# gradient) NaN; a +inf logit is the limit of a growing logit, so a row with
# +inf entries is the point mass (uniform over its +inf entries); a row whose
# entries are all -inf or excluded is empty. `_row_max` keeps NaN and +inf and
# `_shift` maps x - max to 0 where x equals the max, which gives exactly these
# limits everywhere below without any per-row branching.


def _masked(x: jax.Array, mask: Optional[jax.Array], dtype) -> jax.Array:
  x = x.astype(dtype)
  return x if mask is None else jnp.where(mask, x, -jnp.inf)


def _row_max(x: jax.Array, axis: int) -> jax.Array:
  """Max over `axis` (kept); NaN and +inf stay, an all -inf row gets 0."""
  top = jnp.max(x, axis=axis, keepdims=True)
  return jnp.where(top == -jnp.inf, 0.0, top)


_shift = _logspace.shift


def _safe_log(total: jax.Array) -> jax.Array:
  """log of a normaliser; an empty row (total 0) gets 0, NaN stays NaN."""
  return jnp.log(jnp.where(total == 0, 1.0, total))


def _nonzero_or_one(total: jax.Array) -> jax.Array:
  return jnp.where(total == 0, 1.0, total)


def _nan_rows(value: jax.Array, *tops: jax.Array, axis: int) -> jax.Array:
  """NaN where any of the per-row maxima is NaN (a NaN input in that row)."""
  bad = functools.reduce(jnp.logical_or, [jnp.isnan(jnp.squeeze(t, axis)) for t in tops])
  return jnp.where(bad, jnp.nan, value)


def _log_softmax_with_top(x: jax.Array, mask: Optional[jax.Array], axis: int, dtype):
  """(log p, row max); autodiff-friendly, the max carries no gradient."""
  x = _masked(x, mask, dtype)
  top = jax.lax.stop_gradient(_row_max(x, axis))
  shifted = _shift(x, top)
  return shifted - _safe_log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True)), top


def masked_log_softmax(logits: ArrayLike, *, axis: int = -1,
                       where: Optional[ArrayLike] = None) -> jax.Array:
  """Log-softmax over `axis` with excluded entries set to `-inf`.

  log p_i = x_i - log sum_{j in where} exp(x_j) for included i, -inf otherwise.
  A row with every entry excluded (or every logit -inf) is all -inf, not NaN;
  a row with +inf logits is the point mass on them (log p = -log k on its k
  +inf entries); a row holding a NaN is all NaN. Gradients are finite
  everywhere and zero at excluded entries.

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
  return _log_softmax_with_top(x, mask, axis, dtype)[0]


def _pair_log_probs(p_logits, q_logits, axis, where):
  """(log p, log q, axis, finish): `finish(value)` makes NaN rows NaN."""
  (p, q), axis, mask, dtype = _prepare({"p_logits": p_logits, "q_logits": q_logits},
                                       axis, where)
  lp, top_p = _log_softmax_with_top(p, mask, axis, dtype)
  lq, top_q = _log_softmax_with_top(q, mask, axis, dtype)
  return lp, lq, axis, lambda value: _nan_rows(value, top_p, top_q, axis=axis)


def _cotangent(grad: jax.Array, like: jax.Array) -> jax.Array:
  return grad.astype(like.dtype)


# ----------------------------------------------------------------------------
# Per-row statistics of a pair of logit arrays, the forward pass of KL and JS.
#
# (top_p, sum_p, top_q, sum_q[, cross]) with sum_p = sum_i exp(shift(p_i)) and
# cross = sum_i exp(shift(p_i)) (shift(p_i) - shift(q_i)), shift(x) = x - top.
# Two ways to get them, chosen per backend when the program is lowered:
#
# * two passes (XLA, every backend): a max, then one fused pass for the sums.
#   On the CPU, reductions run as loops over materialised operands, and
#   sharing the forward's per-entry terms with the backward (same expressions,
#   one jit) keeps KL at one exp per logit.
# * one pass (CUDA, last axis, no mask; the branch exists only in a process
#   with a CUDA backend, so CPU programs do not trace it): Pallas kernels
#   (`_pallas_stats`)
#   that read each input once with an online max. On a GPU the budget is HBM
#   traffic: inputs read once forward and once backward, gradients written
#   once, nothing of the inputs' size in between. XLA's own variadic
#   reduction with the same combiner measured slower than two passes on an
#   H200, so there is no XLA one-pass variant.
#
# `_FORWARD` overrides the choice for tests and benchmarks: "two_pass",
# "pallas", or "pallas_interpret" (the kernel run by the Pallas interpreter on
# any backend); None picks by backend.

_FORWARD: Optional[str] = None


def _with_xla_tangents(kernel_fn, xla_fn):
  """`kernel_fn` for values, the JVP of `xla_fn` (the same function) for tangents.

  Keeps forward-mode and forward-over-reverse uses (`jax.hessian`) working
  through a kernel that has no derivative rules of its own.
  """
  fn = jax.custom_jvp(kernel_fn)
  fn.defjvp(lambda primals, tangents: (kernel_fn(*primals),
                                       jax.jvp(xla_fn, primals, tangents)[1]))
  return fn


def _kernel_stats(p_logits, q_logits, with_cross, interpret):
  """Row statistics from the one-pass kernel, for the last axis and no mask."""
  from divlab.divergences import _pallas_stats  # pylint: disable=import-outside-toplevel
  shape = p_logits.shape
  flat = [x.reshape(-1, shape[-1]) for x in (p_logits, q_logits)]
  stats = _pallas_stats.row_stats(*flat, with_cross=with_cross, interpret=interpret)
  stats = [s.reshape(shape[:-1] + (1,)) for s in stats]
  top_p, total_p, top_q, total_q = stats[:4]
  out = (jnp.where(top_p == -jnp.inf, 0.0, top_p), total_p,
         jnp.where(top_q == -jnp.inf, 0.0, top_q), total_q)
  if with_cross:
    # Q empty where P is not: every p_i > 0 meets q_i = 0, so KL is infinite
    # (the two-pass form gets this from shift(q) = -inf).
    out += (jnp.where((top_q == -jnp.inf) & (total_p > 0), jnp.inf, stats[4]),)
  return out


def _two_pass_stats(p, q, axis, with_cross):
  top_p, top_q = _row_max(p, axis), _row_max(q, axis)
  shifted_p, shifted_q = _shift(p, top_p), _shift(q, top_q)
  weights_p = jnp.exp(shifted_p)
  out = (top_p, jnp.sum(weights_p, axis=axis, keepdims=True),
         top_q, jnp.sum(jnp.exp(shifted_q), axis=axis, keepdims=True))
  if with_cross:
    cross = jnp.where(weights_p == 0, 0.0, weights_p * (shifted_p - shifted_q))
    out += (jnp.sum(cross, axis=axis, keepdims=True),)
  return out


def _pair_stats(p_logits, q_logits, mask, axis, dtype, with_cross):
  """Row statistics of two raw logit arrays (masked and cast inside)."""

  def two_pass(p_logits, q_logits):
    return _two_pass_stats(_masked(p_logits, mask, dtype), _masked(q_logits, mask, dtype),
                           axis, with_cross)

  if _FORWARD == "two_pass" or not _kernel_fits(p_logits, q_logits, mask, axis, dtype):
    return two_pass(p_logits, q_logits)

  def kernel(p_logits, q_logits, interpret=False):
    return _with_xla_tangents(
        lambda p, q: _kernel_stats(p, q, with_cross, interpret), two_pass)(p_logits, q_logits)

  if _FORWARD in ("pallas", "pallas_interpret"):
    return kernel(p_logits, q_logits, _FORWARD == "pallas_interpret")
  return jax.lax.platform_dependent(p_logits, q_logits, default=two_pass, cuda=kernel)


@functools.lru_cache(maxsize=None)
def _cuda_present() -> bool:
  """Whether this process has a CUDA backend (else the kernel branch is not traced)."""
  try:
    return bool(jax.devices("cuda"))
  except RuntimeError:
    return False


def _kernel_fits(p_logits, q_logits, mask, axis, dtype) -> bool:
  """The one-pass kernels take the last axis, no mask, one float dtype <= 32 bits."""
  if _FORWARD is None and not _cuda_present():
    return False
  return (mask is None and axis == p_logits.ndim - 1 and dtype == jnp.float32
          and p_logits.dtype == q_logits.dtype
          and jnp.issubdtype(p_logits.dtype, jnp.floating))


def _fence(*arrays):
  """Off the CPU, stops XLA from sharing `[..., V]` terms between the passes.

  Without it XLA computes a per-entry term once for the forward reduction and
  the backward, which on a GPU means writing it to HBM and reading it back: more
  traffic and memory than recomputing it from the inputs. On the CPU sharing
  is the cheaper choice.
  """
  return jax.lax.platform_dependent(
      arrays, cpu=lambda xs: xs, default=jax.lax.optimization_barrier)


# ----------------------------------------------------------------------------
# Entropy, cross-entropy, KL: custom VJPs that keep only per-row statistics.


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _entropy_core(logits, mask, axis):
  return _entropy_fwd(logits, mask, axis)[0]


def _entropy_fwd(logits, mask, axis):
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  x = _masked(logits, mask, dtype)
  top = _row_max(x, axis)
  shifted = _shift(x, top)
  weights = jnp.exp(shifted)
  total = jnp.sum(weights, axis=axis, keepdims=True)
  moment = jnp.sum(jnp.where(weights == 0, 0.0, weights * shifted),
                   axis=axis, keepdims=True)
  log_z = _safe_log(total)
  # Round-off must not make a non-negative quantity negative.
  value = jnp.maximum(log_z - moment / _nonzero_or_one(total), 0.0)
  return jnp.squeeze(value, axis), (logits, mask, top, log_z, value)


def _entropy_bwd(axis, residuals, g):
  logits, mask, top, log_z, value = _fence(*residuals)
  log_p = _shift(_masked(logits, mask, top.dtype), top) - log_z
  p = jnp.exp(log_p)
  g = jnp.expand_dims(g, axis)
  grad = -g * jnp.where(p == 0, 0.0, p * (log_p + value))
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
  p, q = _masked(p_logits, mask, dtype), _masked(q_logits, mask, dtype)
  top_p, top_q = _row_max(p, axis), _row_max(q, axis)
  shifted_q = _shift(q, top_q)
  weights_p = jnp.exp(_shift(p, top_p))
  total_p = jnp.sum(weights_p, axis=axis, keepdims=True)
  log_zq = _safe_log(jnp.sum(jnp.exp(shifted_q), axis=axis, keepdims=True))
  cross = jnp.sum(jnp.where(weights_p == 0, 0.0, weights_p * shifted_q),
                  axis=axis, keepdims=True)
  value = jnp.maximum(log_zq - cross / _nonzero_or_one(total_p), 0.0)
  stats = (top_p, _safe_log(total_p), top_q, log_zq)
  return jnp.squeeze(value, axis), (p_logits, q_logits, mask, stats, value)


def _cross_entropy_bwd(axis, residuals, g):
  p_logits, q_logits, mask, stats, value = _fence(*residuals)
  log_p, log_q = _recompute_log_probs(p_logits, q_logits, mask, stats)
  p, q = jnp.exp(log_p), jnp.exp(log_q)
  g = jnp.expand_dims(g, axis)
  grad_p = -g * jnp.where(p == 0, 0.0, p * (log_q + value))
  grad_q = g * (q - p)
  return _cotangent(grad_p, p_logits), _cotangent(grad_q, q_logits), None


def _recompute_log_probs(p_logits, q_logits, mask, stats):
  top_p, log_zp, top_q, log_zq = stats
  dtype = top_p.dtype
  return (_shift(_masked(p_logits, mask, dtype), top_p) - log_zp,
          _shift(_masked(q_logits, mask, dtype), top_q) - log_zq)


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


def _kl_fwd(p_logits, q_logits, mask, axis):
  dtype = jnp.promote_types(jnp.result_type(p_logits, q_logits), jnp.float32)
  top_p, total_p, top_q, total_q, cross = _pair_stats(p_logits, q_logits, mask, axis,
                                                      dtype, True)
  log_zp, log_zq = _safe_log(total_p), _safe_log(total_q)
  # KL = E_p[shift(p) - shift(q)] - log Z_p + log Z_q, and the expectation is
  # cross / Z_p. The cancellation can leave -1e-8 for P ~ Q.
  value = jnp.maximum(cross / _nonzero_or_one(total_p) - log_zp + log_zq, 0.0)
  # A P without mass (every entry -inf or excluded) sums over nothing: 0.
  value = jnp.where(total_p == 0, 0.0, value)
  stats = (top_p, log_zp, top_q, log_zq)
  return jnp.squeeze(value, axis), (p_logits, q_logits, mask, stats, value)


def _kl_bwd(axis, residuals, g):
  p_logits, q_logits, mask, stats, value = _fence(*residuals)
  top_p, log_zp, top_q, log_zq = stats
  dtype = top_p.dtype
  # Recomputed from the inputs and the per-row statistics:
  # d KL / d p_logits = p (log p - log q - KL), d KL / d q_logits = q - p.
  shifted_p = _shift(_masked(p_logits, mask, dtype), top_p)
  shifted_q = _shift(_masked(q_logits, mask, dtype), top_q)
  weights_p = jnp.exp(shifted_p)
  p = weights_p * jnp.exp(-log_zp)
  q = jnp.exp(shifted_q) * jnp.exp(-log_zq)
  g = jnp.expand_dims(g, axis)
  log_ratio = (shifted_p - shifted_q) - (log_zp - log_zq)
  grad_p = g * jnp.where(weights_p == 0, 0.0, p * (log_ratio - value))
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
# Generalised Jensen-Shannon: row statistics, then one pass over the mixture.


def _js_parts(p_logits, q_logits, mask, beta, stats):
  """p, q and the terms p log(p/m), q log(q/m), in one pass (see `_logspace`)."""
  top_p, log_zp, top_q, log_zq = stats
  dtype = top_p.dtype
  return _logspace.mixture_terms(_masked(p_logits, mask, dtype), _masked(q_logits, mask, dtype),
                                 top_p, log_zp, top_q, log_zq, beta.astype(dtype))


def _mixture_sums(p_logits, q_logits, mask, beta, stats, axis, dtype):
  """Per-row KL(P || M) and KL(Q || M): one XLA pass, or the kernel on CUDA."""

  def xla(p_logits, q_logits, beta, *stats):
    _, _, terms_p, terms_q = _js_parts(p_logits, q_logits, mask, beta, stats)
    return jnp.sum(terms_p, axis=axis), jnp.sum(terms_q, axis=axis)

  args = (p_logits, q_logits, beta) + tuple(stats)
  if _FORWARD == "two_pass" or not _kernel_fits(p_logits, q_logits, mask, axis, dtype):
    return xla(*args)

  def kernel(p_logits, q_logits, beta, *stats, interpret=False):
    # Imported here: Pallas is only needed once a kernel is traced.
    from divlab.divergences import _pallas_stats  # pylint: disable=import-outside-toplevel
    shape = p_logits.shape
    flat = [x.reshape(-1, shape[-1]) for x in (p_logits, q_logits)]
    flat_stats = [s.reshape(-1) for s in stats]
    sums = _pallas_stats.mixture_sums(*flat, *flat_stats, beta, interpret=interpret)
    return tuple(s.reshape(shape[:-1]) for s in sums)

  def kernel_with_tangents(*args, interpret=False):
    return _with_xla_tangents(functools.partial(kernel, interpret=interpret), xla)(*args)

  if _FORWARD in ("pallas", "pallas_interpret"):
    return kernel_with_tangents(*args, interpret=_FORWARD == "pallas_interpret")
  return jax.lax.platform_dependent(*args, default=xla, cuda=kernel_with_tangents)


def _xlogx(x: jax.Array) -> jax.Array:
  return jnp.where(x > 0, x * jnp.log(jnp.where(x > 0, x, 1.0)), 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _js_core(p_logits, q_logits, mask, beta, axis):
  return _js_fwd(p_logits, q_logits, mask, beta, axis)[0]


def _js_fwd(p_logits, q_logits, mask, beta, axis):
  dtype = jnp.promote_types(jnp.result_type(p_logits, q_logits), jnp.float32)
  top_p, total_p, top_q, total_q = _pair_stats(p_logits, q_logits, mask, axis, dtype,
                                                False)
  stats = (top_p, _safe_log(total_p), top_q, _safe_log(total_q))
  kl_pm, kl_qm = _mixture_sums(p_logits, q_logits, mask, beta, stats, axis, dtype)
  b = beta.astype(dtype)
  # A zero weight silences its term even when that KL is infinite.
  value = (jnp.where(b > 0, b * kl_pm, 0.0)
           + jnp.where(b < 1, (1 - b) * kl_qm, 0.0))
  # 0 <= JS_beta <= binary entropy of beta (log 2 at beta = 1/2).
  bound = -(_xlogx(b) + _xlogx(1 - b))
  value = jnp.clip(value, 0.0, bound)
  # A traced beta outside [0, 1] has no divergence: NaN, not a number.
  value = jnp.where((b >= 0) & (b <= 1), value, jnp.nan)
  return value, (p_logits, q_logits, mask, beta, stats, kl_pm, kl_qm)


def _js_bwd(axis, residuals, g):
  p_logits, q_logits, mask, beta, stats, kl_pm, kl_qm = _fence(*residuals)
  dtype = kl_pm.dtype
  p, q, terms_p, terms_q = _js_parts(p_logits, q_logits, mask, beta, stats)
  b = beta.astype(dtype)
  g_kept = jnp.expand_dims(g, axis)
  # d JS / d p_logits = beta p (log p - log m - KL(P||M)), symmetric for Q;
  # d JS / d beta = KL(P||M) - KL(Q||M).
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
    beta: scalar weight of P in the mixture, in [0, 1]; JS_0 = JS_1 = 0. A
      concrete value outside raises ValueError; a traced one gives NaN.
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
    alpha: finite real scalar (traced values allowed; a traced non-finite
      value gives NaN).
    axis: the axis holding the categories.
    where: optional boolean mask broadcastable to the logits; False excludes.

  Returns:
    `[...]` divergences (`axis` removed), in at least float32.

  Example:
    >>> p, q = jnp.zeros(2), jnp.array([0., jnp.log(3.)])
    >>> round(float(alpha_divergence(p, q, 0.5)), 4)  # 4 (1 - (1+sqrt 3)/(2 sqrt 2))
    0.1363
  """
  _checks.check_scalar(alpha, "alpha")
  _check_finite(alpha, "alpha")
  if _checks.is_concrete_number(alpha) and float(alpha) in (0.0, 1.0):
    divergence = kl if float(alpha) == 1.0 else reverse_kl
    return divergence(p_logits, q_logits, axis=axis, where=where)
  log_p, log_q, axis, finish = _pair_log_probs(p_logits, q_logits, axis, where)
  a = jnp.asarray(alpha, log_p.dtype)

  def near_one(a):
    return -_expansion_sum(log_p, log_q, 1 - a, axis) / a

  def near_zero(a):
    return -_expansion_sum(log_q, log_p, a, axis) / (1 - a)

  value = _branch(a >= 0.5, near_one, near_zero, a)
  # A traced non-finite alpha has no divergence: NaN, not a number.
  return finish(jnp.where(jnp.isfinite(a), value, jnp.nan))


# Largest log p_i + (1-a) log(q_i/p_i) a row may hold for the expansion form of
# `renyi`: far below float32's overflow at 88.7 even after summing 128k terms
# (e^60 * 2^17 < e^73), and the sum is then ~1e26 and log1p(sum - 1) = log(sum).
_RENYI_LOG_TERM_LIMIT = 60.0


def renyi(p_logits: ArrayLike, q_logits: ArrayLike, alpha: ArrayLike, *,
          axis: int = -1, where: Optional[ArrayLike] = None) -> jax.Array:
  """Renyi divergence of order alpha.

  R_a(P || Q) = log(sum_i p_i^a q_i^(1-a)) / (a - 1), a > 0, with
  R_1 = KL(P || Q) (Renyi 1961). For 1/2 <= a <= 2 it is evaluated as
  -log1p((1-a) S) / (1-a) with S = sum_i p_i expm1((1-a) log(q_i/p_i)) / (1-a),
  which is exact at a = 1 and continuous around it; elsewhere, and in rows
  where a term p_i^a q_i^(1-a) exceeds e^60 (the sum would overflow float32),
  as a log-sum-exp of a log p + (1-a) log q.

  Args:
    p_logits: `[..., n, ...]` logits of P.
    q_logits: logits of Q, same shape.
    alpha: positive finite scalar order (traced values allowed; a traced value
      that is not positive and finite gives NaN).
    axis: the axis holding the categories.
    where: optional boolean mask broadcastable to the logits; False excludes.

  Returns:
    `[...]` divergences (`axis` removed), in at least float32.

  Example:
    >>> p, q = jnp.zeros(2), jnp.array([0., jnp.log(3.)])
    >>> round(float(renyi(p, q, 2.0)), 4)  # log(1/4 (4/1 + 4/3))
    0.2877
  """
  _checks.check_scalar(alpha, "alpha")
  _check_finite(alpha, "alpha")
  _checks.check_positive(alpha, "alpha")
  if _checks.is_concrete_number(alpha) and float(alpha) == 1.0:
    return kl(p_logits, q_logits, axis=axis, where=where)
  log_p, log_q, axis, finish = _pair_log_probs(p_logits, q_logits, axis, where)
  a = jnp.asarray(alpha, log_p.dtype)

  def near_one(a):
    eps = 1 - a
    # The expansion sums p_i (q_i/p_i)^eps - 1, which overflows float32 once a
    # term passes e^88 although the divergence, its log over (a - 1), is
    # finite. Rows whose largest log-term exceeds _RENYI_LOG_TERM_LIMIT take
    # the log-sum-exp form (no precision to lose there: the sum is far from
    # 1); each branch sees neutral inputs (q = p) in the other's rows, so
    # neither puts NaN into the gradient of a row it does not decide.
    has_p = log_p > -jnp.inf
    safe_log_p = jnp.where(has_p, log_p, 0.0)
    log_terms = jnp.where(has_p, safe_log_p + eps * (log_q - safe_log_p), -jnp.inf)
    top = jnp.max(log_terms, axis=axis, keepdims=True)
    large = jnp.isfinite(top) & (top > _RENYI_LOG_TERM_LIMIT)
    total = _expansion_sum(log_p, jnp.where(large, log_p, log_q), eps, axis)
    is_zero = eps == 0
    safe_eps = jnp.where(is_zero, 1.0, eps)
    value = jnp.where(is_zero, -total, -jnp.log1p(safe_eps * total) / safe_eps)
    return jnp.where(jnp.squeeze(large, axis), direct(a, jnp.where(large, log_q, log_p)),
                     value)

  def direct(a, log_q=log_q):
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

  value = _branch((a >= 0.5) & (a <= 2.0), near_one, direct, a)
  # A traced alpha outside (0, inf) has no Renyi divergence: NaN, not a number.
  return finish(jnp.where((a > 0) & jnp.isfinite(a), value, jnp.nan))


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
  log_p, log_q, axis, finish = _pair_log_probs(p_logits, q_logits, axis, where)
  return finish(0.5 * jnp.sum(jnp.abs(jnp.exp(log_p) - jnp.exp(log_q)), axis=axis))


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
  log_p, log_q, axis, finish = _pair_log_probs(p_logits, q_logits, axis, where)
  return finish(jnp.sum(jnp.square(jnp.exp(0.5 * log_p) - jnp.exp(0.5 * log_q)),
                        axis=axis))


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
  log_p, log_q, axis, finish = _pair_log_probs(p_logits, q_logits, axis, where)
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
  return finish(jnp.sum(terms, axis=axis))


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
  log_p, log_q, axis, finish = _pair_log_probs(p_logits, q_logits, axis, where)
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
  return finish(jnp.sum(terms, axis=axis))
