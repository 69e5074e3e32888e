"""One-pass row statistics of two logit arrays as a Pallas (Triton) GPU kernel.

For every row of two `[rows, V]` logit arrays p and q this computes, reading
each input exactly once,

  top_p = max_i p_i,  sum_p = sum_i exp(p_i - top_p),
  top_q = max_i q_i,  sum_q = sum_i exp(q_i - top_q),
  cross = sum_i exp(p_i - top_p) ((p_i - top_p) - (q_i - top_q)),

the forward statistics of KL (cross) and JS (the normalisers). It is the
online softmax of Milakov & Gimelshein (2018, "Online normalizer calculation
for softmax"): the row is walked in blocks of `block` columns; each block's
maximum updates the running maxima, the running sums are rescaled once per
block, and every entry costs one exp per input -- the hardware's exp2 of
x log2(e), two instructions, where `jnp.exp` would lower to a ten-instruction
accurate routine -- and the shift by the row max is the three-operation
`_logspace.shift_plain`. Each input is read once, so what separates a kernel
from the bandwidth floor is its arithmetic: about 20 instructions per logit
in the compiled loop (`benchmarks/kernel_instructions.py`) against 2-4 bytes
read. The cross term moves with both maxima: when they grow by (dp, dq),
cross becomes exp(-dp) (cross + (dq - dp) sum_p).

Special values follow `categorical`: +inf entries make the row a point mass,
-inf entries have no mass, a NaN poisons the row's sums (so every value and
gradient built from them). Everything is accumulated in float32 whatever the
input dtype.

This file holds only the kernel; `categorical` decides when to use it (CUDA,
last axis, no mask) and wraps it with the derivative rules.
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from divlab.divergences import _logspace

# Columns per loop step and warps per row. Read when a kernel is traced, so a
# benchmark can sweep them (`benchmarks/divergences.py --kernel_configs`);
# 2048 x 8 warps keeps each kernel under 64 registers a thread.
BLOCK = 2048
NUM_WARPS = 8


_LOG2_E = 1.4426950408889634
_LN_2 = 0.6931471805599453


def _exp(x):
  """exp(x) as 2^(x log2 e): one multiply and the hardware exp2 per entry."""
  return jnp.exp2(x * _LOG2_E)


def _joint(m_old, m_block):
  """Joint max, and the old side's rescale factor exp(-d) and shift d >= 0."""
  m = jnp.maximum(m_old, m_block)
  old_on_top = m_old >= m_block
  gap = jnp.where(m_old == m_block, 0.0, jnp.abs(m_old - m_block))
  factor = jnp.where(old_on_top, 1.0, jnp.exp(-gap))
  shift = jnp.where(old_on_top, 0.0, gap)
  return m, factor, shift


def _kernel(p_ref, q_ref, top_p_ref, sum_p_ref, top_q_ref, sum_q_ref, *cross_ref,
            block: int):
  width = p_ref.shape[0]
  with_cross = bool(cross_ref)

  def body(k, carry):
    top_p, sum_p, top_q, sum_q, cross = carry
    cols = k * block + jnp.arange(block)
    valid = cols < width
    p = plgpu.load(p_ref.at[cols], mask=valid, other=-jnp.inf).astype(jnp.float32)
    q = plgpu.load(q_ref.at[cols], mask=valid, other=-jnp.inf).astype(jnp.float32)
    new_top_p, factor_p, shift_p = _joint(top_p, jnp.max(p))
    new_top_q, factor_q, shift_q = _joint(top_q, jnp.max(q))
    # A row without mass so far keeps its entries at -inf (not -inf - -inf).
    shifted_p = _logspace.shift_plain(p, jnp.where(new_top_p == -jnp.inf, 0.0, new_top_p))
    shifted_q = _logspace.shift_plain(q, jnp.where(new_top_q == -jnp.inf, 0.0, new_top_q))
    weights_p = _exp(shifted_p)
    if with_cross:
      moved = jnp.where((factor_p == 0) | (sum_p == 0), 0.0,
                        factor_p * (cross + (shift_q - shift_p) * sum_p))
      terms = jnp.where(weights_p == 0, 0.0, weights_p * (shifted_p - shifted_q))
      cross = moved + jnp.sum(terms)
    sum_p = sum_p * factor_p + jnp.sum(weights_p)
    sum_q = sum_q * factor_q + jnp.sum(_exp(shifted_q))
    return new_top_p, sum_p, new_top_q, sum_q, cross

  start = (jnp.float32(-jnp.inf), jnp.float32(0.0), jnp.float32(-jnp.inf),
           jnp.float32(0.0), jnp.float32(0.0))
  top_p, sum_p, top_q, sum_q, cross = jax.lax.fori_loop(
      0, pl.cdiv(width, block), body, start)
  top_p_ref[...] = top_p
  sum_p_ref[...] = sum_p
  top_q_ref[...] = top_q
  sum_q_ref[...] = sum_q
  if with_cross:
    cross_ref[0][...] = cross


def row_stats(p: jax.Array, q: jax.Array, *, with_cross: bool, interpret: bool = False,
              block: Optional[int] = None):
  """Row statistics of `[rows, V]` logits: (top_p, sum_p, top_q, sum_q[, cross]).

  Args:
    p: `[rows, V]` logits of P (float32, bfloat16 or float16).
    q: logits of Q, same shape.
    with_cross: also return the cross term (KL needs it, JS does not).
    interpret: run the kernel in the Pallas interpreter (any backend; tests).
    block: columns per step (a power of 2); None: `BLOCK`.

  Returns:
    float32 arrays of shape `[rows]`. The maxima are the raw row maxima (-inf
    for a row without mass, +inf for a point mass).
  """
  return _row_stats(p, q, with_cross=with_cross, interpret=interpret,
                    block=block or BLOCK, num_warps=NUM_WARPS)


@functools.partial(jax.jit, static_argnames=("with_cross", "interpret", "block", "num_warps"))
def _row_stats(p, q, *, with_cross, interpret, block, num_warps):
  stat = jax.ShapeDtypeStruct((), jnp.float32)
  kernel = pl.pallas_call(
      functools.partial(_kernel, block=block),
      out_shape=[stat] * (5 if with_cross else 4),
      grid=(),
      interpret=interpret,
      compiler_params=None if interpret else plgpu.CompilerParams(
          num_warps=num_warps, num_stages=2),
      name="divlab_row_stats",
  )
  return jax.vmap(kernel)(p, q)


def _log_approx(x):
  """log(x) as the hardware's log2 (PTX lg2.approx, one instruction) times ln 2.

  `jnp.log` lowers to an accurate twenty-instruction routine; the approximate
  log2 is within 2^-22 of log2(x) (absolute, for x in [0.5, 2]; relative
  elsewhere) and keeps log(0) = -inf, log(inf) = inf and NaN.
  """
  (log2,) = plgpu.elementwise_inline_asm(
      "lg2.approx.f32 $0, $1;", args=[x], constraints="=r,r", pack=1,
      result_shape_dtypes=[jax.ShapeDtypeStruct(x.shape, jnp.float32)])
  return log2 * _LN_2


def _mixture_kernel(p_ref, q_ref, top_p_ref, log_zp_ref, top_q_ref, log_zq_ref, beta_ref,
                    kl_pm_ref, kl_qm_ref, *, block: int, hardware_log: bool):
  width = p_ref.shape[0]
  top_p, log_zp = top_p_ref[...], log_zp_ref[...]
  top_q, log_zq = top_q_ref[...], log_zq_ref[...]
  beta = beta_ref[...]
  # The interpreter runs jax operations, not PTX: it takes the plain log.
  log_fn = _log_approx if hardware_log else jnp.log

  def body(k, carry):
    kl_pm, kl_qm = carry
    cols = k * block + jnp.arange(block)
    valid = cols < width
    p = plgpu.load(p_ref.at[cols], mask=valid, other=-jnp.inf).astype(jnp.float32)
    q = plgpu.load(q_ref.at[cols], mask=valid, other=-jnp.inf).astype(jnp.float32)
    _, _, terms_p, terms_q = _logspace.mixture_terms(p, q, top_p, log_zp, top_q, log_zq,
                                                     beta, shift_fn=_logspace.shift_plain,
                                                     exp_fn=_exp, log_fn=log_fn)
    return kl_pm + jnp.sum(terms_p), kl_qm + jnp.sum(terms_q)

  kl_pm, kl_qm = jax.lax.fori_loop(0, pl.cdiv(width, block), body,
                                   (jnp.float32(0.0), jnp.float32(0.0)))
  kl_pm_ref[...] = kl_pm
  kl_qm_ref[...] = kl_qm


def mixture_sums(p: jax.Array, q: jax.Array, top_p, log_zp, top_q, log_zq, beta, *,
                 interpret: bool = False, block: Optional[int] = None):
  """Per-row KL(P || M) and KL(Q || M) of `[rows, V]` logits, given row statistics.

  Args:
    p: `[rows, V]` logits of P.
    q: logits of Q, same shape.
    top_p: `[rows]` row maxima used to shift p (as returned by `row_stats`,
      with rows without mass at 0).
    log_zp: `[rows]` log of the shifted normaliser of p.
    top_q: likewise for q.
    log_zq: likewise for q.
    beta: scalar mixture weight of P.
    interpret: run the kernel in the Pallas interpreter (any backend; tests).
    block: columns per step (a power of 2); None: `BLOCK`.

  Returns:
    (kl_pm, kl_qm), float32 arrays of shape `[rows]`.
  """
  return _mixture_sums(p, q, top_p, log_zp, top_q, log_zq, beta, interpret=interpret,
                       block=block or BLOCK, num_warps=NUM_WARPS)


@functools.partial(jax.jit, static_argnames=("interpret", "block", "num_warps"))
def _mixture_sums(p, q, top_p, log_zp, top_q, log_zq, beta, *, interpret, block, num_warps):
  stat = jax.ShapeDtypeStruct((), jnp.float32)
  kernel = pl.pallas_call(
      functools.partial(_mixture_kernel, block=block, hardware_log=not interpret),
      out_shape=[stat, stat],
      grid=(),
      interpret=interpret,
      compiler_params=None if interpret else plgpu.CompilerParams(
          num_warps=num_warps, num_stages=2),
      name="divlab_mixture_sums",
  )
  beta = jnp.broadcast_to(jnp.asarray(beta, jnp.float32), top_p.shape)
  return jax.vmap(kernel)(p, q, top_p, log_zp, top_q, log_zq, beta)
