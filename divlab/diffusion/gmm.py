"""Exact noised densities, scores and noise predictions of Gaussian mixtures.

If `x_0 ~ sum_k w_k N(mu_k, S_k)` and `x_t | x_0 ~ N(alpha x_0, sigma^2 I)`, then

    x_t ~ sum_k w_k N(alpha mu_k, C_k),   C_k = alpha^2 S_k + sigma^2 I,

so the score is the responsibility-weighted sum of the component scores,

    grad log p_t(x) = sum_k r_k(x) C_k^{-1} (alpha mu_k - x),
    r_k(x) = softmax_k(log w_k + log N(x; alpha mu_k, C_k)),

and the ideal noise prediction is eps(x, t) = -sigma_t grad log p_t(x). This
gives a network-free diffusion model in any dimension, with full (`[K, d, d]`)
or diagonal (`[K, d]`) covariances, on which samplers can be judged exactly.

Components may carry class labels; a class-conditional mixture keeps only the
components of one class (renormalised weights), and classifier-free guidance
combines the two noise predictions as

    eps_w = eps_uncond + w (eps_cond - eps_uncond),

with w = 1 the plain conditional model and w = 0 the unconditional one (the
guidance scale `s` of Wizadwongsa et al. and of diffusers; Ho & Salimans' w is
this w minus 1).

References:
  Ho, Salimans. Classifier-Free Diffusion Guidance (2021).
  Wizadwongsa et al. Diffusion Sampling with Momentum (ICLR 2024), eq. 5 and
  its Gaussian-mixture analogue in this codebase's papers digest.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np

from divlab.diffusion import schedules as schedules_lib

__all__ = [
    "GaussianMixture",
    "gaussian_mixture",
    "class_log_weights",
    "noised_log_prob",
    "noised_score",
    "noised_eps",
    "classifier_free_guidance",
    "guided_eps",
    "sample_mixture",
    "mixture_eps_fn",
    "guided_mixture_eps_fn",
]


class GaussianMixture(NamedTuple):
  """A Gaussian mixture: a pytree, so it can be a jit argument.

  Attributes:
    weights: `[K]` non-negative mixture weights summing to one.
    means: `[K, d]` component means.
    covs: `[K, d, d]` full covariances or `[K, d]` diagonal variances.
    labels: `[K]` integer class of each component, or None.
  """

  weights: jax.Array
  means: jax.Array
  covs: jax.Array
  labels: Optional[jax.Array] = None

  @property
  def dim(self) -> int:
    return self.means.shape[-1]

  @property
  def num_components(self) -> int:
    return self.means.shape[0]

  @property
  def diagonal(self) -> bool:
    return self.covs.ndim == 2


def gaussian_mixture(weights: jax.typing.ArrayLike, means: jax.typing.ArrayLike,
                     covs: jax.typing.ArrayLike,
                     labels: Optional[jax.typing.ArrayLike] = None) -> GaussianMixture:
  """Builds a validated `GaussianMixture` (weights are renormalised to sum to one).

  Args:
    weights: `[K]` non-negative weights, not all zero.
    means: `[K, d]`.
    covs: `[K, d, d]` symmetric positive-definite or `[K, d]` positive variances.
    labels: optional `[K]` integer class labels.

  Returns:
    A `GaussianMixture` in at least float32.
  """
  means = jnp.asarray(means)
  dtype = jnp.promote_types(means.dtype, jnp.float32)
  means = means.astype(dtype)
  weights = jnp.asarray(weights, dtype)
  covs = jnp.asarray(covs, dtype)
  if means.ndim != 2:
    raise ValueError(f"`means` must have shape [K, d], got {means.shape}.")
  k, d = means.shape
  if weights.shape != (k,):
    raise ValueError(f"`weights` must have shape ({k},), got {weights.shape}.")
  if covs.shape not in ((k, d), (k, d, d)):
    raise ValueError(f"`covs` must have shape ({k}, {d}) or ({k}, {d}, {d}), got {covs.shape}.")
  if not any(isinstance(a, jax.core.Tracer) for a in (weights, covs)):
    # Concrete inputs are checked in numpy: no device work for a constructor.
    weights_np, covs_np = np.asarray(weights), np.asarray(covs)
    if np.any(weights_np < 0) or not weights_np.sum() > 0:
      raise ValueError("`weights` must be non-negative with a positive sum.")
    if covs_np.ndim == 2 and not np.all(covs_np > 0):
      raise ValueError("diagonal `covs` must be positive.")
    if covs_np.ndim == 3 and not (np.allclose(covs_np, np.swapaxes(covs_np, 1, 2))
                                  and np.all(np.linalg.eigvalsh(covs_np) > 0)):
      raise ValueError("full `covs` must be symmetric positive-definite.")
  if labels is not None:
    labels = jnp.asarray(labels)
    if labels.shape != (k,) or not jnp.issubdtype(labels.dtype, jnp.integer):
      raise ValueError(f"`labels` must be an integer array of shape ({k},), got "
                       f"{labels.shape} {labels.dtype}.")
  return GaussianMixture(weights / jnp.sum(weights), means, covs, labels)


def class_log_weights(mixture: GaussianMixture,
                      label: Optional[jax.typing.ArrayLike] = None) -> jax.Array:
  """Log weights of the mixture, restricted to class `label` when given.

  log w_k^{(c)} = log w_k - log sum_{j: label_j = c} w_j for components of class c,
  -inf for the others.

  Args:
    mixture: a `GaussianMixture` (with `labels` when `label` is given).
    label: None (unconditional), a scalar class, or `[B]` classes.

  Returns:
    `[K]` log weights, or `[B, K]` for a batch of labels.
  """
  log_w = jnp.log(mixture.weights)
  if label is None:
    return log_w
  if mixture.labels is None:
    raise ValueError("`label` given but the mixture has no `labels`.")
  label = jnp.asarray(label)
  if label.ndim > 1:
    raise ValueError(f"`label` must be a scalar or [B], got shape {label.shape}.")
  in_class = mixture.labels == label[..., None]
  masked = jnp.where(in_class, log_w, -jnp.inf)
  return masked - jax.nn.logsumexp(masked, axis=-1, keepdims=True)


def _components(mixture: GaussianMixture, x: jax.Array, alpha, sigma):
  """Per-component log N(x; alpha mu_k, C_k) `[..., K]` and C_k^{-1}(x - alpha mu_k) `[..., K, d]`."""
  d = mixture.dim
  diff = x[..., None, :] - alpha * mixture.means  # [..., K, d]
  if mixture.diagonal:
    var = alpha ** 2 * mixture.covs + sigma ** 2  # [K, d]
    whitened = diff / var
    quad = jnp.sum(diff * whitened, axis=-1)
    log_det = jnp.sum(jnp.log(var), axis=-1)
  else:
    eye = jnp.eye(d, dtype=x.dtype)
    cov = alpha ** 2 * mixture.covs + sigma ** 2 * eye  # [K, d, d]
    chol = jnp.linalg.cholesky(cov)
    # Invert the K small triangular factors once, then apply them to every point
    # with einsums: much cheaper than a batched triangular solve per point.
    chol_inv = jax.vmap(
        lambda l: jax.scipy.linalg.solve_triangular(l, eye, lower=True))(chol)
    half = jnp.einsum("kij,...kj->...ki", chol_inv, diff)  # L^{-1} diff
    quad = jnp.sum(half ** 2, axis=-1)
    whitened = jnp.einsum("kji,...kj->...ki", chol_inv, half)  # L^{-T} L^{-1} diff
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
  log_normal = -0.5 * (quad + log_det + d * math.log(2.0 * math.pi))
  return log_normal, whitened


def _prepare(mixture: GaussianMixture, x: jax.typing.ArrayLike, alpha, sigma):
  if not isinstance(mixture, GaussianMixture):
    raise ValueError(f"`mixture` must be a GaussianMixture, got {type(mixture).__name__}.")
  x = jnp.asarray(x)
  x = x.astype(jnp.promote_types(x.dtype, mixture.means.dtype))
  if x.ndim < 1 or x.shape[-1] != mixture.dim:
    raise ValueError(f"`x` must have shape [..., {mixture.dim}], got {x.shape}.")
  alpha = jnp.asarray(alpha, x.dtype)
  sigma = jnp.asarray(sigma, x.dtype)
  if alpha.ndim or sigma.ndim:
    raise ValueError(f"`alpha` and `sigma` must be scalars, got shapes {alpha.shape}, {sigma.shape}.")
  return x, alpha, sigma


def noised_log_prob(mixture: GaussianMixture, x: jax.typing.ArrayLike,
                    alpha: jax.typing.ArrayLike, sigma: jax.typing.ArrayLike,
                    label: Optional[jax.typing.ArrayLike] = None) -> jax.Array:
  """log p_t(x) = logsumexp_k(log w_k + log N(x; alpha mu_k, alpha^2 S_k + sigma^2 I)).

  Args:
    mixture: the data distribution p_0.
    x: `[..., d]` points.
    alpha: scalar alpha_t (alpha = 1, sigma = 0 gives the clean density).
    sigma: scalar sigma_t.
    label: None, a scalar class or `[...]` classes matching x's batch shape.

  Returns:
    `[...]` log densities.
  """
  x, alpha, sigma = _prepare(mixture, x, alpha, sigma)
  log_normal, _ = _components(mixture, x, alpha, sigma)
  return jax.nn.logsumexp(class_log_weights(mixture, label) + log_normal, axis=-1)


def noised_score(mixture: GaussianMixture, x: jax.typing.ArrayLike,
                 alpha: jax.typing.ArrayLike, sigma: jax.typing.ArrayLike,
                 label: Optional[jax.typing.ArrayLike] = None) -> jax.Array:
  """grad_x log p_t(x) = sum_k r_k(x) C_k^{-1} (alpha mu_k - x), r = softmax responsibilities.

  Args:
    mixture: the data distribution p_0.
    x: `[..., d]` points.
    alpha: scalar alpha_t.
    sigma: scalar sigma_t.
    label: None, a scalar class or `[...]` classes matching x's batch shape.

  Returns:
    `[..., d]` scores.
  """
  x, alpha, sigma = _prepare(mixture, x, alpha, sigma)
  log_normal, whitened = _components(mixture, x, alpha, sigma)
  resp = jax.nn.softmax(class_log_weights(mixture, label) + log_normal, axis=-1)
  return -jnp.einsum("...k,...kd->...d", resp, whitened)


def noised_eps(mixture: GaussianMixture, x: jax.typing.ArrayLike,
               alpha: jax.typing.ArrayLike, sigma: jax.typing.ArrayLike,
               label: Optional[jax.typing.ArrayLike] = None) -> jax.Array:
  """The exact noise prediction eps(x_t) = E[eps | x_t] = -sigma_t grad log p_t(x_t).

  Args:
    mixture: the data distribution p_0.
    x: `[..., d]` noised points.
    alpha: scalar alpha_t.
    sigma: scalar sigma_t > 0.
    label: None, a scalar class or `[...]` classes matching x's batch shape.

  Returns:
    `[..., d]` noise predictions.
  """
  return -jnp.asarray(sigma) * noised_score(mixture, x, alpha, sigma, label)


def classifier_free_guidance(eps_uncond: jax.typing.ArrayLike,
                             eps_cond: jax.typing.ArrayLike,
                             guidance_scale: jax.typing.ArrayLike) -> jax.Array:
  """Combines noise predictions: eps_w = eps_uncond + w (eps_cond - eps_uncond).

  Ho & Salimans (2022), "Classifier-Free Diffusion Guidance". Works for any
  eps-model (exact mixtures here, learned networks in the experiments).

  Args:
    eps_uncond: unconditional prediction.
    eps_cond: class-conditional prediction, same shape.
    guidance_scale: w (1 = plain conditional, 0 = unconditional).

  Returns:
    The guided prediction.

  Example:
    >>> float(classifier_free_guidance(jnp.array(1.0), jnp.array(2.0), 3.0))
    4.0
  """
  eps_uncond, eps_cond = jnp.asarray(eps_uncond), jnp.asarray(eps_cond)
  return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def guided_eps(mixture: GaussianMixture, x: jax.typing.ArrayLike,
               alpha: jax.typing.ArrayLike, sigma: jax.typing.ArrayLike,
               label: jax.typing.ArrayLike, guidance_scale: jax.typing.ArrayLike) -> jax.Array:
  """Classifier-free guidance: eps_w = eps_uncond + w (eps_cond - eps_uncond).

  w = 1 is the plain class-conditional prediction, w = 0 the unconditional one.

  Args:
    mixture: a labelled `GaussianMixture`.
    x: `[..., d]` noised points.
    alpha: scalar alpha_t.
    sigma: scalar sigma_t.
    label: a scalar class or `[...]` classes.
    guidance_scale: w, a scalar.

  Returns:
    `[..., d]` guided noise predictions.
  """
  return classifier_free_guidance(noised_eps(mixture, x, alpha, sigma),
                                  noised_eps(mixture, x, alpha, sigma, label),
                                  guidance_scale)


def sample_mixture(mixture: GaussianMixture, key: jax.Array, num_samples: int,
                   label: Optional[jax.typing.ArrayLike] = None) -> jax.Array:
  """Exact samples x_0 from the mixture (or from its class-`label` part).

  Draws a component k ~ w (restricted to the class when given), then
  x = mu_k + L_k z with L_k the Cholesky factor of S_k (sqrt of the variances
  when diagonal) and z ~ N(0, I).

  Args:
    mixture: the distribution.
    key: PRNG key.
    num_samples: n.
    label: None, a scalar class or `[n]` classes.

  Returns:
    `[n, d]` samples.
  """
  if not isinstance(num_samples, int) or num_samples < 1:
    raise ValueError(f"`num_samples` must be a positive integer, got {num_samples!r}.")
  key_component, key_noise = jax.random.split(key)
  log_w = class_log_weights(mixture, label)
  if log_w.ndim == 2 and log_w.shape[0] != num_samples:
    raise ValueError(f"`label` must be a scalar or have shape ({num_samples},), got "
                     f"{jnp.shape(label)}.")
  shape = (num_samples,) if log_w.ndim == 1 else None
  component = jax.random.categorical(key_component, log_w, shape=shape)
  noise = jax.random.normal(key_noise, (num_samples, mixture.dim), mixture.means.dtype)
  if mixture.diagonal:
    offset = jnp.sqrt(mixture.covs[component]) * noise
  else:
    chol = jnp.linalg.cholesky(mixture.covs)
    offset = jnp.einsum("nde,ne->nd", chol[component], noise)
  return mixture.means[component] + offset


def mixture_eps_fn(mixture: GaussianMixture, schedule: schedules_lib.VPSchedule,
                   label: Optional[jax.typing.ArrayLike] = None
                   ) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The exact eps-model of a mixture under `schedule`, as `eps_fn(x, t)`.

  Args:
    mixture: the data distribution.
    schedule: the `VPSchedule` that gives alpha_t and sigma_t.
    label: None (unconditional), a scalar class or `[B]` classes.

  Returns:
    `eps_fn(x [B, d], t scalar) -> [B, d]`.
  """

  def eps_fn(x, t):
    return noised_eps(mixture, x, schedule.alpha(t), schedule.sigma(t), label)

  return eps_fn


def guided_mixture_eps_fn(mixture: GaussianMixture, schedule: schedules_lib.VPSchedule,
                          label: jax.typing.ArrayLike, guidance_scale: float
                          ) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The classifier-free-guided exact eps-model, as `eps_fn(x, t)` (see `guided_eps`).

  Args:
    mixture: a labelled `GaussianMixture`.
    schedule: the `VPSchedule`.
    label: a scalar class or `[B]` classes.
    guidance_scale: w (1 = plain conditional).

  Returns:
    `eps_fn(x [B, d], t scalar) -> [B, d]`.
  """

  def eps_fn(x, t):
    return guided_eps(mixture, x, schedule.alpha(t), schedule.sigma(t), label, guidance_scale)

  return eps_fn
