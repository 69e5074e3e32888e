"""Information-bottleneck losses for regression: CS-IB and its baselines.

An information bottleneck (IB) trains an encoder x -> t and a decoder t -> yhat
to keep in t what predicts y (a prediction term) while forgetting the rest of
x (a compression term weighted by ``beta``). The losses here differ in how the
two terms are estimated:

* `cs_ib`: conditional Cauchy-Schwarz divergence + normalised CS quadratic
  mutual information (Yu et al., ICLR 2024), both kernel estimators;
* `vib`: Gaussian decoder likelihood + KL of a Gaussian encoder to N(0, I)
  (Alemi et al., ICLR 2017);
* `nib` and `squared_nib`: squared error + the kernel-density upper bound on
  I(x; t) for t = f(x) + Gaussian noise, or its square (Kolchinsky et al.);
* `hsic_bottleneck`: squared error + beta [HSIC(x, t) - lambda_y HSIC(y, t)];
* `mse`: the plain squared-error baseline.

Conventions shared by every loss here:

* Targets and predictions are ``[B, d_y]``. A scalar target must be passed as
  ``[B, 1]`` explicitly: a ``[B]`` array raises ValueError. (The released
  CS-IB script fed ``[B]`` vectors to its kernel code, which then compares the
  whole batch as one point and collapses the prediction term to a squared
  error; see `cs_ib`'s ``prediction="sse"``.)
* Inputs ``x`` are ``[B, ...]`` (flattened to ``[B, d_x]``), representations
  ``t`` and encoder moments are ``[B, d_t]``.
* Every loss returns a scalar (the kernel estimators need the whole batch),
  computed in at least float32 with natural logarithms. With
  ``return_terms=True`` it returns ``(loss, terms)``, where ``terms`` holds the
  unweighted ``"prediction"`` and (where there is one) ``"compression"``
  values, for logging.
* Kernel widths (``bandwidth``): a positive number is used for every Gaussian
  kernel (default 1.0, the CS-IB training script's sigma on standardised
  data), or ``"median"`` picks each variable's width by the median heuristic
  (`divlab.divergences.kernel.median_heuristic`, gradient stopped, 1.0 if the
  median distance is 0).
"""
from __future__ import annotations

from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

from divlab import _checks
from divlab.divergences import dependence
from divlab.divergences import kernel
from divlab.losses.supervised import squared_error

__all__ = [
    "PREDICTION_TERMS",
    "resolve_bandwidth",
    "mse",
    "cs_ib",
    "gaussian_kl_to_standard_normal",
    "reparameterize",
    "vib",
    "kde_mutual_information",
    "nib",
    "squared_nib",
    "hsic_bottleneck",
]

ArrayLike = jax.typing.ArrayLike
Bandwidth = Union[float, str, ArrayLike]

# The CS-IB prediction terms: the paper's conditional CS divergence, the same
# estimator with the released code's denominator sum_i K_ji^2, and the squared
# error that the released script's estimator reduces to on [B] targets.
PREDICTION_TERMS = ("cs", "cs_sum_of_squares", "sse")


# ----------------------------------------------------------------------------
# Argument handling.
# ----------------------------------------------------------------------------


def _as_float(x: ArrayLike, name: str) -> jax.Array:
  x = jnp.asarray(x)
  _checks.check_floating(x, name)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _regression_pair(predictions: ArrayLike, targets: ArrayLike
                     ) -> tuple[jax.Array, jax.Array]:
  """Checks `[B, d_y]` predictions and targets of the same shape."""
  predictions = _as_float(predictions, "predictions")
  targets = _as_float(targets, "targets")
  for value, name in ((predictions, "predictions"), (targets, "targets")):
    if value.ndim != 2:
      raise ValueError(
          f"`{name}` must have shape [B, d_y] (pass scalar targets as [B, 1] "
          f"explicitly), got shape {value.shape}.")
  _checks.check_same_shape(predictions, targets, "predictions", "targets")
  return predictions, targets


def _batch_features(x: ArrayLike, name: str, batch: int) -> jax.Array:
  """`[B, ...]` as `[B, d]`; refuses a 1-D array and a different batch size."""
  x = _as_float(x, name)
  if x.ndim < 2:
    raise ValueError(
        f"`{name}` must have shape [B, d] (or [B, ...]), got shape {x.shape}.")
  if x.shape[0] != batch:
    raise ValueError(
        f"`{name}` must have the batch size {batch} of `targets`, got "
        f"{x.shape[0]}.")
  return x.reshape(x.shape[0], -1)


def _check_weight(value: Any, name: str) -> None:
  _checks.check_in_range(value, name, 0.0, np.inf, high_inclusive=True)


def _check_prediction(prediction: str) -> None:
  if prediction not in PREDICTION_TERMS:
    raise ValueError(
        f"`prediction` must be one of {PREDICTION_TERMS}, got {prediction!r}.")


def _check_bandwidth(bandwidth: Bandwidth) -> None:
  if isinstance(bandwidth, str):
    if bandwidth != "median":
      raise ValueError(
          f"`bandwidth` must be a positive number or 'median', got {bandwidth!r}.")
  else:
    _checks.check_positive(bandwidth, "bandwidth")


def resolve_bandwidth(bandwidth: Bandwidth, *samples: ArrayLike) -> ArrayLike:
  """The Gaussian-kernel width for `samples` under a `bandwidth` setting.

  Args:
    bandwidth: a positive number (returned as is), or ``"median"``: the median
      pairwise distance of the pooled `samples`
      (`divlab.divergences.kernel.median_heuristic`), gradient stopped, and 1.0
      when that median is 0 (more than half of the pairs coincide).
    *samples: the `[n, d]` arrays the kernel is built on.

  Returns:
    A positive scalar width.

  Example:
    >>> float(resolve_bandwidth("median", jnp.array([[0.], [1.], [3.]])))
    2.0
  """
  _check_bandwidth(bandwidth)
  if not isinstance(bandwidth, str):
    return bandwidth
  if not samples:
    raise ValueError("bandwidth='median' needs the `samples` to measure.")
  median = jax.lax.stop_gradient(kernel.median_heuristic(*samples))
  return jnp.where(median > 0, median, 1.0)


def _output(loss: jax.Array, terms: dict, return_terms: bool):
  return (loss, terms) if return_terms else loss


# ----------------------------------------------------------------------------
# Baseline and CS-IB.
# ----------------------------------------------------------------------------


def mse(predictions: ArrayLike, targets: ArrayLike, *,
        return_terms: bool = False):
  """Mean squared error, the plain regression baseline.

  `L = (1/B) sum_b sum_k (yhat_bk - y_bk)^2` (squared error summed over the
  `d_y` outputs, averaged over the batch).

  Args:
    predictions: `[B, d_y]`.
    targets: `[B, d_y]` (scalar targets as `[B, 1]`).
    return_terms: also return ``{"prediction": L}``.

  Returns:
    Scalar loss (or ``(loss, terms)``).

  Example:
    >>> float(mse(jnp.array([[1.], [2.]]), jnp.array([[0.], [0.]])))
    2.5
  """
  predictions, targets = _regression_pair(predictions, targets)
  loss = squared_error(predictions, targets, reduction="mean")
  return _output(loss, {"prediction": loss}, return_terms)


def cs_ib(predictions: ArrayLike, targets: ArrayLike, x: ArrayLike,
          t: ArrayLike, *, beta: ArrayLike, prediction: str = "cs",
          bandwidth: Bandwidth = 1.0, return_terms: bool = False):
  """Cauchy-Schwarz divergence information bottleneck (CS-IB) loss.

    L = D_CS(p(y|x) || q(yhat|x)) + beta * I_CS(x; t) / sqrt(I_CS(x; x) I_CS(t; t))

  Prediction term (``prediction="cs"``, the paper's Proposition 1): the
  conditional CS divergence between the targets and the predictions given x,
  with K the Gram matrix of x, L1 of y, L2 of yhat, L21 between yhat and y:

    D = log sum_j [sum_i K_ji L1_ji / d_j] + log sum_j [sum_i K_ji L2_ji / d_j]
        - 2 log sum_j [sum_i K_ji L21_ji / d_j],   d_j = (sum_i K_ji)^2,

  computed by `divlab.divergences.kernel.conditional_cauchy_schwarz`; it is 0
  when yhat = y. Compression term (Proposition 2): the CS quadratic mutual
  information

    I_CS(x; t) = log(tr(KQ)/B^2) + log(1'K1 1'Q1 / B^4) - 2 log(1'KQ1 / B^3),

  Q the Gram matrix of t, trained in the normalised form above (as the
  released script does), by `kernel.cs_mutual_information(normalized=True)`.

  ``prediction="cs_sum_of_squares"`` is the same estimator with the released
  code's denominator ``d_j = sum_i K_ji^2`` (an ablation; with a Gaussian K it
  weights each point's conditional by ``1 / sum_i K_ji^2`` instead of
  ``1 / (sum_i K_ji)^2``, so points in dense regions of x count less).

  ``prediction="sse"`` is the ablation that reproduces the released training
  script: its kernel code, given `[B]` vectors instead of `[B, 1]`, builds
  L1 = L2 = 1 and a single L21 = exp(-||yhat - y||^2 / (2 sigma^2)) over the
  whole batch, so its "D_CS" equals the batch sum of squared errors divided
  by sigma^2 (in natural log units; the script's log2 adds a factor 1/ln 2).
  The loss is then `sum_b ||yhat_b - y_b||^2 / sigma_y^2 + beta I_CS`.

  References:
    Yu, Yu, Lokse, Jenssen, Principe, "Cauchy-Schwarz Divergence Information
    Bottleneck for Regression", ICLR 2024.

  Args:
    predictions: decoder outputs `[B, d_y]`.
    targets: `[B, d_y]` (scalar targets as `[B, 1]`).
    x: inputs `[B, ...]` (flattened), the conditioning variable of D_CS.
    t: bottleneck representation `[B, d_t]`.
    beta: non-negative weight of the compression term.
    prediction: ``"cs"`` (the paper's estimator), ``"cs_sum_of_squares"``
      (the released code's denominator, an ablation) or ``"sse"`` (the
      released script's collapsed estimator, an ablation).
    bandwidth: kernel width shared by x, y and t (default 1.0, the paper's
      script), or ``"median"`` for a median-heuristic width per variable (y
      and yhat share one, from their pooled sample).
    return_terms: also return ``{"prediction": D, "compression": I_norm}``.

  Returns:
    Scalar loss (or ``(loss, terms)``).

  Example:
    >>> y = jnp.array([[0.], [1.], [2.]]); x = jnp.array([[0.], [1.], [3.]])
    >>> float(cs_ib(y, y, x, x, beta=0.0))  # yhat = y: D_CS = 0
    0.0
  """
  _check_prediction(prediction)
  _check_bandwidth(bandwidth)
  _check_weight(beta, "beta")
  predictions, targets = _regression_pair(predictions, targets)
  batch = targets.shape[0]
  x = _batch_features(x, "x", batch)
  t = _batch_features(t, "t", batch)
  sigma_x = resolve_bandwidth(bandwidth, x)
  sigma_y = resolve_bandwidth(bandwidth, targets, predictions)
  sigma_t = resolve_bandwidth(bandwidth, t)
  if prediction in ("cs", "cs_sum_of_squares"):
    prediction_term = kernel.conditional_cauchy_schwarz(
        x, targets, predictions, sigma_x=sigma_x, sigma_y=sigma_y,
        denominator="squared_sum" if prediction == "cs" else "sum_of_squares")
  else:
    prediction_term = (squared_error(predictions, targets, reduction="sum")
                       / jnp.square(sigma_y))
  compression = kernel.cs_mutual_information(
      x, t, sigma_x=sigma_x, sigma_t=sigma_t, normalized=True)
  loss = prediction_term + beta * compression
  return _output(loss, {"prediction": prediction_term,
                        "compression": compression}, return_terms)


# ----------------------------------------------------------------------------
# Variational IB.
# ----------------------------------------------------------------------------


def gaussian_kl_to_standard_normal(mean: ArrayLike,
                                   log_variance: ArrayLike) -> jax.Array:
  """KL(N(mean, diag(exp(log_variance))) || N(0, I)) per example, closed form.

  `KL = 0.5 sum_k (mean_k^2 + exp(log_variance_k) - 1 - log_variance_k)`.

  Args:
    mean: encoder means `[..., d_t]`.
    log_variance: encoder log-variances `[..., d_t]` (same shape).

  Returns:
    `[...]` KL divergences (nats), >= 0.

  Example:
    >>> float(gaussian_kl_to_standard_normal(jnp.zeros(2), jnp.zeros(2)))
    0.0
  """
  mean = _as_float(mean, "mean")
  log_variance = _as_float(log_variance, "log_variance")
  _checks.check_same_shape(mean, log_variance, "mean", "log_variance")
  return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(log_variance) - 1.0
                       - log_variance, axis=-1)


def reparameterize(rng: jax.Array, mean: ArrayLike,
                   log_variance: ArrayLike) -> jax.Array:
  """A sample t = mean + exp(log_variance / 2) * eps, eps ~ N(0, I).

  The reparameterisation trick (Kingma & Welling, 2014): the sample is a
  differentiable function of the moments, so gradients reach the encoder.
  `log_variance` may be a scalar (a fixed noise level, as in `nib`).

  Args:
    rng: a PRNG key (e.g. the train step's key).
    mean: `[B, d_t]`.
    log_variance: broadcastable to `mean`.

  Returns:
    `[B, d_t]` sample.
  """
  mean = _as_float(mean, "mean")
  log_variance = _as_float(log_variance, "log_variance")
  try:
    fits = jnp.broadcast_shapes(log_variance.shape, mean.shape) == mean.shape
  except ValueError:
    fits = False
  if not fits:
    raise ValueError(f"`log_variance` of shape {log_variance.shape} does not "
                     f"broadcast to `mean`'s shape {mean.shape}.")
  noise = jax.random.normal(rng, mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * log_variance) * noise


def vib(predictions: ArrayLike, targets: ArrayLike, mean: ArrayLike,
        log_variance: ArrayLike, *, beta: ArrayLike,
        decoder_variance: ArrayLike = 1.0, return_terms: bool = False):
  """Deep variational information bottleneck loss with a Gaussian decoder.

    L = (1/B) sum_b [-log N(y_b; yhat_b, s^2 I)] + beta (1/B) sum_b KL_b,

  `-log N(y; yhat, s^2 I) = ||y - yhat||^2 / (2 s^2) + (d_y/2) log(2 pi s^2)`
  (s^2 = `decoder_variance`, fixed), and `KL_b` the closed-form KL of the
  encoder N(mean_b, diag exp(log_variance_b)) to N(0, I)
  (`gaussian_kl_to_standard_normal`). `predictions` must be decoded from a
  sample t ~ N(mean, diag exp(log_variance)) drawn with `reparameterize` and
  the step's key.

  References:
    Alemi, Fischer, Dillon, Murphy, "Deep Variational Information
    Bottleneck", ICLR 2017.

  Args:
    predictions: decoder outputs `[B, d_y]` from the sampled t.
    targets: `[B, d_y]` (scalar targets as `[B, 1]`).
    mean: encoder means `[B, d_t]`.
    log_variance: encoder log-variances `[B, d_t]`.
    beta: non-negative weight of the KL term.
    decoder_variance: positive variance s^2 of the Gaussian decoder.
    return_terms: also return ``{"prediction": NLL, "compression": KL}``.

  Returns:
    Scalar loss (or ``(loss, terms)``).
  """
  _check_weight(beta, "beta")
  _checks.check_positive(decoder_variance, "decoder_variance")
  predictions, targets = _regression_pair(predictions, targets)
  batch, outputs = targets.shape
  mean = _batch_features(mean, "mean", batch)
  log_variance = _batch_features(log_variance, "log_variance", batch)
  squared = squared_error(predictions, targets, reduction="mean")
  nll = (squared / (2.0 * decoder_variance)
         + 0.5 * outputs * jnp.log(2.0 * jnp.pi * decoder_variance))
  kl = jnp.mean(gaussian_kl_to_standard_normal(mean, log_variance))
  return _output(nll + beta * kl, {"prediction": nll, "compression": kl},
                 return_terms)


# ----------------------------------------------------------------------------
# Nonlinear IB (kernel-density MI bound).
# ----------------------------------------------------------------------------


def kde_mutual_information(mean: ArrayLike, *,
                           noise_log_variance: ArrayLike = -1.0) -> jax.Array:
  """Kernel-density upper bound on I(x; t) for t = mean(x) + N(0, s^2 I).

    I(x; t) <= -(1/B) sum_i log (1/B) sum_j exp(-||m_i - m_j||^2 / (2 s^2))

  (Kolchinsky & Tracey 2017; used by the nonlinear IB of Kolchinsky, Tracey
  and Wolpert 2019), with s^2 = exp(`noise_log_variance`). It lies in
  [0, log B]: 0 when all means coincide, log B when they are far apart.

  References:
    Kolchinsky, Tracey, Wolpert, "Nonlinear Information Bottleneck",
    Entropy 2019; Kolchinsky & Tracey, "Estimating mixture entropy with
    pairwise distances", Entropy 2017.

  Args:
    mean: deterministic encoder outputs `[B, d_t]`.
    noise_log_variance: scalar log of the bottleneck noise variance s^2
      (default -1, the fixed value of the common PyTorch implementation); may
      be traced (a trainable noise level).

  Returns:
    Scalar estimate in nats.

  Example:
    >>> float(kde_mutual_information(jnp.zeros((4, 2))))
    0.0
  """
  mean = _as_float(mean, "mean")
  if mean.ndim != 2:
    raise ValueError(f"`mean` must have shape [B, d_t], got {mean.shape}.")
  _checks.check_scalar(noise_log_variance, "noise_log_variance")
  batch = mean.shape[0]
  log_kernel = (-kernel.squared_distances(mean, mean)
                / (2.0 * jnp.exp(noise_log_variance)))
  return jnp.log(float(batch)) - jnp.mean(jax.nn.logsumexp(log_kernel, axis=1))


def _nib(predictions, targets, mean, beta, noise_log_variance, power,
         return_terms):
  _check_weight(beta, "beta")
  predictions, targets = _regression_pair(predictions, targets)
  mean = _batch_features(mean, "mean", targets.shape[0])
  prediction_term = squared_error(predictions, targets, reduction="mean")
  compression = kde_mutual_information(mean,
                                       noise_log_variance=noise_log_variance)
  loss = prediction_term + beta * compression ** power
  return _output(loss, {"prediction": prediction_term,
                        "compression": compression}, return_terms)


def nib(predictions: ArrayLike, targets: ArrayLike, mean: ArrayLike, *,
        beta: ArrayLike, noise_log_variance: ArrayLike = -1.0,
        return_terms: bool = False):
  """Nonlinear information bottleneck loss (Kolchinsky et al.) for regression.

    L = (1/B) sum_b ||yhat_b - y_b||^2 + beta * I_KDE(x; t),

  with I_KDE the `kde_mutual_information` bound on the encoder means and the
  squared error standing for -I(y; t) (for a Gaussian decoder, I(y; t) >=
  H(y) - E||y - yhat||^2 up to constants, H(y) fixed). `predictions` must be
  decoded from the noisy t = mean + N(0, exp(noise_log_variance) I), e.g.
  ``reparameterize(rng, mean, noise_log_variance)``.

  References:
    Kolchinsky, Tracey, Wolpert, "Nonlinear Information Bottleneck",
    Entropy 2019.

  Args:
    predictions: decoder outputs `[B, d_y]` from the noisy t.
    targets: `[B, d_y]` (scalar targets as `[B, 1]`).
    mean: deterministic encoder outputs `[B, d_t]`.
    beta: non-negative weight of the compression term.
    noise_log_variance: log-variance of the bottleneck noise (default -1).
    return_terms: also return ``{"prediction": MSE, "compression": I_KDE}``.

  Returns:
    Scalar loss (or ``(loss, terms)``).
  """
  return _nib(predictions, targets, mean, beta, noise_log_variance, 1,
              return_terms)


def squared_nib(predictions: ArrayLike, targets: ArrayLike, mean: ArrayLike, *,
                beta: ArrayLike, noise_log_variance: ArrayLike = -1.0,
                return_terms: bool = False):
  """Squared-IB variant of `nib`: the compression term is I_KDE(x; t)^2.

    L = (1/B) sum_b ||yhat_b - y_b||^2 + beta * I_KDE(x; t)^2.

  Squaring the compression term makes the IB Lagrangian strictly convex in
  I(x; t), so different betas reach different points of the IB curve even
  when y is a deterministic function of x.

  References:
    Kolchinsky, Tracey, Van Kuyk, "Caveats for information bottleneck in
    deterministic scenarios", ICLR 2019.

  Args:
    predictions: decoder outputs `[B, d_y]` from the noisy t.
    targets: `[B, d_y]` (scalar targets as `[B, 1]`).
    mean: deterministic encoder outputs `[B, d_t]`.
    beta: non-negative weight of the squared compression term.
    noise_log_variance: log-variance of the bottleneck noise (default -1).
    return_terms: also return ``{"prediction": MSE, "compression": I_KDE}``
      (the compression entry is I_KDE itself, not its square).

  Returns:
    Scalar loss (or ``(loss, terms)``).
  """
  return _nib(predictions, targets, mean, beta, noise_log_variance, 2,
              return_terms)


# ----------------------------------------------------------------------------
# HSIC bottleneck.
# ----------------------------------------------------------------------------


def hsic_bottleneck(predictions: ArrayLike, targets: ArrayLike, x: ArrayLike,
                    t: ArrayLike, *, beta: ArrayLike, lambda_y: ArrayLike = 1.0,
                    bandwidth: Bandwidth = 1.0, return_terms: bool = False):
  """HSIC-bottleneck loss: squared error + beta [HSIC(x, t) - lambda_y HSIC(y, t)].

    L = (1/B) sum_b ||yhat_b - y_b||^2 + beta HSIC(x, t) - beta lambda_y HSIC(y, t),

  with the biased Gaussian-kernel estimator `HSIC = tr(K H L H) / (B-1)^2`
  (`divlab.divergences.dependence.hsic`). HSIC stands in for mutual
  information: the first term compresses t with respect to x, the second keeps
  t dependent on y. This is the HSIC-bottleneck regulariser the CS-IB paper
  compares against (after Wang et al.'s HBaR, which adds it to the task loss
  with separate weights lambda_x = beta and lambda_y = beta * lambda_y here;
  Ma et al.'s original HSIC bottleneck trains with the two HSIC terms alone,
  layer by layer, without back-propagation).

  References:
    Ma, Lewis, Kleijn, "The HSIC Bottleneck: Deep Learning without
    Back-Propagation", AAAI 2020; Wang et al., "Revisiting Hilbert-Schmidt
    Information Bottleneck for Adversarial Robustness", NeurIPS 2021.

  Args:
    predictions: decoder outputs `[B, d_y]`.
    targets: `[B, d_y]` (scalar targets as `[B, 1]`).
    x: inputs `[B, ...]` (flattened).
    t: bottleneck representation `[B, d_t]`.
    beta: non-negative weight of the HSIC terms.
    lambda_y: non-negative relative weight of the relevance term HSIC(y, t).
    bandwidth: kernel width for x, y and t (default 1.0), or ``"median"``.
    return_terms: also return ``{"prediction": MSE, "compression":
      HSIC(x, t), "relevance": HSIC(y, t)}``.

  Returns:
    Scalar loss (or ``(loss, terms)``).
  """
  _check_bandwidth(bandwidth)
  _check_weight(beta, "beta")
  _check_weight(lambda_y, "lambda_y")
  predictions, targets = _regression_pair(predictions, targets)
  batch = targets.shape[0]
  x = _batch_features(x, "x", batch)
  t = _batch_features(t, "t", batch)
  sigma_t = resolve_bandwidth(bandwidth, t)
  prediction_term = squared_error(predictions, targets, reduction="mean")
  compression = dependence.hsic(x, t, sigma_x=resolve_bandwidth(bandwidth, x),
                                sigma_y=sigma_t)
  relevance = dependence.hsic(targets, t,
                              sigma_x=resolve_bandwidth(bandwidth, targets),
                              sigma_y=sigma_t)
  loss = prediction_term + beta * (compression - lambda_y * relevance)
  return _output(loss, {"prediction": prediction_term,
                        "compression": compression,
                        "relevance": relevance}, return_terms)
