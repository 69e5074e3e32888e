"""Unlearning methods for a classifier, as loss or gradient functions of ONE model.

Every trainable method reads a zipped batch ``{"forget": {...}, "retain":
{...}}`` (one member's slice; see `divlab.train.zipped`) whose streams carry
``x`` and ``y``, plus what the method needs:

* ``ref_logp`` (forget): log p(y|x) under the original model, for NPO;
* ``target`` (both): the margin to match, for oracle / datamodel matching.

All objectives come from `divlab.losses.unlearning`; the classifier's
log-likelihood of a labelled example is ``-softmax_cross_entropy`` and its
sequence length is 1. The GU variants return ``{'forget', 'retain'}``
gradients for ``gu_project`` (chained before the optimizer).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax

from divlab import eval as dl_eval
from divlab.losses import softmax_cross_entropy
from divlab.losses import unlearning as unlearning_losses
from divlab.train import trainer

ApplyFn = Callable[[Any, jax.Array], jax.Array]

# Display names, in the order of the results table.
LABELS = {
    "noop": "original (no-op)",
    "finetune": "fine-tune on retain",
    "ga": "GA",
    "grad_diff": "GradDiff",
    "npo": "NPO",
    "npo_rt": "NPO+RT",
    "simnpo": "SimNPO",
    "ga_gu": "GA+GU",
    "npo_gu": "NPO+GU",
    "npo_official": "NPO (official regime)",
    "npo_rt_official": "NPO+RT (official regime)",
    "simnpo_official": "SimNPO (official regime)",
    "om": "OM (oracle matching)",
    "dmm": "DMM (datamodel matching)",
    "retrain": "retrain (oracle)",
}
# Methods that do not train: the original models and independent oracles.
UNTRAINED = ("noop", "retrain")
# The same objectives under the optimizer regime of the official NPO / SimNPO
# TOFU configs, scaled to this model (``unlearn.official``: AdamW at a small
# lr with warm-up and decay, NPO beta 0.1).
OFFICIAL_REGIME = {"npo_official": "npo", "npo_rt_official": "npo_rt",
                   "simnpo_official": "simnpo"}
# Methods whose batches carry a margin `target`, and where it comes from.
TARGETS = {"om": "oracle", "dmm": "datamodel"}
# GU's second-moment estimate (metric 'adam'): optax.adam's defaults, which the
# downstream optimizer uses too.
GU_B2 = 0.999
GU_EPS = 1e-8


class Method(NamedTuple):
  """What the ensemble trainer needs for one method.

  Attributes:
    loss_fn: ``loss_fn(params, batch, rng) -> (loss, aux)`` or None.
    gradient_fn: ``gradient_fn(params, batch, rng) -> (loss, aux, grads)``
      (GU) or None.
    tx: the optimizer of one member.
  """
  loss_fn: Optional[Callable]
  gradient_fn: Optional[Callable]
  tx: optax.GradientTransformation


def _log_likelihood(apply_fn: ApplyFn, params, stream: dict) -> jax.Array:
  return -softmax_cross_entropy(apply_fn(params, stream["x"]), stream["y"])


def _retain_nll(apply_fn: ApplyFn, params, stream: dict) -> jax.Array:
  return -jnp.mean(_log_likelihood(apply_fn, params, stream))


def _margin_error(apply_fn: ApplyFn, params, stream: dict) -> jax.Array:
  margins = dl_eval.margins(apply_fn(params, stream["x"]), stream["y"])
  return jnp.mean(jnp.square(margins - stream["target"]))


def forget_loss(name: str, apply_fn: ApplyFn, params, forget: dict,
                config: ml_collections.ConfigDict) -> jax.Array:
  """The forget term of GA / NPO / SimNPO (batch mean)."""
  logp = _log_likelihood(apply_fn, params, forget)
  if name == "ga":
    return unlearning_losses.gradient_ascent(logp, reduction="mean")
  if name == "npo":
    return unlearning_losses.npo(logp, forget["ref_logp"], beta=config.npo_beta,
                                 reduction="mean")
  if name == "simnpo":
    return unlearning_losses.simnpo(logp, jnp.ones(logp.shape, jnp.int32),
                                    beta=config.simnpo_beta, gamma=config.simnpo_gamma,
                                    reduction="mean")
  raise ValueError(f"no forget loss named {name!r}.")


def make_method(name: str, apply_fn: ApplyFn,
                config: ml_collections.ConfigDict) -> Method:
  """Builds method ``name`` from the ``unlearn`` node of the config.

  Args:
    name: a key of `LABELS` other than the untrained ones.
    apply_fn: ``apply_fn(params, x) -> logits`` of one model.
    config: the config's ``unlearn`` node (``npo_beta``, ``simnpo_beta``,
      ``simnpo_gamma``, ``retain_weight``, ``gu_metric``, ``num_steps``,
      ``optimizer``, ``learning_rates``, and ``official`` for the
      ``*_official`` names: an optimizer node plus ``npo_beta``).
  """
  if name in OFFICIAL_REGIME:
    official = dict(config.official)
    regime = ml_collections.ConfigDict(config.to_dict())
    regime.npo_beta = float(official.pop("npo_beta"))
    regime.optimizer = ml_collections.ConfigDict(official)
    regime.learning_rates = ml_collections.ConfigDict()
    return make_method(OFFICIAL_REGIME[name], apply_fn, regime)
  optimizer = ml_collections.ConfigDict(dict(config.optimizer))
  optimizer.learning_rate = float(config.learning_rates.get(name,
                                                            optimizer.learning_rate))
  base_tx = trainer.make_optimizer(optimizer, int(config.num_steps))
  weight = float(config.retain_weight)

  def logps(params, batch):
    return (_log_likelihood(apply_fn, params, batch["forget"]),
            _log_likelihood(apply_fn, params, batch["retain"]))

  if name == "finetune":
    def loss_fn(params, batch, rng):
      del rng
      return _retain_nll(apply_fn, params, batch["retain"]), {}
  elif name in ("ga", "npo", "simnpo"):
    def loss_fn(params, batch, rng):
      del rng
      return forget_loss(name, apply_fn, params, batch["forget"], config), {}
  elif name == "grad_diff":
    def loss_fn(params, batch, rng):
      del rng
      forget_logp, retain_logp = logps(params, batch)
      return unlearning_losses.grad_diff(forget_logp, retain_logp,
                                         retain_weight=weight, reduction="mean"), {}
  elif name == "npo_rt":
    def loss_fn(params, batch, rng):
      del rng
      forget_logp, retain_logp = logps(params, batch)
      return unlearning_losses.npo_rt(forget_logp, batch["forget"]["ref_logp"],
                                      retain_logp, beta=config.npo_beta,
                                      retain_weight=weight, reduction="mean"), {}
  elif name in TARGETS:
    def loss_fn(params, batch, rng):
      del rng
      forget_error = _margin_error(apply_fn, params, batch["forget"])
      retain_error = _margin_error(apply_fn, params, batch["retain"])
      return forget_error + retain_error, {"forget_margin_mse": forget_error,
                                           "retain_margin_mse": retain_error}
  elif name in ("ga_gu", "npo_gu"):
    forget_name = name[:-len("_gu")]

    def gradient_fn(params, batch, rng):
      del rng
      forget_value, forget_grads = jax.value_and_grad(
          lambda p: forget_loss(forget_name, apply_fn, p, batch["forget"], config))(params)
      retain_value, retain_grads = jax.value_and_grad(
          lambda p: weight * _retain_nll(apply_fn, p, batch["retain"]))(params)
      grads = unlearning_losses.gu_inputs(forget_grads, retain_grads)
      return forget_value + retain_value, {"forget_loss": forget_value,
                                           "retain_loss": retain_value}, grads

    tx = optax.chain(unlearning_losses.gu_project(metric=config.gu_metric, b2=GU_B2,
                                                  eps=GU_EPS), base_tx)
    return Method(loss_fn=None, gradient_fn=gradient_fn, tx=tx)
  else:
    raise ValueError(f"unknown unlearning method {name!r}; choose from "
                     f"{sorted(set(LABELS) - set(UNTRAINED))}.")
  return Method(loss_fn=loss_fn, gradient_fn=None, tx=base_tx)


def gu_alignment(name: str, apply_fn: ApplyFn, params, opt_state, probe: dict,
                 config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """How GU's forget direction sits against the retain gradient, per member.

  On a fixed probe batch: the cosine between the forget-loss gradient g_f
  and the retain-loss gradient g_r before projection, and between the
  projected g_f_perp and g_r after, both in the metric GU projects in
  (``<a, b>_H = sum a b / (sqrt(v_hat) + eps)`` with the transform's own
  second-moment estimate for ``gu_metric='adam'``; Euclidean otherwise).
  After projection it is ~0: Adam's preconditioned step along g_f_perp
  leaves the retain loss unchanged to first order.

  Args:
    name: ``'ga_gu'`` or ``'npo_gu'``.
    apply_fn: one model's ``apply_fn(params, x)``.
    params: stacked params ``[K, ...]``.
    opt_state: stacked state of ``optax.chain(gu_project(...), ...)``.
    probe: ``{"forget": arrays, "retain": arrays, "ref_logp": [K, P]}``: a
      batch shared by the members, and each member's reference
      log-likelihoods of its forget examples (for NPO).
    config: the ``unlearn`` node.

  Returns:
    ``{"cos_before": [K], "cos_after": [K]}``.
  """
  forget_name = name[:-len("_gu")]
  gu_state = opt_state[0]

  def one_member(member_params, count, nu, ref_logp):
    forget = dict(probe["forget"], ref_logp=ref_logp)
    forget_grads = jax.grad(lambda p: forget_loss(
        forget_name, apply_fn, p, forget, config))(member_params)
    retain_grads = jax.grad(lambda p: _retain_nll(apply_fn, p, probe["retain"]))(
        member_params)
    if config.gu_metric == "adam":
      correction = 1 - GU_B2 ** jnp.maximum(count, 1).astype(jnp.float32)
      weights = jax.tree.map(lambda n: 1.0 / (jnp.sqrt(n / correction) + GU_EPS), nu)
    else:
      weights = jax.tree.map(jnp.ones_like, member_params)
    projected = unlearning_losses.project_forget_gradient(
        forget_grads, jax.tree.map(lambda g: g[None], retain_grads),
        metric_weights=weights)

    def cosine(a, b):
      dot = sum(jnp.sum(x * y * w) for x, y, w in zip(
          jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(weights)))
      norm = lambda t: jnp.sqrt(sum(jnp.sum(x * x * w) for x, w in zip(
          jax.tree.leaves(t), jax.tree.leaves(weights))))
      return dot / jnp.maximum(norm(a) * norm(b), 1e-30)

    return {"cos_before": cosine(forget_grads, retain_grads),
            "cos_after": cosine(projected, retain_grads)}

  nu = gu_state.nu if config.gu_metric == "adam" else jax.tree.map(jnp.zeros_like, params)
  return jax.vmap(one_member)(params, gu_state.count, nu, probe["ref_logp"])
