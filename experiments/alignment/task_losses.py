"""The preference losses of the language-task setting, on batches of pairs.

Every method is a pure function of the policy's and the (frozen SFT)
reference's statistics of one batch of pairs, so all methods of a group can
share one compiled, vmapped train step: the member's ``method`` id picks its
loss, and the transformer's forward/backward runs once per member whatever
the method.

Sum vs mean follows each paper (see `divlab.losses.preference`): DPO, f-DPO,
TDPO and KTO take summed completion log-probabilities; IPO, SimPO and ORPO
per-token means.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from divlab.losses import preference
from divlab.losses import sequence

# name -> display label.
METHODS = {
    "dpo": "DPO",
    "ipo": "IPO",
    "f_dpo_reverse_kl": "f-DPO reverse KL",
    "f_dpo_js": "f-DPO JS",
    "f_dpo_alpha": "f-DPO alpha=0.5",
    "f_dpo_forward_kl": "f-DPO forward KL",
    "tdpo": "TDPO2",
    "simpo": "SimPO",
    "orpo": "ORPO",
    "kto": "KTO",
}
F_DPO = {"f_dpo_reverse_kl": "reverse_kl", "f_dpo_js": "js", "f_dpo_alpha": "alpha",
         "f_dpo_forward_kl": "forward_kl"}
# Methods whose loss needs the policy on mismatched (prompt, completion) pairs.
NEEDS_MISMATCHED = ("kto",)


def check_methods(methods: Sequence[str]) -> None:
  unknown = [m for m in methods if m not in METHODS]
  if unknown or not methods:
    raise ValueError(f"`methods` {tuple(methods)}: unknown {unknown}; choose from "
                     f"{sorted(METHODS)}.")


def completion_logits(apply_fn: Callable, params: Any, prompt: jax.Array,
                      completion: jax.Array, **kwargs) -> jax.Array:
  """``[B, C, V]``: the logits that predict each completion token.

  The model reads ``prompt + completion[:-1]``; position ``P - 1 + t``
  predicts completion token ``t``. Padding after ``EOS`` sits to the right,
  so causal attention keeps it out of every scored position.
  """
  tokens = jnp.concatenate([prompt, completion], axis=1)[:, :-1]
  return apply_fn(params, tokens, **kwargs)[:, prompt.shape[1] - 1:]


def _stats(logits, tokens, mask):
  token_logp = sequence.token_log_probs(logits, tokens, mask)
  return sequence.sequence_sum(token_logp, mask), sequence.sequence_mean(token_logp, mask)


def method_loss(method: str, hparams: Mapping[str, Any], beta: float, batch: dict,
                policy: dict) -> jax.Array:
  """The batch-mean loss of ``method``.

  Args:
    method: a key of `METHODS`.
    hparams: the method's extra hyper-parameters (alpha, SimPO's beta, ...).
    beta: the reference-based methods' inverse temperature.
    batch: the pair arrays (``chosen``, ``rejected`` tokens and masks,
      ``ref_chosen_logits``, ``ref_rejected_logits``, and for KTO
      ``ref_mismatched_logp`` / ``mismatched_mask``).
    policy: the policy's ``chosen_logits``, ``rejected_logits`` and, for KTO,
      ``mismatched_logits``.
  """
  h = dict(hparams)
  cw, cm = batch["chosen"], batch["chosen_mask"]
  rw, rm = batch["rejected"], batch["rejected_mask"]
  lw_sum, lw_mean = _stats(policy["chosen_logits"], cw, cm)
  ll_sum, ll_mean = _stats(policy["rejected_logits"], rw, rm)
  ref_w_sum, ref_w_mean = _stats(batch["ref_chosen_logits"], cw, cm)
  ref_l_sum, ref_l_mean = _stats(batch["ref_rejected_logits"], rw, rm)
  if method == "dpo":
    return preference.dpo(lw_sum, ll_sum, ref_w_sum, ref_l_sum, beta=beta,
                          reduction="mean")
  if method == "ipo":
    return preference.ipo(lw_mean, ll_mean, ref_w_mean, ref_l_mean, beta=beta,
                          reduction="mean")
  if method in F_DPO:
    return preference.f_dpo(lw_sum, ll_sum, ref_w_sum, ref_l_sum,
                            divergence=F_DPO[method], alpha=h.get("alpha", 0.5),
                            beta=beta, reduction="mean")
  if method == "tdpo":
    return preference.tdpo(policy["chosen_logits"], policy["rejected_logits"],
                           batch["ref_chosen_logits"], batch["ref_rejected_logits"],
                           cw, rw, chosen_where=cm, rejected_where=rm,
                           variant=int(h.get("variant", 2)), alpha=h.get("alpha", 0.5),
                           beta=beta, reduction="mean")
  if method == "simpo":
    return preference.simpo(lw_mean, ll_mean, beta=h.get("beta", 2.0),
                            gamma_beta_ratio=h.get("gamma_beta_ratio", 0.25),
                            reduction="mean")
  if method == "orpo":
    return preference.orpo(lw_mean, ll_mean,
                           odds_ratio_weight=h.get("odds_ratio_weight", 0.1),
                           reduction="mean")
  if method == "kto":
    # Each pair gives one desirable (chosen) and one undesirable (rejected)
    # example; z0 comes from the policy on mismatched (prompt, completion)
    # pairs, as in the HALOs and TRL trainers.
    mis_sum, _ = _stats(policy["mismatched_logits"], batch["mismatched"],
                        batch["mismatched_mask"])
    logp = jnp.concatenate([lw_sum, ll_sum])
    ref_logp = jnp.concatenate([ref_w_sum, ref_l_sum])
    desirable = jnp.concatenate([jnp.ones_like(lw_sum, bool), jnp.zeros_like(ll_sum, bool)])
    return preference.kto(logp, ref_logp, desirable, mismatched_logp=mis_sum,
                          mismatched_ref_logp=batch["ref_mismatched_logp"], beta=beta,
                          desirable_weight=h.get("desirable_weight", 1.0),
                          undesirable_weight=h.get("undesirable_weight", 1.0),
                          reduction="mean")
  raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}.")


def make_group_loss(methods: Sequence[str], apply_fn: Callable,
                    hparams: Mapping[str, Mapping[str, Any]], beta: float,
                    dropout: bool) -> Callable:
  """``loss_fn(params, batch, rng)`` of one member whose ``batch["method"]``
  indexes ``methods``.

  Every method's loss is computed from one forward pass and the member's own
  is selected; the others get a zero cotangent, so the gradient is exactly
  that method's.
  """
  check_methods(methods)
  needs_mismatched = any(m in NEEDS_MISMATCHED for m in methods)

  def loss_fn(params, batch, rng):
    kwargs = {"train": True, "rngs": {"dropout": rng}} if dropout else {}
    policy = {
        "chosen_logits": completion_logits(apply_fn, params, batch["prompt"],
                                           batch["chosen"], **kwargs),
        "rejected_logits": completion_logits(apply_fn, params, batch["prompt"],
                                             batch["rejected"], **kwargs)}
    if needs_mismatched:
      policy["mismatched_logits"] = completion_logits(
          apply_fn, params, batch["prompt"], batch["mismatched"], **kwargs)
    losses = jnp.stack([method_loss(m, hparams.get(m, {}), beta, batch, policy)
                        for m in methods])
    chosen = jax.nn.one_hot(batch["method"][0], len(methods), dtype=losses.dtype)
    return jnp.sum(jnp.where(chosen > 0, losses, 0.0)), {}

  return loss_fn
