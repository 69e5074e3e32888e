"""Policy-gradient objectives with divergence regularisers (GRPO family,
KL estimators, TOPR, DisCO, DPH-RL, KDRL).

Every function is pure and written to be **minimised**. Conventions:

* Per-token inputs are ``[B, T]`` (``B`` sampled completions, ``T`` tokens)
  with a token mask ``where`` (False at padding); per-sequence inputs are
  ``[B]``. ``logp`` is ``log pi_theta`` of the sampled tokens (differentiated);
  ``old_logp`` (the sampling policy), ``ref_logp`` (the reference / initial
  policy) and ``teacher_logp`` enter as constants (``stop_gradient``).
* Rewards, advantages, clipping weights and KL penalties placed in the reward
  are constants too: only ``logp`` carries a gradient.
* Token losses are turned into a scalar by `divlab.losses.reduce_loss` (no
  ad-hoc ``.mean()``), so padding never counts and a fully masked batch gives 0.
* Bad options or shapes raise a ValueError naming the argument.

The KL estimators (Schulman, "Approximating KL divergence", 2020) with
``log r = ref_logp - logp`` on tokens sampled from ``pi``:
``k1 = -log r``, ``k2 = (log r)^2 / 2``, ``k3 = r - 1 - log r``. What their
*gradient* estimates depends on where they are placed (derived exactly on an
enumerable policy in the tests and in ``configs/policy_rl/exact.py``):

======================  ============================  ===========================
placement               one-step bandit               sequence (T > 1)
======================  ============================  ===========================
k1 in the loss          0 (E[grad log pi] = 0)        0
k2 (= k1+, k3+) in loss grad KL(pi || ref)            per-token reverse KL only:
                                                      misses the future-KL terms
k3 in the loss          grad KL(ref || pi) (forward)  neither sequence KL
k1 in the reward        grad KL(pi || ref)            exact grad KL(pi || ref)
(return-to-go)                                        (the only exact one)
======================  ============================  ===========================
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from divlab import _checks
from divlab.losses.reductions import reduce_loss

__all__ = [
    "group_advantages",
    "kl_estimator",
    "ppo_clip",
    "returns_to_go",
    "grpo_loss",
    "topr",
    "disco",
    "dph_rehearsal",
    "kdrl",
    "KL_KINDS",
    "AGGREGATIONS",
]

ArrayLike = jax.typing.ArrayLike
sg = jax.lax.stop_gradient

KL_KINDS = ("k1", "k2", "k3", "k1+", "k3+")
AGGREGATIONS = ("sequence_mean", "token_mean", "constant")
STD_KINDS = ("unbiased", "biased", "none")


def _as_float(x: ArrayLike, name: str) -> jax.Array:
  x = jnp.asarray(x)
  _checks.check_floating(x, name)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_choice(value: str, name: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


def _tokens(x: ArrayLike, name: str) -> jax.Array:
  x = _as_float(x, name)
  if x.ndim != 2:
    raise ValueError(f"`{name}` must have shape [B, T], got {x.shape}.")
  return x


def _token_mask(where: Optional[ArrayLike], shape) -> jax.Array:
  mask = _checks.broadcast_mask(where, tuple(shape), "where")
  return jnp.ones(shape, bool) if mask is None else mask


# ----------------------------------------------------------------------------
# Advantages.
# ----------------------------------------------------------------------------


def group_advantages(rewards: ArrayLike,
                     group_ids: Optional[ArrayLike] = None,
                     *,
                     std: str = "unbiased",
                     eps: float = 1e-6) -> jax.Array:
  """Group-relative advantages of GRPO / Dr.GRPO: A = (r - mean_g) / (std_g + eps).

  Each reward is compared with the other samples of its prompt (its group).
  ``std`` picks the convention: ``"unbiased"`` the Bessel-corrected sample std
  (TRL's GRPOTrainer, eps 1e-4 there), ``"biased"`` the population std (verl's
  ``compute_grpo_outcome_advantage``, eps 1e-6), ``"none"`` no scaling
  (Dr.GRPO: A = r - mean_g). A group of one sample gets advantage 0 (its mean is
  itself; verl's std 1 for it). For two binary rewards {0, 1} the advantages
  are +-0.707 (unbiased) or +-1 (biased): the stds are 0.707 and 0.5.

  Args:
    rewards: ``[G, n]`` (G groups of n samples, when ``group_ids`` is None) or
      ``[N]`` with ``group_ids``.
    group_ids: optional ``[N]`` integer group of each reward, in ``[0, N)``.
    std: ``"unbiased"``, ``"biased"`` or ``"none"``.
    eps: added to the std before dividing (>= 0).

  Returns:
    Advantages with the shape of ``rewards``, float32 or wider.

  Example:
    >>> group_advantages(jnp.array([[1., 0.], [1., 1.]]), std="biased")
    Array([[ 0.999998, -0.999998],
           [ 0.      ,  0.      ]], dtype=float32)
  """
  _check_choice(std, "std", STD_KINDS)
  _checks.check_in_range(eps, "eps", 0.0, float("inf"))
  r = _as_float(rewards, "rewards")
  if group_ids is None:
    if r.ndim != 2:
      raise ValueError(f"`rewards` must be [G, n] when `group_ids` is None, got {r.shape}.")
    count = jnp.full(r.shape[:1] + (1,), r.shape[1], r.dtype)
    mean = r.mean(-1, keepdims=True)
    sq = ((r - mean) ** 2).sum(-1, keepdims=True)
  else:
    ids = jnp.asarray(group_ids)
    if r.ndim != 1 or ids.shape != r.shape or not jnp.issubdtype(ids.dtype, jnp.integer):
      raise ValueError(f"`group_ids` must be integers of the shape of 1-D `rewards` "
                       f"{r.shape}, got {ids.shape} {ids.dtype}.")
    n = r.shape[0]
    seg = lambda v: jax.ops.segment_sum(v, ids, num_segments=n)[ids]
    count = seg(jnp.ones_like(r))
    mean = seg(r) / count
    sq = seg((r - mean) ** 2)
  centred = r - mean
  if std == "none":
    return centred
  dof = count - 1 if std == "unbiased" else count
  # A single-sample group: centred is 0; divide by 1 instead of 0 / 0.
  scale = jnp.sqrt(jnp.where(count > 1, sq / jnp.maximum(dof, 1), 1.0))
  return centred / (scale + eps)


# ----------------------------------------------------------------------------
# KL estimators and the clipped surrogate.
# ----------------------------------------------------------------------------


def kl_estimator(logp: ArrayLike,
                 ref_logp: ArrayLike,
                 *,
                 kind: str = "k3",
                 clamp: Optional[float] = None) -> jax.Array:
  """Per-token Monte Carlo estimators of KL(pi || ref) on samples of pi.

  With ``log r = ref_logp - logp``:

  * ``k1 = -log r`` (unbiased, high variance, can be negative);
  * ``k2 = (log r)^2 / 2`` (biased, low variance);
  * ``k3 = r - 1 - log r`` (unbiased, >= 0);
  * ``k1+`` / ``k3+``: the value of k1 / k3 with the gradient of k2
    (straight-through: ``k2 + sg(k - k2)``), as verl's ``low_var_kl+``-style
    kinds.

  Their *expected gradient* as a loss term (module docstring table): k1 gives 0;
  k2, k1+ and k3+ give grad KL(pi || ref) for a bandit (per-token only for
  sequences); k3 gives grad KL(ref || pi), the forward KL, for a bandit. For the
  exact sequence-level reverse-KL gradient put k1 in the reward with
  return-to-go (`grpo_loss` with ``kl_in="reward"``).

  Args:
    logp: ``[...]`` log pi of the sampled tokens (differentiated).
    ref_logp: ``[...]`` log pi_ref of the same tokens (a constant).
    kind: one of ``KL_KINDS``.
    clamp: optional bound c > 0: the value is clipped to ``[-c, c]`` (verl clamps
      k3 to +-10), which zeroes the gradient where the estimate is largest.

  Returns:
    ``[...]`` per-token estimates, float32 or wider.

  Example:
    >>> kl_estimator(jnp.log(jnp.array([0.5])), jnp.log(jnp.array([0.25])), kind="k3")
    Array([0.19314718], dtype=float32)
  """
  _check_choice(kind, "kind", KL_KINDS)
  if clamp is not None:
    _checks.check_positive(clamp, "clamp")
  logp = _as_float(logp, "logp")
  ref_logp = sg(_as_float(ref_logp, "ref_logp"))
  _checks.check_same_shape(logp, ref_logp, "logp", "ref_logp")
  log_r = ref_logp - logp
  k1 = -log_r
  k2 = 0.5 * log_r ** 2
  k3 = jnp.expm1(log_r) - log_r
  value = {"k1": k1, "k2": k2, "k3": k3, "k1+": k2 + sg(k1 - k2),
           "k3+": k2 + sg(k3 - k2)}[kind]
  return value if clamp is None else jnp.clip(value, -clamp, clamp)


def ppo_clip(logp: ArrayLike,
             old_logp: ArrayLike,
             advantages: ArrayLike,
             *,
             clip_low: float = 0.2,
             clip_high: float = 0.2,
             dual_clip: Optional[float] = None,
             log_ratio_clamp: float = 20.0) -> jax.Array:
  """Per-token PPO clipped surrogate: -min(rho A, clip(rho, 1 - e_lo, 1 + e_hi) A).

  ``rho = exp(logp - old_logp)``; the log-ratio is clamped to
  ``+-log_ratio_clamp`` first (verl: 20) so a stale token cannot overflow.
  ``dual_clip`` c > 1 (Ye et al. 2020, verl's ``clip_ratio_c`` 3) bounds the loss
  of negative advantages: ``min(loss, -c A)`` where ``A < 0``. DAPO's
  clip-higher is ``clip_high=0.28``.

  Args:
    logp: ``[B, T]`` (or any shape) log pi_theta of the sampled tokens.
    old_logp: same shape, log pi_old (constant).
    advantages: broadcastable to ``logp`` (``[B, 1]`` for sequence-level ones).
    clip_low: e_lo in [0, 1).
    clip_high: e_hi >= 0.
    dual_clip: None or c > 1.
    log_ratio_clamp: bound on ``|logp - old_logp|`` (> 0).

  Returns:
    Per-token losses of ``logp``'s shape (no reduction).

  Example:
    >>> ppo_clip(jnp.log(jnp.array([0.6])), jnp.log(jnp.array([0.4])), jnp.array([1.]))
    Array([-1.2], dtype=float32)
  """
  _checks.check_in_range(clip_low, "clip_low", 0.0, 1.0, high_inclusive=False)
  _checks.check_in_range(clip_high, "clip_high", 0.0, float("inf"))
  _checks.check_positive(log_ratio_clamp, "log_ratio_clamp")
  if dual_clip is not None:
    _checks.check_in_range(dual_clip, "dual_clip", 1.0, float("inf"), low_inclusive=False)
  logp = _as_float(logp, "logp")
  old_logp = sg(_as_float(old_logp, "old_logp"))
  _checks.check_same_shape(logp, old_logp, "logp", "old_logp")
  adv = sg(_as_float(advantages, "advantages"))
  try:
    adv = jnp.broadcast_to(adv, logp.shape)
  except ValueError as e:
    raise ValueError(f"`advantages` of shape {adv.shape} does not broadcast to "
                     f"{logp.shape}.") from e
  ratio = jnp.exp(jnp.clip(logp - old_logp, -log_ratio_clamp, log_ratio_clamp))
  clipped = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  loss = jnp.maximum(-ratio * adv, -clipped * adv)
  if dual_clip is not None:
    loss = jnp.where(adv < 0, jnp.minimum(loss, -dual_clip * adv), loss)
  return loss


def returns_to_go(token_rewards: ArrayLike,
                  where: Optional[ArrayLike] = None) -> jax.Array:
  """Undiscounted return-to-go per token: G_t = sum_{s >= t} where_s c_s.

  Args:
    token_rewards: ``[B, T]`` per-token rewards.
    where: optional ``[B, T]`` token mask.

  Returns:
    ``[B, T]`` returns (0 at masked positions).

  Example:
    >>> returns_to_go(jnp.array([[1., 2., 3.]]))
    Array([[6., 5., 3.]], dtype=float32)
  """
  c = _tokens(token_rewards, "token_rewards")
  mask = _token_mask(where, c.shape)
  c = jnp.where(mask, c, 0)
  rtg = jnp.flip(jnp.cumsum(jnp.flip(c, -1), -1), -1)
  return jnp.where(mask, rtg, 0)


def _aggregate(token_losses: jax.Array, mask: jax.Array, aggregation: str,
               normalizer: Optional[ArrayLike], max_length: Optional[int]) -> jax.Array:
  """GRPO / DAPO / Dr.GRPO aggregations expressed with `reduce_loss`."""
  if aggregation == "sequence_mean":
    if normalizer is None:
      return reduce_loss(token_losses, "sequence_mean", where=mask)
    per_seq = reduce_loss(token_losses, "none", where=mask).sum(-1) / jnp.maximum(
        mask.sum(-1), 1)
    return reduce_loss(per_seq, "normalizer", normalizer=normalizer)
  if aggregation == "token_mean":
    if normalizer is None:
      return reduce_loss(token_losses, "mean", where=mask)
    return reduce_loss(token_losses, "normalizer", where=mask, normalizer=normalizer)
  if normalizer is None:
    length = token_losses.shape[-1] if max_length is None else int(max_length)
    normalizer = token_losses.shape[0] * length
  return reduce_loss(token_losses, "normalizer", where=mask, normalizer=normalizer)


def grpo_loss(logp: ArrayLike,
              old_logp: ArrayLike,
              advantages: ArrayLike,
              where: Optional[ArrayLike] = None,
              *,
              ref_logp: Optional[ArrayLike] = None,
              kl_coef: float = 0.0,
              kl_in: str = "loss",
              kl_kind: str = "k3",
              kl_clamp: Optional[float] = None,
              aggregation: str = "sequence_mean",
              normalizer: Optional[ArrayLike] = None,
              max_length: Optional[int] = None,
              clip_low: float = 0.2,
              clip_high: float = 0.2,
              dual_clip: Optional[float] = None) -> jax.Array:
  """GRPO-family objective: PPO-clip on group advantages with a KL to a reference.

  Per token ``l_t = ppo_clip(logp_t, old_logp_t, A_t) [+ beta k(logp_t, ref_t)]``
  then an aggregation (all via `reduce_loss`):

  * ``"sequence_mean"`` (GRPO): mean over sequences of each one's token mean;
  * ``"token_mean"`` (DAPO): sum over tokens / number of tokens;
  * ``"constant"`` (Dr.GRPO): sum over tokens / (B * L_max), L_max =
    ``max_length`` or T (TRL's normaliser; verl divides by L_max alone, a factor
    B larger: pass ``normalizer=L_max`` for it).

  With ``normalizer`` (e.g. the global token or sequence count of a
  gradient-accumulation step) the sum is divided by it instead, so micro-batches
  add up exactly. The three coincide when every sequence has T tokens.

  KL placement: ``kl_in="loss"`` adds ``kl_coef * kl_estimator(kind=kl_kind)``
  per token; ``kl_in="reward"`` subtracts the k1 penalty from the reward, as a
  constant return-to-go added to the advantage:
  ``A_t <- A_t - kl_coef * sum_{s >= t} sg(logp_s - ref_s)`` (not group
  normalised), which gives the exact gradient of KL(pi || ref) for sequences.

  Source: DeepSeekMath (GRPO), DAPO, Dr.GRPO (Liu et al. 2025); defaults of
  TRL / verl (clip 0.2, dual clip off).

  Args:
    logp: ``[B, T]`` log pi_theta of the sampled tokens.
    old_logp: ``[B, T]`` log pi_old (equal to ``sg(logp)`` when on-policy).
    advantages: ``[B]`` (or ``[B, 1]``) sequence advantages (`group_advantages`)
      or ``[B, T]`` per-token ones.
    where: ``[B, T]`` completion-token mask.
    ref_logp: ``[B, T]`` reference log-probs, needed when ``kl_coef > 0``.
    kl_coef: beta >= 0.
    kl_in: ``"loss"`` or ``"reward"``.
    kl_kind: estimator for ``kl_in="loss"`` (one of ``KL_KINDS``).
    kl_clamp: optional clamp of the estimator's value.
    aggregation: one of ``AGGREGATIONS``.
    normalizer: optional divisor replacing the aggregation's own.
    max_length: L_max of ``"constant"`` (default T).
    clip_low, clip_high, dual_clip: as in `ppo_clip`.

  Returns:
    The scalar loss.

  Example:
    >>> logp = jnp.log(jnp.array([[0.5, 0.5], [0.25, 0.5]]))
    >>> grpo_loss(logp, logp, jnp.array([1., -1.]))
    Array(0., dtype=float32)
  """
  _check_choice(aggregation, "aggregation", AGGREGATIONS)
  _check_choice(kl_in, "kl_in", ("loss", "reward"))
  _check_choice(kl_kind, "kl_kind", KL_KINDS)
  _checks.check_in_range(kl_coef, "kl_coef", 0.0, float("inf"))
  if kl_clamp is not None:  # checked here so that the message names `kl_clamp`
    _checks.check_positive(kl_clamp, "kl_clamp")
  if max_length is not None:
    _checks.check_count(max_length, "max_length")
  logp = _tokens(logp, "logp")
  mask = _token_mask(where, logp.shape)
  adv = sg(_as_float(advantages, "advantages"))
  # Only the documented layouts: a [T] array would broadcast along the tokens.
  if adv.shape not in (logp.shape[:1], logp.shape[:1] + (1,), logp.shape):
    raise ValueError(f"`advantages` must have shape {logp.shape[:1]} (per sequence) "
                     f"or {logp.shape} (per token), got {adv.shape}.")
  if adv.shape == logp.shape[:1]:
    adv = adv[:, None]
  zero_coef = _checks.is_concrete_number(kl_coef) and float(kl_coef) == 0
  if ref_logp is None and not zero_coef:
    raise ValueError("`ref_logp` must be given when `kl_coef` > 0.")
  use_kl = ref_logp is not None and not zero_coef
  if use_kl and kl_in == "reward":
    k1 = sg(kl_estimator(logp, ref_logp, kind="k1"))
    adv = adv - kl_coef * returns_to_go(k1, mask)
  token_losses = ppo_clip(logp, old_logp, adv, clip_low=clip_low, clip_high=clip_high,
                          dual_clip=dual_clip)
  if use_kl and kl_in == "loss":
    token_losses = token_losses + kl_coef * kl_estimator(logp, ref_logp, kind=kl_kind,
                                                         clamp=kl_clamp)
  return _aggregate(token_losses, mask, aggregation, normalizer, max_length)


# ----------------------------------------------------------------------------
# Off-policy and constrained objectives.
# ----------------------------------------------------------------------------


def topr(logp_seq: ArrayLike,
         behaviour_logp_seq: ArrayLike,
         rewards: ArrayLike) -> jax.Array:
  """Tapered off-policy REINFORCE (TOPR, Le Roux et al. 2025), per sequence.

  ``loss = -sg(alpha) R log pi(y|x)`` with ``alpha = 1`` for ``R >= 0`` and
  ``alpha = clip(pi(y|x) / mu(y|x), 0, 1)`` for ``R < 0`` (``mu`` the behaviour
  policy that produced ``y``): positive samples are imitated as in SFT, negative
  ones are pushed down only while pi still puts more mass on them than mu did,
  which keeps the objective bounded. The ratio is sequence-level, as in the paper.

  Args:
    logp_seq: ``[B]`` log pi(y|x) (summed token log-probs).
    behaviour_logp_seq: ``[B]`` log mu(y|x) (constant).
    rewards: ``[B]`` rewards R (any sign).

  Returns:
    ``[B]`` per-sequence losses (reduce with `reduce_loss`).

  Example:
    >>> topr(jnp.log(jnp.array([0.5, 0.5])), jnp.log(jnp.array([0.25, 0.25])),
    ...      jnp.array([1., -1.]))
    Array([ 0.6931472, -0.6931472], dtype=float32)
  """
  logp = _as_float(logp_seq, "logp_seq")
  mu = sg(_as_float(behaviour_logp_seq, "behaviour_logp_seq"))
  r = sg(_as_float(rewards, "rewards"))
  _checks.check_same_shape(logp, mu, "logp_seq", "behaviour_logp_seq")
  _checks.check_same_shape(logp, r, "logp_seq", "rewards")
  ratio = jnp.exp(jnp.minimum(sg(logp) - mu, 0.0))  # = clip(pi / mu, 0, 1)
  alpha = jnp.where(r < 0, ratio, 1.0)
  return -alpha * r * logp


def disco(logp: ArrayLike,
          old_logp: ArrayLike,
          rewards: ArrayLike,
          group_ids: ArrayLike,
          where: Optional[ArrayLike] = None,
          *,
          score: str = "log_l",
          tau: float = 10.0,
          delta: float = 1e-4,
          beta: float = 1e3) -> jax.Array:
  """DisCO (Li et al. 2025): discriminative objective with a KL trust region.

  Per question with both correct (``R > 0``) and wrong answers:
  ``J_q = mean_{pos} s - tau log mean_{neg} exp(s / tau)``, with the score
  ``s`` the token mean of ``log pi`` (``"log_l"``) or of ``pi / pi_old``
  (``"l_ratio"``). Questions whose answers are all right or all wrong are
  dropped. The loss is ``-mean_q J_q + sg(max(beta (KL - delta), 0)) KL``,
  the released code's form of the squared hinge ``beta [KL - delta]_+^2``
  (same gradient up to a factor 2), where ``KL`` is the batch token mean of
  ``old_logp - logp`` (a k1 estimate of KL(pi_old || pi) on pi_old's samples).
  Source: Optimization-AI/DisCO ``core_algos.py``, defaults tau 10, delta 1e-4,
  beta 1e3.

  Args:
    logp: ``[B, T]`` log pi_theta of the sampled tokens.
    old_logp: ``[B, T]`` log pi_old (constant).
    rewards: ``[B]`` rewards; ``R > 0`` is correct.
    group_ids: ``[B]`` integer question of each answer, in ``[0, B)``.
    where: ``[B, T]`` token mask.
    score: ``"log_l"`` or ``"l_ratio"``.
    tau: temperature of the negatives' soft maximum (> 0).
    delta: KL budget (>= 0).
    beta: penalty weight (>= 0).

  Returns:
    The scalar loss.

  Example:
    >>> logp = jnp.log(jnp.array([[0.5], [0.25]]))
    >>> disco(logp, logp, jnp.array([1., 0.]), jnp.array([0, 0]), tau=1.0)
    Array(-0.6931472, dtype=float32)
  """
  _check_choice(score, "score", ("log_l", "l_ratio"))
  _checks.check_positive(tau, "tau")
  for value, name in ((delta, "delta"), (beta, "beta")):
    _checks.check_in_range(value, name, 0.0, float("inf"))
  logp = _tokens(logp, "logp")
  old = sg(_tokens(old_logp, "old_logp"))
  _checks.check_same_shape(logp, old, "logp", "old_logp")
  mask = _token_mask(where, logp.shape)
  r = sg(_as_float(rewards, "rewards"))
  ids = jnp.asarray(group_ids)
  _checks.check_integer(ids, "group_ids")
  if r.shape != logp.shape[:1] or ids.shape != r.shape:
    raise ValueError(f"`rewards` and `group_ids` must have shape {logp.shape[:1]}, got "
                     f"{r.shape} and {ids.shape}.")
  per_token = logp if score == "log_l" else jnp.exp(logp - old)
  counts = jnp.maximum(mask.sum(-1), 1)
  s = jnp.where(mask, per_token, 0).sum(-1) / counts
  n = r.shape[0]
  seg = lambda v: jax.ops.segment_sum(v, ids, num_segments=n)
  pos, neg = (r > 0).astype(s.dtype), (r <= 0).astype(s.dtype)
  num_pos, num_neg = seg(pos), seg(neg)
  mixed = (num_pos > 0) & (num_neg > 0)
  mean_pos = seg(pos * s) / jnp.maximum(num_pos, 1)
  # tau log mean_neg exp(s / tau), stable: a per-question max is subtracted.
  shifted = jnp.where(neg > 0, s / tau, -jnp.inf)
  top = jax.ops.segment_max(shifted, ids, num_segments=n)
  top = sg(jnp.where(jnp.isfinite(top), top, 0.0))
  sum_exp = seg(jnp.where(neg > 0, jnp.exp(shifted - top[ids]), 0.0))
  soft_max_neg = tau * (top + jnp.log(jnp.where(mixed, sum_exp, 1.0))
                        - jnp.log(jnp.maximum(num_neg, 1)))
  objective = reduce_loss(mean_pos - soft_max_neg, "mean", where=mixed)
  kl = reduce_loss(old - logp, "mean", where=mask)
  penalty = sg(jnp.maximum(beta * (kl - delta), 0.0)) * kl
  return -objective + penalty


def dph_rehearsal(logp: ArrayLike,
                  ref_logp: ArrayLike,
                  *,
                  kind: str = "forward",
                  alpha: float = 0.2) -> jax.Array:
  """DPH-RL's mass-covering rehearsal term on samples of the initial policy.

  With ``u = pi / pi_0 = exp(logp - ref_logp)`` on tokens drawn from ``pi_0``
  (the stored samples of the rehearsal set), per token:

  * ``"forward"``: ``u - 1 - log u``, expectation KL(pi_0 || pi) (weight 0.01);
  * ``"js"``: ``u log u - (u + 1) log((u + 1) / 2)``, expectation
    KL(pi || m) + KL(pi_0 || m) = 2 JS(pi, pi_0), m the mixture (weight 0.05-0.2);
  * ``"alpha"``: ``(u^(1-a) - (1-a) u - a) / (a (a - 1))``, expectation the Amari
    divergence (1 - sum pi_0^a pi^(1-a)) / (a (1 - a)) of (pi_0 || pi)
    (a = 0.2); a -> 1 gives KL(pi_0 || pi).

  Source: seamoke/DPH-RL (``core_algos.py``, ``dp_actor.py``).

  Args:
    logp: ``[...]`` log pi of pi_0's sampled tokens.
    ref_logp: ``[...]`` log pi_0 of the same tokens (constant).
    kind: ``"forward"``, ``"js"`` or ``"alpha"``.
    alpha: a in (0, 1) for ``"alpha"``.

  Returns:
    ``[...]`` per-token values (>= 0), float32 or wider.

  Example:
    >>> dph_rehearsal(jnp.log(jnp.array([0.25])), jnp.log(jnp.array([0.5])))
    Array([0.19314718], dtype=float32)
  """
  _check_choice(kind, "kind", ("forward", "js", "alpha"))
  if kind == "alpha":
    _checks.check_in_range(alpha, "alpha", 0.0, 1.0, low_inclusive=False,
                           high_inclusive=False)
  logp = _as_float(logp, "logp")
  ref_logp = sg(_as_float(ref_logp, "ref_logp"))
  _checks.check_same_shape(logp, ref_logp, "logp", "ref_logp")
  log_u = logp - ref_logp
  u = jnp.exp(log_u)
  if kind == "forward":
    return jnp.expm1(log_u) - log_u
  if kind == "js":
    log_half_mix = jnp.logaddexp(log_u, 0.0) - jnp.log(2.0)
    return u * log_u - (u + 1) * log_half_mix
  a = alpha
  return (jnp.exp((1 - a) * log_u) - (1 - a) * u - a) / (a * (a - 1))


def kdrl(logp: ArrayLike,
         old_logp: ArrayLike,
         advantages: ArrayLike,
         teacher_logp: ArrayLike,
         where: Optional[ArrayLike] = None,
         *,
         kd_coef: float = 5e-3,
         kd_where: Optional[ArrayLike] = None,
         kd_kind: str = "k2",
         aggregation: str = "sequence_mean",
         clip_low: float = 0.2,
         clip_high: float = 0.2) -> jax.Array:
  """KDRL: GRPO plus a KL to a teacher on the student's own samples.

  ``loss = grpo_loss(logp, old_logp, A) + beta agg(kl_estimator(logp, teacher,
  kind))`` over the tokens of ``kd_where`` (default all; the paper masks the
  KD term on correct responses: pass ``where & ~correct[:, None]``). With k2
  the term's expected gradient is grad KL(pi || pi_teacher) per token. The
  paper anneals beta 5e-3 -> 1e-3 (the caller's schedule). Source: the KDRL
  paper's text (no released code found); the KL estimator follows its k2.

  Args:
    logp, old_logp, advantages, where: as in `grpo_loss`.
    teacher_logp: ``[B, T]`` log pi_teacher of the sampled tokens (constant).
    kd_coef: beta >= 0.
    kd_where: optional ``[B, T]`` mask of the tokens given the KD term.
    kd_kind: estimator (one of ``KL_KINDS``).
    aggregation: as in `grpo_loss` (both terms).
    clip_low, clip_high: as in `ppo_clip`.

  Returns:
    The scalar loss.

  Example:
    >>> logp = jnp.log(jnp.array([[0.5]]))
    >>> kdrl(logp, logp, jnp.array([0.]), jnp.log(jnp.array([[0.25]])), kd_coef=1.0)
    Array(0.2402265, dtype=float32)
  """
  _checks.check_in_range(kd_coef, "kd_coef", 0.0, float("inf"))
  _check_choice(aggregation, "aggregation", AGGREGATIONS)
  _check_choice(kd_kind, "kd_kind", KL_KINDS)
  logp = _tokens(logp, "logp")
  _checks.check_same_shape(logp, _as_float(teacher_logp, "teacher_logp"), "logp",
                           "teacher_logp")
  mask = _token_mask(where, logp.shape)
  kd_mask = mask if kd_where is None else mask & _checks.broadcast_mask(
      kd_where, logp.shape, "kd_where")
  rl = grpo_loss(logp, old_logp, advantages, mask, aggregation=aggregation,
                 clip_low=clip_low, clip_high=clip_high)
  kd = _aggregate(kl_estimator(logp, teacher_logp, kind=kd_kind), kd_mask, aggregation,
                  None, None)
  return rl + kd_coef * kd
