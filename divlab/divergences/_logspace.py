"""Per-entry expressions shared by the XLA and kernel paths of `categorical`.

Both paths must agree to the last bit up to the order of summation, so the
elementwise formulas live here once.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def shift(x: jax.Array, top: jax.Array) -> jax.Array:
  """x - top, the logits shifted by their row max.

  In a row whose max is +inf (the limit of a growing logit) the row is the
  point mass on its +inf entries: 0 there and -inf elsewhere (a NaN stays
  NaN). The derivative in `x` is 1 wherever the row max is finite, so autodiff
  and the JVPs of the custom rules can go through it.
  """
  point_mass = top == jnp.inf
  in_point_mass = jnp.where(x == jnp.inf, 0.0, jnp.where(x == x, -jnp.inf, x))
  return jnp.where(point_mass, in_point_mass, x) - jnp.where(point_mass, 0.0, top)


def mixture_terms(p_logits, q_logits, top_p, log_zp, top_q, log_zq, beta):
  """p, q and the per-entry terms p log(p/m), q log(q/m), m = beta p + (1 - beta) q.

  Inputs are float32 logits with their row maxima and log-normalisers (the
  shifted normalisers, so log p = shift(p_logits) - log_zp).
  """
  shifted_p, shifted_q = shift(p_logits, top_p), shift(q_logits, top_q)
  log_p, log_q = shifted_p - log_zp, shifted_q - log_zq
  # exp(shifted) * exp(-log_z) reuses the exp of the normalising sum, so on
  # the CPU (one jit) the forward and backward passes share one exp per entry.
  p = jnp.exp(shifted_p) * jnp.exp(-log_zp)
  q = jnp.exp(shifted_q) * jnp.exp(-log_zq)
  log_m = jnp.log(beta * p + (1 - beta) * q)
  # The mixture is at least each weighted component; the bound repairs the
  # case where tiny weighted probabilities underflow to 0 in the sum.
  log_m = jnp.maximum(log_m, jnp.maximum(jnp.log(beta) + log_p, jnp.log1p(-beta) + log_q))
  terms_p = jnp.where(p == 0, 0.0, p * (log_p - log_m))
  terms_q = jnp.where(q == 0, 0.0, q * (log_q - log_m))
  return p, q, terms_p, terms_q
