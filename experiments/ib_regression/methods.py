"""What each compared method optimises and what is measured on held-out data.

A method is a name in ``METHODS``. `make_loss_fn` turns a method into a pure
``loss_fn(params, batch, rng, beta)`` over a `divlab.models.BottleneckMLP`,
calling the losses of `divlab.losses.bottleneck`; `make_eval_metrics` gives
the per-example squared errors, clean and under FGSM, that the shared eval
step sums; `information_plane` measures I(X;T) and I(Y;T) of a trained model.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from divlab import models
from divlab.divergences import kernel
from divlab.losses import bottleneck

# Methods of the comparison. "cs_ib" is the paper's Prop. 1 estimator;
# "cs_ib_sse" trains with what the released script's prediction term collapses
# to on 1-D targets (batch SSE + beta I_CS: the loss behind the paper's
# numbers); "cs_ib_sum_k2" is Prop. 1 with the released code's denominator
# sum_i K_ji^2 instead of (sum_i K_ji)^2 (an ablation).
METHODS = ("mse", "vib", "nib", "squared_nib", "hsic", "cs_ib", "cs_ib_sse",
           "cs_ib_sum_k2")
LABELS = {"mse": "MSE", "vib": "VIB", "nib": "NIB", "squared_nib": "squared-NIB",
          "hsic": "HSIC", "cs_ib": "CS-IB (Prop. 1)",
          "cs_ib_sse": "CS-IB (official: SSE + beta I_CS)",
          "cs_ib_sum_k2": "CS-IB (Prop. 1, official sum K^2 denominator)"}
# The cs_ib prediction term each CS-IB variant trains with.
CS_IB_PREDICTION = {"cs_ib": "cs", "cs_ib_sse": "sse", "cs_ib_sum_k2": "cs_sum_of_squares"}


def check_methods(methods: Sequence[str]) -> None:
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    raise ValueError(f"`methods` has unknown entries {unknown}; choose from {METHODS}.")


def model_spec(config: ml_collections.ConfigDict, method: str,
               num_outputs: int) -> dict[str, Any]:
  """``divlab.models.build`` arguments; VIB's encoder is Gaussian."""
  return {"name": "bottleneck_mlp", "num_outputs": num_outputs,
          "encoder_hidden": tuple(config.model.encoder_hidden),
          "bottleneck_dim": int(config.model.bottleneck_dim),
          "decoder_hidden": tuple(config.model.decoder_hidden),
          "stochastic": method == "vib"}


def bandwidth(config: ml_collections.ConfigDict):
  """The kernel-width setting of the kernel losses: a number or "median"."""
  rule = config.loss.bandwidth_rule
  if rule == "fixed":
    return float(config.loss.sigma)
  if rule == "median":
    return "median"
  raise ValueError(f"`loss.bandwidth_rule`={rule!r}: use 'fixed' or 'median'.")


def make_loss_fn(config: ml_collections.ConfigDict, method: str, model) -> Callable:
  """The training objective of ``method``, with its weight ``beta`` an argument.

  ``loss_fn(params, batch, rng, beta)``: beta is a traced train-step argument
  (``parallel.make_train_step(..., loss_args={"beta": b})``), so one compiled
  step serves every beta of the sweep. MSE ignores it.

  Every method decodes from the bottleneck of the same architecture. VIB
  samples t from its Gaussian encoder and NIB / squared-NIB add fixed
  Gaussian noise to the encoder output (both with the step's key); the
  others use the deterministic t, as the CS-IB script does.
  """
  check_methods([method])
  width = bandwidth(config)
  loss_config = config.loss

  def loss_fn(params, batch, rng, beta):
    x, y = batch["x"], batch["y"]
    variables = {"params": params}
    mean, log_variance = model.apply(variables, x, method="encode")

    def decode(t):
      return model.apply(variables, t, method="decode")

    if method == "mse":
      loss, terms = bottleneck.mse(decode(mean), y, return_terms=True)
    elif method == "vib":
      t = bottleneck.reparameterize(rng, mean, log_variance)
      loss, terms = bottleneck.vib(
          decode(t), y, mean, log_variance, beta=beta,
          decoder_variance=loss_config.vib_decoder_variance, return_terms=True)
    elif method in ("nib", "squared_nib"):
      noise_log_variance = loss_config.nib_noise_log_variance
      t = bottleneck.reparameterize(rng, mean, noise_log_variance)
      fn = bottleneck.nib if method == "nib" else bottleneck.squared_nib
      loss, terms = fn(decode(t), y, mean, beta=beta,
                       noise_log_variance=noise_log_variance, return_terms=True)
    elif method == "hsic":
      loss, terms = bottleneck.hsic_bottleneck(
          decode(mean), y, x, mean, beta=beta, lambda_y=loss_config.hsic_lambda_y,
          bandwidth=width, return_terms=True)
    else:  # the CS-IB variants
      loss, terms = bottleneck.cs_ib(
          decode(mean), y, x, mean, beta=beta, prediction=CS_IB_PREDICTION[method],
          bandwidth=width, return_terms=True)
    return loss, dict(terms)

  return loss_fn


def fgsm_key(epsilon: float) -> str:
  return f"fgsm_{epsilon:g}"


def make_eval_metrics(model, epsilons: Sequence[float]) -> Callable:
  """Per-example squared error of the deterministic prediction, clean and FGSM.

  FGSM for regression (Goodfellow et al., 2015, as in the CS-IB code's
  attack): x_adv = x + eps * sign(grad_x ||f(x) - y||^2), one signed-gradient
  step on the standardised inputs. Rows of a batch do not interact, so the
  gradient of the batch sum gives every example its own attack.
  """
  epsilons = tuple(float(e) for e in epsilons)

  def per_example(params, batch):
    x, y = batch["x"], batch["y"]

    def predict(inputs):
      return model.apply({"params": params}, inputs)

    def squared(inputs):
      return jnp.sum(jnp.square(predict(inputs) - y), axis=-1)

    out = {"sq_err": squared(x)}
    direction = jnp.sign(jax.grad(lambda inputs: jnp.sum(squared(inputs)))(x))
    for epsilon in epsilons:
      out[fgsm_key(epsilon)] = squared(x + epsilon * direction)
    return out

  return per_example


def information_plane(model, params, x: jax.Array, y: jax.Array,
                      width) -> dict[str, float]:
  """Normalised CS-QMI I(X;T) and I(Y;T) of the encoder mean on held-out data.

  The estimator and kernel widths are those of the CS-IB compression term
  (`kernel.cs_mutual_information(normalized=True)`), applied to the
  standardised x, the standardised y and t = the encoder mean.
  """
  mean, _ = model.apply({"params": params}, x, method="encode")
  sigma_x = bottleneck.resolve_bandwidth(width, x)
  sigma_y = bottleneck.resolve_bandwidth(width, y)
  sigma_t = bottleneck.resolve_bandwidth(width, mean)
  i_xt = kernel.cs_mutual_information(x, mean, sigma_x=sigma_x, sigma_t=sigma_t,
                                      normalized=True)
  i_yt = kernel.cs_mutual_information(y, mean, sigma_x=sigma_y, sigma_t=sigma_t,
                                      normalized=True)
  return {"i_xt": i_xt, "i_yt": i_yt}


def build_model(config: ml_collections.ConfigDict, method: str, num_outputs: int):
  spec = model_spec(config, method, num_outputs)
  return models.build(**spec), spec
