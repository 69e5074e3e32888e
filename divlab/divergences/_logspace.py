"""Per-entry expressions shared by the XLA and kernel paths of `categorical`.

The elementwise formulas live here once, so that both paths compute the same
terms; the kernels only swap in cheaper forms of the same operations
(`shift_plain`, exact; the hardware's exp2 and log2, within about 1e-6
relative of `jnp.exp` / `jnp.log` for the shifted logits that carry the
mass).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def shift_plain(x: jax.Array, top: jax.Array) -> jax.Array:
  """`shift` in three operations per entry (compare, subtract, select).

  In a row whose max is +inf, plain subtraction already gives -inf for every
  finite entry (and NaN for a NaN); only the +inf entries themselves
  (inf - inf) need the select. A +inf entry cannot occur in a row with a
  finite max, and in a row whose max is NaN every result is NaN through its
  NaN entries anyway. The kernels use this form directly.
  """
  return jnp.where(x == jnp.inf, 0.0, x - top)


def _shift_with_row_selects(x: jax.Array, top: jax.Array) -> jax.Array:
  """`shift` with the point-mass case selected per row (the same values)."""
  point_mass = top == jnp.inf
  in_point_mass = jnp.where(x == jnp.inf, 0.0, jnp.where(x == x, -jnp.inf, x))
  return jnp.where(point_mass, in_point_mass, x) - jnp.where(point_mass, 0.0, top)


def shift(x: jax.Array, top: jax.Array) -> jax.Array:
  """x - top, the logits shifted by their row max.

  In a row whose max is +inf (the limit of a growing logit) the row is the
  point mass on its +inf entries: 0 there and -inf elsewhere (a NaN stays
  NaN). The derivative in `x` is 1 at every finite entry, so autodiff and
  the JVPs of the custom rules can go through it.

  Two formulas with identical values, chosen per backend when the program
  is lowered: on the GPU every pass over the logits counts its instructions
  and the three-operation `shift_plain` is used; on the CPU the
  per-row-select form keeps XLA's fusion of the shift into its consumers (with
  `shift_plain`, XLA:CPU materialises the shifted logits of JS separately:
  1.3x the time and twice the temporaries at [2048, 32000]).
  """
  return jax.lax.platform_dependent(x, top, cpu=_shift_with_row_selects,
                                    default=shift_plain)


def mixture_terms(p_logits, q_logits, top_p, log_zp, top_q, log_zq, beta, *,
                  shift_fn=shift, exp_fn=jnp.exp, log_fn=jnp.log):
  """p, q and the per-entry terms p log(p/m), q log(q/m), m = beta p + (1 - beta) q.

  Inputs are float32 logits with their row maxima and log-normalisers (the
  shifted normalisers, so log p = shift(p_logits) - log_zp). The kernels pass
  their own per-entry `shift_fn`, `exp_fn` and `log_fn` (the hardware's exp2
  and log2); the XLA paths use the defaults.
  """
  shifted_p, shifted_q = shift_fn(p_logits, top_p), shift_fn(q_logits, top_q)
  log_p, log_q = shifted_p - log_zp, shifted_q - log_zq
  # exp(shifted) * exp(-log_z) reuses the exp of the normalising sum, so on
  # the CPU (one jit) the forward and backward passes share one exp per entry.
  p = exp_fn(shifted_p) * jnp.exp(-log_zp)
  q = exp_fn(shifted_q) * jnp.exp(-log_zq)
  log_m = log_fn(beta * p + (1 - beta) * q)
  # The mixture is at least each weighted component; the bound repairs the
  # case where tiny weighted probabilities underflow to 0 in the sum.
  log_m = jnp.maximum(log_m, jnp.maximum(jnp.log(beta) + log_p, jnp.log1p(-beta) + log_q))
  terms_p = jnp.where(p == 0, 0.0, p * (log_p - log_m))
  terms_q = jnp.where(q == 0, 0.0, q * (log_q - log_m))
  return p, q, terms_p, terms_q
