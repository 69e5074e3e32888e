"""Denoising score matching for diffusion models (eps-prediction form).

With a VP schedule x_t = alpha_t x_0 + sigma_t eps, eps ~ N(0, I), the
network eps_theta(x_t, t) is trained on

  L = E_{t, x_0, eps} || eps_theta(alpha_t x_0 + sigma_t eps, t) - eps ||^2 / d

(Ho et al., 2020, "Denoising Diffusion Probabilistic Models", the "simple"
loss; Vincent, 2011, for denoising score matching: eps_theta = -sigma_t score).
For classifier-free guidance (Ho & Salimans, 2022) the class label is replaced
by a null label with probability ``p_uncond``, so one network learns both the
conditional and the unconditional eps.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from divlab import _checks
from divlab.losses.reductions import reduce_loss

ArrayLike = jax.typing.ArrayLike

__all__ = ["eps_prediction_error", "denoising_score_matching"]


def eps_prediction_error(eps_pred: ArrayLike, eps: ArrayLike, *,
                         where: Optional[ArrayLike] = None,
                         reduction: str = "none") -> jax.Array:
  """Per-example mean squared error of a noise prediction.

  e_i = mean_j (eps_pred_ij - eps_ij)^2 over every non-batch axis: the DDPM
  "simple" loss of one example (Ho et al., 2020, eq. 14, divided by d).

  Args:
    eps_pred: ``[B, ...]`` predicted noise (floating).
    eps: ``[B, ...]`` the noise that was added (same shape, floating).
    where: optional boolean ``[B]`` mask of examples to include.
    reduction: see `divlab.losses.reduce_loss`; 'none' keeps ``[B]``.

  Returns:
    ``[B]`` errors (or their reduction), in at least float32.

  Example:
    >>> float(eps_prediction_error(jnp.ones((1, 2)), jnp.zeros((1, 2)))[0])
    1.0
  """
  eps_pred, eps = jnp.asarray(eps_pred), jnp.asarray(eps)
  _checks.check_floating(eps_pred, "eps_pred")
  _checks.check_floating(eps, "eps")
  _checks.check_same_shape(eps_pred, eps, "eps_pred", "eps")
  if eps.ndim < 1:
    raise ValueError("`eps` must have a leading batch axis.")
  dtype = jnp.promote_types(jnp.result_type(eps_pred, eps), jnp.float32)
  diff = (eps_pred.astype(dtype) - eps.astype(dtype)).reshape(eps.shape[0], -1)
  per_example = jnp.mean(jnp.square(diff), axis=-1)
  mask = _checks.broadcast_mask(where, per_example.shape, "where")
  return reduce_loss(per_example, reduction, where=mask)


def denoising_score_matching(eps_fn: Callable[..., jax.Array], x0: ArrayLike,
                             key: jax.Array, schedule, *,
                             labels: Optional[ArrayLike] = None,
                             null_label: Optional[int] = None,
                             p_uncond: float = 0.1,
                             reduction: str = "mean") -> jax.Array:
  """The DSM loss of ``eps_fn(x_t, t, labels)`` on one batch of clean data.

  Draws t ~ U(schedule.t_min, schedule.t_max) and eps ~ N(0, I) per example,
  forms x_t = alpha_t x_0 + sigma_t eps and scores `eps_prediction_error`.
  With ``labels``, each label is replaced by ``null_label`` with probability
  ``p_uncond`` (classifier-free guidance training).

  Args:
    eps_fn: the network, ``eps_fn(x_t [B, ...], t [B], labels [B] or None)``.
    x0: ``[B, ...]`` clean data.
    key: PRNG key (split for t, eps and the label dropout).
    schedule: a `divlab.diffusion.VPSchedule` (``alpha``, ``sigma``,
      ``t_min``, ``t_max``).
    labels: optional ``[B]`` integer classes (an integer dtype).
    null_label: the unconditional label (required with ``labels`` when
      ``p_uncond > 0``).
    p_uncond: label-dropout probability in [0, 1].
    reduction: see `divlab.losses.reduce_loss`.

  Returns:
    The loss (a scalar for 'mean').

  Example:
    >>> from divlab.diffusion import linear_schedule
    >>> zero = lambda x, t, y: jnp.zeros_like(x)   # predicts no noise
    >>> loss = denoising_score_matching(zero, jnp.zeros((4096, 2)),
    ...                                 jax.random.key(0), linear_schedule())
    >>> round(float(loss), 1)                      # E eps^2 = 1
    1.0
  """
  _checks.check_in_range(p_uncond, "p_uncond", 0.0, 1.0)
  if not all(hasattr(schedule, a) for a in ("alpha", "sigma", "t_min", "t_max")):
    raise ValueError("`schedule` must be a VP schedule with `alpha`, `sigma`, "
                     f"`t_min` and `t_max` (e.g. `linear_schedule()`), got "
                     f"{type(schedule).__name__}.")
  x0 = jnp.asarray(x0)
  if x0.ndim < 1:
    raise ValueError("`x0` must have a leading batch axis.")
  batch = x0.shape[0]
  key_t, key_eps, key_drop = jax.random.split(key, 3)
  dtype = jnp.promote_types(x0.dtype, jnp.float32)
  t = jax.random.uniform(key_t, (batch,), dtype, schedule.t_min, schedule.t_max)
  eps = jax.random.normal(key_eps, x0.shape, dtype)
  expand = (batch,) + (1,) * (x0.ndim - 1)
  x_t = (schedule.alpha(t).reshape(expand) * x0.astype(dtype)
         + schedule.sigma(t).reshape(expand) * eps)
  if labels is not None:
    labels = jnp.asarray(labels)
    _checks.check_integer(labels, "labels")
    labels = labels.astype(jnp.int32)
    if labels.shape != (batch,):
      raise ValueError(f"`labels` must have shape ({batch},), got {labels.shape}.")
    if p_uncond > 0:
      if null_label is None:
        raise ValueError("`null_label` is required when `labels` are dropped "
                         "(p_uncond > 0).")
      _checks.check_scalar(null_label, "null_label")
      _checks.check_integer(null_label, "null_label")
      drop = jax.random.bernoulli(key_drop, p_uncond, (batch,))
      labels = jnp.where(drop, null_label, labels)
  eps_pred = eps_fn(x_t, t, labels)
  if jnp.shape(eps_pred) != eps.shape:
    raise ValueError(f"`eps_fn` must return the shape {eps.shape} of `x0`, got "
                     f"{jnp.shape(eps_pred)}.")
  return eps_prediction_error(eps_pred, eps, reduction=reduction)
