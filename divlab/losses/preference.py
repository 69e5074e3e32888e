"""Preference-optimisation losses: DPO and its divergence, token-level and
reference-free variants.

Every loss is a pure per-pair (or per-example) function of sequence
log-probabilities or logits, written to be **minimised**.

Conventions shared by every loss here:

* Notation: ``l = log pi(y | x)``, the masked **sum** of the completion
  tokens' log-probabilities; ``lbar`` the per-token **mean** (the sum divided by
  the number of completion tokens); ``w`` the chosen (preferred) and ``l`` the
  rejected completion; ``log u = log pi - log pi_ref``;
  ``h = (l_w - l_w^ref) - (l_l - l_l^ref)``; ``sigma`` the logistic sigmoid.
  Each docstring says whether the function expects sums or means, following
  its paper's released code: DPO, robust DPO, f-DPO, TDPO, SparsePO, KTO and
  NPO sum; IPO, SimPO and ORPO average over the completion tokens. Sums and
  means come from `divlab.losses.sequence` (or any caller).
* The reference model is a constant: every reference input goes through
  ``jax.lax.stop_gradient``.
* ``where`` (broadcastable to the per-pair shape ``[...]``) marks valid pairs;
  an excluded pair gives exactly 0 and a zero gradient, whatever it holds.
* Per-pair values come back with ``reduction='none'`` (the default); other
  reductions go through `divlab.losses.reduce_loss`.
* Computation runs in at least float32 (bf16 inputs are upcast). Everything is
  written with ``log_sigmoid`` / ``softplus`` so log-ratios of hundreds of nats
  give finite values and gradients. Where the true loss itself exceeds the
  float range (f-DPO's forward-KL and alpha terms grow like ``exp(-log u)``),
  the exponent is capped and the docstring says so.
* Bad hyper-parameters or shapes raise a ValueError naming the argument.

`npo` is `divlab.losses.unlearning.npo` (DPO with only a rejected answer),
re-exported here, not copied.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from divlab import _checks
from divlab.losses import sequence
from divlab.losses.reductions import reduce_loss
from divlab.losses.unlearning import npo

__all__ = [
    "dpo",
    "robust_dpo",
    "ipo",
    "f_dpo",
    "tdpo",
    "sparse_po",
    "simpo",
    "orpo",
    "kto",
    "mapo",
    "npo",
    "log1mexp",
]

ArrayLike = jax.typing.ArrayLike

F_DPO_DIVERGENCES = ("reverse_kl", "forward_kl", "js", "alpha")

# Below this |x|, x / expm1(x) is evaluated by its Taylor series (MaPO's g).
_SERIES_THRESHOLD = 1e-3


# ----------------------------------------------------------------------------
# Shared argument handling.
# ----------------------------------------------------------------------------


def _as_float(x: ArrayLike, name: str) -> jax.Array:
  """`x` as an array computed in at least float32."""
  x = jnp.asarray(x)
  _checks.check_floating(x, name)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _same_shape_floats(named: dict[str, ArrayLike],
                       constant: tuple[str, ...] = ()) -> list[jax.Array]:
  """Checks arrays of one shape; returns them in one float dtype.

  The arrays named in `constant` (reference-model inputs) get a
  stop-gradient.
  """
  names = list(named)
  arrays = [_as_float(named[n], n) for n in names]
  for n, a in zip(names[1:], arrays[1:]):
    _checks.check_same_shape(arrays[0], a, names[0], n)
  dtype = jnp.result_type(*arrays)
  return [jax.lax.stop_gradient(a.astype(dtype)) if n in constant else a.astype(dtype)
          for n, a in zip(names, arrays)]


def _blank_all(arrays: list[jax.Array], mask: Optional[jax.Array]) -> list[jax.Array]:
  """Zeroes excluded pairs before any arithmetic (so no NaN reaches a gradient)."""
  if mask is None:
    return arrays
  return [jnp.where(mask, a, 0) for a in arrays]


def _pair_inputs(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp,
                 where) -> tuple[list[jax.Array], Optional[jax.Array]]:
  """The four log-likelihoods (reference constant) and the pair mask."""
  arrays = _same_shape_floats(
      {"chosen_logp": chosen_logp, "rejected_logp": rejected_logp,
       "ref_chosen_logp": ref_chosen_logp, "ref_rejected_logp": ref_rejected_logp},
      constant=("ref_chosen_logp", "ref_rejected_logp"))
  mask = _checks.broadcast_mask(where, arrays[0].shape, "where")
  return _blank_all(arrays, mask), mask


def _check_smoothing(value: Any, name: str, high_inclusive: bool) -> None:
  _checks.check_in_range(value, name, 0.0, 0.5, high_inclusive=high_inclusive)


def _smoothed_sigmoid_loss(logits: jax.Array, label_smoothing: Any) -> jax.Array:
  """(1 - e) (-log sigma(z)) + e (-log sigma(-z)), written with softplus."""
  return ((1 - label_smoothing) * jax.nn.softplus(-logits)
          + label_smoothing * jax.nn.softplus(logits))


def log1mexp(x: ArrayLike) -> jax.Array:
  """log(1 - exp(x)) for x <= 0, accurate over the whole range.

  ``log(-expm1(x))`` for ``x > -log 2`` and ``log1p(-exp(x))`` below, the
  split recommended by Maechler, "Accurately Computing log(1 - exp(-|a|))"
  (2012). The naive ``log(1 - exp(x))`` loses every digit as ``x -> 0`` and
  turns into ``log 0`` long before ``x`` reaches 0. Both branches are
  evaluated on safe arguments, so gradients carry no NaN from the branch not
  taken. ``x = 0`` gives ``-inf`` (the value), and ``x > 0`` gives NaN.

  Args:
    x: ``[...]`` non-positive values (e.g. per-token mean log-probabilities).

  Returns:
    ``[...]`` values of ``log(1 - exp(x))``, in at least float32.

  Example:
    >>> log1mexp(jnp.array([-1e-10, -1.0, -50.0]))
    Array([-2.3025850e+01, -4.5867515e-01, -1.9287499e-22], dtype=float32)
  """
  x = _as_float(x, "x")
  near_zero = x > -math.log(2.0)
  x_near = jnp.where(near_zero, x, -1.0)
  x_far = jnp.where(near_zero, -1.0, x)
  return jnp.where(near_zero, jnp.log(-jnp.expm1(x_near)), jnp.log1p(-jnp.exp(x_far)))


# ----------------------------------------------------------------------------
# DPO and its sequence-level variants.
# ----------------------------------------------------------------------------


def dpo(chosen_logp: ArrayLike,
        rejected_logp: ArrayLike,
        ref_chosen_logp: ArrayLike,
        ref_rejected_logp: ArrayLike,
        *,
        beta: float = 0.1,
        label_smoothing: float = 0.0,
        where: Optional[ArrayLike] = None,
        reduction: str = "none",
        normalizer: Optional[ArrayLike] = None) -> jax.Array:
  """Direct preference optimisation (DPO), with conservative DPO's label smoothing.

  ``L = (1 - e) (-log sigma(beta h)) + e (-log sigma(-beta h))``,
  ``h = (l_w - l_w^ref) - (l_l - l_l^ref)``.

  With ``e = label_smoothing = 0`` this is DPO (Rafailov et al., "Direct
  Preference Optimization", 2023; TRL ``dpo_trainer.py`` loss "sigmoid").
  ``e > 0`` is conservative DPO (cDPO; Mitchell, "A note on DPO with noisy
  preferences", 2023; HALOs ``CDPOTrainer``, e = 0.2 there): the cross-entropy
  against labels flipped with probability ``e``. Log-probabilities are
  **sums** over the completion tokens.

  Args:
    chosen_logp: ``[...]`` summed log-probabilities of the chosen completions
      under the policy.
    rejected_logp: ``[...]`` the same for the rejected completions.
    ref_chosen_logp: ``[...]`` chosen log-probabilities under the reference
      (constants).
    ref_rejected_logp: ``[...]`` rejected log-probabilities under the reference.
    beta: inverse temperature of the implicit reward (> 0); 0.1 in the paper.
    label_smoothing: cDPO's assumed label-flip rate ``e`` in ``[0, 0.5]``.
    where: optional ``[...]`` mask of valid pairs.
    reduction: see `divlab.losses.reduce_loss` (default per-pair).
    normalizer: divisor for ``reduction='normalizer'``.

  Returns:
    ``[...]`` per-pair losses, or a scalar for a reducing ``reduction``.

  Example:
    >>> dpo(jnp.array([-1.0]), jnp.array([-3.0]), jnp.array([-2.0]),
    ...     jnp.array([-2.0]), beta=1.0)  # -log sigmoid(2)
    Array([0.126928], dtype=float32)
  """
  _checks.check_positive(beta, "beta")
  _check_smoothing(label_smoothing, "label_smoothing", high_inclusive=True)
  (lw, ll, rw, rl), mask = _pair_inputs(chosen_logp, rejected_logp, ref_chosen_logp,
                                        ref_rejected_logp, where)
  values = _smoothed_sigmoid_loss(beta * ((lw - rw) - (ll - rl)), label_smoothing)
  return reduce_loss(values, reduction, where=mask, normalizer=normalizer)


def robust_dpo(chosen_logp: ArrayLike,
               rejected_logp: ArrayLike,
               ref_chosen_logp: ArrayLike,
               ref_rejected_logp: ArrayLike,
               *,
               epsilon: float,
               beta: float = 0.1,
               where: Optional[ArrayLike] = None,
               reduction: str = "none",
               normalizer: Optional[ArrayLike] = None) -> jax.Array:
  """Robust DPO: an unbiased DPO loss under preference labels flipped at rate epsilon.

  ``L = [(1 - e) (-log sigma(beta h)) - e (-log sigma(-beta h))] / (1 - 2e)``

  Unlike cDPO (`dpo` with ``label_smoothing``), the second term is
  subtracted: in expectation over flips with rate ``e`` it equals the clean
  DPO loss (Chowdhury et al., "Provably Robust DPO: Aligning Language Models
  with Noisy Feedback", 2024; TRL loss "robust"). The value can be negative.
  ``epsilon = 0`` is DPO. Log-probabilities are **sums** over the completion.

  Args:
    chosen_logp: ``[...]`` summed chosen log-probabilities under the policy.
    rejected_logp: ``[...]`` summed rejected log-probabilities under the policy.
    ref_chosen_logp: ``[...]`` chosen log-probabilities under the reference.
    ref_rejected_logp: ``[...]`` rejected log-probabilities under the reference.
    epsilon: the assumed label-flip rate in ``[0, 0.5)``; no default, as it is
      a property of the data.
    beta: inverse temperature (> 0).
    where: optional ``[...]`` mask of valid pairs.
    reduction: see `divlab.losses.reduce_loss` (default per-pair).
    normalizer: divisor for ``reduction='normalizer'``.

  Returns:
    ``[...]`` per-pair losses, or a scalar.

  Example:
    >>> robust_dpo(jnp.array([0.0]), jnp.array([0.0]), jnp.array([0.0]),
    ...            jnp.array([0.0]), epsilon=0.25)  # log 2 at h = 0
    Array([0.6931472], dtype=float32)
  """
  _checks.check_positive(beta, "beta")
  _check_smoothing(epsilon, "epsilon", high_inclusive=False)
  (lw, ll, rw, rl), mask = _pair_inputs(chosen_logp, rejected_logp, ref_chosen_logp,
                                        ref_rejected_logp, where)
  logits = beta * ((lw - rw) - (ll - rl))
  values = ((1 - epsilon) * jax.nn.softplus(-logits)
            - epsilon * jax.nn.softplus(logits)) / (1 - 2 * epsilon)
  return reduce_loss(values, reduction, where=mask, normalizer=normalizer)


def ipo(chosen_logp: ArrayLike,
        rejected_logp: ArrayLike,
        ref_chosen_logp: ArrayLike,
        ref_rejected_logp: ArrayLike,
        *,
        beta: float = 0.1,
        where: Optional[ArrayLike] = None,
        reduction: str = "none",
        normalizer: Optional[ArrayLike] = None) -> jax.Array:
  """Identity preference optimisation (IPO): a squared loss on the log-ratio margin.

  ``L = (hbar - 1 / (2 beta))^2``, ``hbar = (lbar_w - lbar_w^ref) - (lbar_l - lbar_l^ref)``

  IPO regresses the margin onto the constant ``1/(2 beta)`` instead of pushing
  it to infinity, so it does not overfit deterministic preferences (Azar et
  al., "A General Theoretical Paradigm to Understand Learning from Human
  Preferences", 2024). Log-probabilities are **per-token means** over the
  completion, as in TRL's loss "ipo" and HALOs' ``IPOTrainer``.

  Args:
    chosen_logp: ``[...]`` per-token mean log-probabilities of the chosen
      completions under the policy.
    rejected_logp: ``[...]`` the same for the rejected completions.
    ref_chosen_logp: ``[...]`` chosen means under the reference.
    ref_rejected_logp: ``[...]`` rejected means under the reference.
    beta: regularisation strength (> 0); the target margin is ``1/(2 beta)``.
    where: optional ``[...]`` mask of valid pairs.
    reduction: see `divlab.losses.reduce_loss` (default per-pair).
    normalizer: divisor for ``reduction='normalizer'``.

  Returns:
    ``[...]`` per-pair losses (>= 0), or a scalar.

  Example:
    >>> ipo(jnp.array([-1.0]), jnp.array([-2.0]), jnp.array([-1.0]),
    ...     jnp.array([-1.0]), beta=0.5)  # (1 - 1)^2
    Array([0.], dtype=float32)
  """
  _checks.check_positive(beta, "beta")
  (lw, ll, rw, rl), mask = _pair_inputs(chosen_logp, rejected_logp, ref_chosen_logp,
                                        ref_rejected_logp, where)
  values = jnp.square((lw - rw) - (ll - rl) - 1.0 / (2.0 * beta))
  return reduce_loss(values, reduction, where=mask, normalizer=normalizer)


def _f_dpo_scaled_psi(log_ratio: jax.Array, beta: Any, divergence: str,
                      alpha: Any) -> jax.Array:
  """beta psi(u) with psi = f', from log u; exponentials capped below overflow."""
  if divergence == "reverse_kl":
    return beta * log_ratio
  if divergence == "js":
    return beta * (jax.nn.log_sigmoid(log_ratio) + math.log(2.0))
  # forward KL and alpha: beta psi(u) = -exp(log(beta / a) - a log u), a = 1 for
  # forward KL. The exponent is capped so that the difference of two such
  # terms stays below the float maximum.
  a = 1.0 if divergence == "forward_kl" else alpha
  cap = math.log(float(jnp.finfo(log_ratio.dtype).max)) - 1.0
  exponent = jnp.log(beta / a) - a * log_ratio
  return -jnp.exp(jnp.minimum(exponent, cap))


def f_dpo(chosen_logp: ArrayLike,
          rejected_logp: ArrayLike,
          ref_chosen_logp: ArrayLike,
          ref_rejected_logp: ArrayLike,
          *,
          divergence: str = "reverse_kl",
          alpha: float = 0.5,
          beta: float = 0.1,
          where: Optional[ArrayLike] = None,
          reduction: str = "none",
          normalizer: Optional[ArrayLike] = None) -> jax.Array:
  """f-DPO: DPO under an f-divergence constraint instead of reverse KL.

  ``L = -log sigma(beta [psi(u_w) - psi(u_l)])``, ``u = pi / pi_ref``,
  ``psi = f'`` up to an additive constant:

  * ``'reverse_kl'``: ``psi(u) = log u`` (exactly DPO);
  * ``'forward_kl'``: ``psi(u) = -1/u``;
  * ``'js'``: ``psi(u) = log(2u / (1 + u)) = log sigma(log u) + log 2``;
  * ``'alpha'``: ``psi(u) = -u^(-alpha) / alpha``, ``alpha in (0, 1)``;
    ``alpha -> 0`` approaches reverse KL, ``alpha = 1`` is forward KL.

  The population optimum satisfies ``f'(pi / pi_ref) = r / beta + const``
  (Wang et al., "Beyond Reverse KL: Generalizing Direct Preference
  Optimization with Diverse Divergence Constraints", 2024; released code
  ``alecwangcq/f-divergence-dpo`` ``trainers.py``). ``alpha`` follows the
  paper. TRL's ``alpha_divergence`` uses ``psi(u) = u^(a-1) / (a-1)``, i.e. its
  ``alpha`` is ``1 - alpha`` here. Log-probabilities are **sums** over the
  completion.

  Numerics: forward-KL and alpha terms grow like ``exp(-alpha log u)``. Each
  term ``beta psi(u)`` is capped at ``-exp(C)``, ``C = log(float max) - 1``
  (about 87.7 in float32), so values and gradients stay finite; beyond the cap
  (``alpha log u < log(beta / alpha) - C``, e.g. ``log u < -90`` at beta 0.1)
  the gradient with respect to that log-ratio is 0. The released code has no
  cap (it overflows to inf/NaN there).

  Args:
    chosen_logp: ``[...]`` summed chosen log-probabilities under the policy.
    rejected_logp: ``[...]`` summed rejected log-probabilities under the policy.
    ref_chosen_logp: ``[...]`` chosen log-probabilities under the reference.
    ref_rejected_logp: ``[...]`` rejected log-probabilities under the reference.
    divergence: one of ``'reverse_kl', 'forward_kl', 'js', 'alpha'``.
    alpha: the alpha-divergence parameter in ``(0, 1)`` (paper convention);
      used only for ``divergence='alpha'``.
    beta: constraint strength (> 0); 0.1 in the paper.
    where: optional ``[...]`` mask of valid pairs.
    reduction: see `divlab.losses.reduce_loss` (default per-pair).
    normalizer: divisor for ``reduction='normalizer'``.

  Returns:
    ``[...]`` per-pair losses (>= 0), or a scalar.

  Example:
    >>> f_dpo(jnp.array([0.0]), jnp.array([0.0]), jnp.array([0.0]),
    ...       jnp.array([0.0]), divergence="forward_kl")  # log 2 at u = 1
    Array([0.6931472], dtype=float32)
  """
  if divergence not in F_DPO_DIVERGENCES:
    raise ValueError(f"`divergence` must be one of {F_DPO_DIVERGENCES}, got "
                     f"{divergence!r}.")
  _checks.check_positive(beta, "beta")
  if divergence == "alpha":
    _checks.check_in_range(alpha, "alpha", 0.0, 1.0, low_inclusive=False,
                           high_inclusive=False)
  (lw, ll, rw, rl), mask = _pair_inputs(chosen_logp, rejected_logp, ref_chosen_logp,
                                        ref_rejected_logp, where)
  logits = (_f_dpo_scaled_psi(lw - rw, beta, divergence, alpha)
            - _f_dpo_scaled_psi(ll - rl, beta, divergence, alpha))
  return reduce_loss(jax.nn.softplus(-logits), reduction, where=mask,
                     normalizer=normalizer)


# ----------------------------------------------------------------------------
# Token-level losses (from logits).
# ----------------------------------------------------------------------------


def _token_statistics(logits: jax.Array, ref_logits: jax.Array, tokens: jax.Array,
                      mask: Optional[jax.Array], names: tuple[str, str, str]
                      ) -> tuple[jax.Array, jax.Array]:
  """Per-token (log pi(y_t) - log pi_ref(y_t), KL(pi_ref(.|s_t) || pi(.|s_t))).

  Both are 0 at excluded positions, with zero gradients there.
  """
  logits_name, ref_name, tokens_name = names
  logits = _as_float(logits, logits_name)
  ref_logits = _as_float(ref_logits, ref_name)
  _checks.check_same_shape(logits, ref_logits, logits_name, ref_name)
  if logits.ndim < 2:
    raise ValueError(f"`{logits_name}` must have shape [..., T, V], got {logits.shape}.")
  tokens = jnp.asarray(tokens)
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ValueError(f"`{tokens_name}` must hold integer token ids, got {tokens.dtype}.")
  if tokens.shape != logits.shape[:-1]:
    raise ValueError(f"`{tokens_name}` must have shape {logits.shape[:-1]} (the "
                     f"logits without the vocabulary axis), got {tokens.shape}.")
  dtype = jnp.promote_types(logits.dtype, ref_logits.dtype)
  logits = logits.astype(dtype)
  ref_logits = jax.lax.stop_gradient(ref_logits.astype(dtype))
  # Padded positions may hold anything (-inf logits, ignore ids such as -100):
  # the sequence helpers blank them before any arithmetic.
  token_log_ratio = (sequence.token_log_probs(logits, tokens, mask)
                     - sequence.token_log_probs(ref_logits, tokens, mask))
  return token_log_ratio, sequence.token_kl(ref_logits, logits, mask)


def _token_masks(chosen_where, rejected_where, chosen_tokens, rejected_tokens):
  chosen_shape, rejected_shape = jnp.shape(chosen_tokens), jnp.shape(rejected_tokens)
  return (_checks.broadcast_mask(chosen_where, chosen_shape, "chosen_where"),
          _checks.broadcast_mask(rejected_where, rejected_shape, "rejected_where"))


def _pair_shape(chosen_tokens, rejected_tokens) -> tuple[int, ...]:
  """The pair axes: chosen and rejected ones broadcast against each other."""
  try:
    return jnp.broadcast_shapes(jnp.shape(chosen_tokens)[:-1],
                                jnp.shape(rejected_tokens)[:-1])
  except ValueError:
    raise ValueError("the pair axes of `chosen_tokens` and `rejected_tokens` must "
                     f"broadcast, got {jnp.shape(chosen_tokens)} and "
                     f"{jnp.shape(rejected_tokens)}.") from None


def _pair_mask(where, pair_shape) -> Optional[jax.Array]:
  return _checks.broadcast_mask(where, pair_shape, "where")


def tdpo(chosen_logits: ArrayLike,
         rejected_logits: ArrayLike,
         ref_chosen_logits: ArrayLike,
         ref_rejected_logits: ArrayLike,
         chosen_tokens: ArrayLike,
         rejected_tokens: ArrayLike,
         *,
         chosen_where: Optional[ArrayLike] = None,
         rejected_where: Optional[ArrayLike] = None,
         variant: int = 2,
         alpha: float = 0.5,
         beta: float = 0.1,
         where: Optional[ArrayLike] = None,
         reduction: str = "none",
         normalizer: Optional[ArrayLike] = None) -> jax.Array:
  """Token-level DPO (TDPO): DPO plus a sequential forward-KL margin.

  ``delta = sum_t (log pi(y_t|s_t) - log pi_ref(y_t|s_t))``,
  ``SeqKL = sum_t KL(pi_ref(.|s_t) || pi(.|s_t))`` over the full vocabulary;

  * TDPO1: ``z = delta_w - delta_l - (SeqKL_l - SeqKL_w)``;
  * TDPO2: ``z = delta_w - delta_l - alpha (SeqKL_l - sg[SeqKL_w])``;

  ``L = -log sigma(beta z)``. Both sums run over the completion tokens
  (``*_where``). Source: Zeng et al., "Token-level Direct Preference
  Optimization", 2024, and the released ``trainers.py`` ``tdpo_loss``
  (defaults beta 0.1, alpha 0.5, TDPO2). The per-token KL is
  `divlab.losses.sequence.token_kl` of the reference and policy logits
  (`divlab.divergences.kl`, from log-softmax, not ``log(softmax)``).

  Args:
    chosen_logits: ``[..., T, V]`` policy next-token logits aligned with
      ``chosen_tokens`` (already shifted for a causal LM). The chosen and
      rejected pair axes ``[...]`` broadcast against each other (e.g.
      ``[N, 1]`` and ``[1, N]`` score every ordered pair of N completions).
    rejected_logits: ``[..., T', V]`` policy logits for the rejected completion.
    ref_chosen_logits: ``[..., T, V]`` reference logits (constants).
    ref_rejected_logits: ``[..., T', V]`` reference logits (constants).
    chosen_tokens: ``[..., T]`` integer chosen tokens.
    rejected_tokens: ``[..., T']`` integer rejected tokens.
    chosen_where: optional ``[..., T]`` mask of the chosen completion tokens.
    rejected_where: optional ``[..., T']`` mask of the rejected completion tokens.
    variant: 1 or 2.
    alpha: TDPO2's weight of the KL margin (> 0); ignored by TDPO1.
    beta: inverse temperature (> 0).
    where: optional ``[...]`` mask of valid pairs.
    reduction: see `divlab.losses.reduce_loss` (default per-pair).
    normalizer: divisor for ``reduction='normalizer'``.

  Returns:
    ``[...]`` per-pair losses, or a scalar.

  Example:
    >>> z = jnp.zeros((1, 2, 3))
    >>> tdpo(z, z, z, z, jnp.zeros((1, 2), int), jnp.ones((1, 2), int))  # log 2
    Array([0.6931472], dtype=float32)
  """
  if isinstance(variant, bool) or variant not in (1, 2):
    raise ValueError(f"`variant` must be 1 or 2, got {variant!r}.")
  _checks.check_positive(beta, "beta")
  _checks.check_positive(alpha, "alpha")
  pair_shape = _pair_shape(chosen_tokens, rejected_tokens)
  pair_mask = _pair_mask(where, pair_shape)
  chosen_mask, rejected_mask = _token_masks(chosen_where, rejected_where,
                                            chosen_tokens, rejected_tokens)
  chosen_ratio, chosen_kl = _token_statistics(
      chosen_logits, ref_chosen_logits, chosen_tokens, chosen_mask,
      ("chosen_logits", "ref_chosen_logits", "chosen_tokens"))
  rejected_ratio, rejected_kl = _token_statistics(
      rejected_logits, ref_rejected_logits, rejected_tokens, rejected_mask,
      ("rejected_logits", "ref_rejected_logits", "rejected_tokens"))
  margin = chosen_ratio.sum(-1) - rejected_ratio.sum(-1)
  seq_kl_chosen, seq_kl_rejected = chosen_kl.sum(-1), rejected_kl.sum(-1)
  if variant == 1:
    logits = margin - (seq_kl_rejected - seq_kl_chosen)
  else:
    logits = margin - alpha * (seq_kl_rejected - jax.lax.stop_gradient(seq_kl_chosen))
  values = jnp.broadcast_to(jax.nn.softplus(-beta * logits), pair_shape)
  if pair_mask is not None:
    values = jnp.where(pair_mask, values, 0)
  return reduce_loss(values, reduction, where=pair_mask, normalizer=normalizer)


def _check_token_weights(weights: Optional[ArrayLike], tokens_shape, name: str,
                         dtype) -> Optional[jax.Array]:
  if weights is None:
    return None
  weights = _as_float(weights, name)
  if weights.shape != tuple(tokens_shape):
    raise ValueError(f"`{name}` must have shape {tuple(tokens_shape)} (one weight per "
                     f"token), got {weights.shape}.")
  return weights.astype(dtype)


def sparse_po(chosen_logits: ArrayLike,
              rejected_logits: ArrayLike,
              ref_chosen_logits: ArrayLike,
              ref_rejected_logits: ArrayLike,
              chosen_tokens: ArrayLike,
              rejected_tokens: ArrayLike,
              *,
              chosen_reward_mask: Optional[ArrayLike] = None,
              rejected_reward_mask: Optional[ArrayLike] = None,
              chosen_kl_mask: Optional[ArrayLike] = None,
              rejected_kl_mask: Optional[ArrayLike] = None,
              chosen_where: Optional[ArrayLike] = None,
              rejected_where: Optional[ArrayLike] = None,
              reward_l1: float = 1e-3,
              kl_l1: float = 1e-3,
              beta: float = 0.1,
              where: Optional[ArrayLike] = None,
              reduction: str = "none",
              normalizer: Optional[ArrayLike] = None) -> jax.Array:
  """SparsePO: TDPO with per-token weights on the reward and the KL terms.

  ``tokKL_t = sum_v pi_ref(v|s_t) (log pi(v|s_t) - log pi_ref(v|s_t)) = -KL_t``,
  ``u = sum_t m^u_t (log pi - log pi_ref)(y_t) |_w - (same)|_l``,
  ``d = sum_t m^d_t tokKL_t |_w - (same)|_l``,
  ``L = -log sigma(beta (u - d)) + lambda_u |m^u|_1 + lambda_d |m^d|_1``,

  where the L1 norms add the chosen and rejected masks over the completion
  tokens. With every mask equal to 1, ``u - d`` is TDPO1's margin (the
  penalties are then constants). Masks are inputs here (model activations or
  a learned mask head produce them in the paper, and gradients flow into
  them); an omitted mask is all ones and carries no penalty, as in the
  released code's ``mask_on_reward`` / ``mask_on_kl`` switches. Source:
  Christopoulou et al., "SparsePO: Controlling Preference Alignment of LLMs via
  Sparse Token Masks", 2024; ``huawei-noah/HEBO``
  ``SparsePO/src/trainers/sparse_trainer.py`` (beta 0.8 on IMDB/TL;DR, 0.1 on
  HH; lambda 1e-3). Token terms are **sums** over the completion.

  Args:
    chosen_logits: ``[..., T, V]`` policy logits aligned with ``chosen_tokens``;
      chosen and rejected pair axes broadcast against each other, as in `tdpo`.
    rejected_logits: ``[..., T', V]`` policy logits for the rejected completion.
    ref_chosen_logits: ``[..., T, V]`` reference logits (constants).
    ref_rejected_logits: ``[..., T', V]`` reference logits (constants).
    chosen_tokens: ``[..., T]`` integer chosen tokens.
    rejected_tokens: ``[..., T']`` integer rejected tokens.
    chosen_reward_mask: optional ``[..., T]`` weights ``m^u`` on the chosen
      log-ratios.
    rejected_reward_mask: optional ``[..., T']`` weights ``m^u`` (rejected).
    chosen_kl_mask: optional ``[..., T]`` weights ``m^d`` on the chosen KL terms.
    rejected_kl_mask: optional ``[..., T']`` weights ``m^d`` (rejected).
    chosen_where: optional ``[..., T]`` mask of the chosen completion tokens.
    rejected_where: optional ``[..., T']`` mask of the rejected completion tokens.
    reward_l1: ``lambda_u`` (>= 0), applied when reward masks are given.
    kl_l1: ``lambda_d`` (>= 0), applied when KL masks are given.
    beta: inverse temperature (> 0).
    where: optional ``[...]`` mask of valid pairs.
    reduction: see `divlab.losses.reduce_loss` (default per-pair).
    normalizer: divisor for ``reduction='normalizer'``.

  Returns:
    ``[...]`` per-pair losses, or a scalar.

  Example:
    >>> z = jnp.zeros((1, 2, 3))
    >>> ones = jnp.ones((1, 2))
    >>> sparse_po(z, z, z, z, jnp.zeros((1, 2), int), jnp.ones((1, 2), int),
    ...           chosen_reward_mask=ones, rejected_reward_mask=ones,
    ...           reward_l1=0.1)  # log 2 + 0.1 * 4
    Array([1.0931472], dtype=float32)
  """
  _checks.check_positive(beta, "beta")
  _checks.check_in_range(reward_l1, "reward_l1", 0.0, np.inf, high_inclusive=False)
  _checks.check_in_range(kl_l1, "kl_l1", 0.0, np.inf, high_inclusive=False)
  if (chosen_reward_mask is None) != (rejected_reward_mask is None):
    raise ValueError("`chosen_reward_mask` and `rejected_reward_mask` must be given "
                     "together.")
  if (chosen_kl_mask is None) != (rejected_kl_mask is None):
    raise ValueError("`chosen_kl_mask` and `rejected_kl_mask` must be given together.")
  pair_shape = _pair_shape(chosen_tokens, rejected_tokens)
  pair_mask = _pair_mask(where, pair_shape)
  chosen_mask, rejected_mask = _token_masks(chosen_where, rejected_where,
                                            chosen_tokens, rejected_tokens)
  chosen_ratio, chosen_kl = _token_statistics(
      chosen_logits, ref_chosen_logits, chosen_tokens, chosen_mask,
      ("chosen_logits", "ref_chosen_logits", "chosen_tokens"))
  rejected_ratio, rejected_kl = _token_statistics(
      rejected_logits, ref_rejected_logits, rejected_tokens, rejected_mask,
      ("rejected_logits", "ref_rejected_logits", "rejected_tokens"))
  dtype = chosen_ratio.dtype
  masks = {
      name: _check_token_weights(value, jnp.shape(tokens), name, dtype)
      for name, value, tokens in (
          ("chosen_reward_mask", chosen_reward_mask, chosen_tokens),
          ("rejected_reward_mask", rejected_reward_mask, rejected_tokens),
          ("chosen_kl_mask", chosen_kl_mask, chosen_tokens),
          ("rejected_kl_mask", rejected_kl_mask, rejected_tokens))}

  def weighted_sum(values, weights, token_mask):
    if weights is None:
      return values.sum(-1)  # `values` is already 0 at excluded tokens.
    if token_mask is not None:
      weights = jnp.where(token_mask, weights, 0)
    return (weights * values).sum(-1)

  def l1(weights, token_mask):
    if token_mask is not None:
      weights = jnp.where(token_mask, weights, 0)
    return jnp.abs(weights).sum(-1)

  u = (weighted_sum(chosen_ratio, masks["chosen_reward_mask"], chosen_mask)
       - weighted_sum(rejected_ratio, masks["rejected_reward_mask"], rejected_mask))
  # tokKL = -KL, so d = sum m^d tokKL_w - sum m^d tokKL_l.
  d = (weighted_sum(rejected_kl, masks["rejected_kl_mask"], rejected_mask)
       - weighted_sum(chosen_kl, masks["chosen_kl_mask"], chosen_mask))
  values = jax.nn.softplus(-beta * (u - d))
  if masks["chosen_reward_mask"] is not None:
    values = values + reward_l1 * (l1(masks["chosen_reward_mask"], chosen_mask)
                                   + l1(masks["rejected_reward_mask"], rejected_mask))
  if masks["chosen_kl_mask"] is not None:
    values = values + kl_l1 * (l1(masks["chosen_kl_mask"], chosen_mask)
                               + l1(masks["rejected_kl_mask"], rejected_mask))
  values = jnp.broadcast_to(values, pair_shape)
  if pair_mask is not None:
    values = jnp.where(pair_mask, values, 0)
  return reduce_loss(values, reduction, where=pair_mask, normalizer=normalizer)


# ----------------------------------------------------------------------------
# Reference-free losses.
# ----------------------------------------------------------------------------


def simpo(chosen_logp: ArrayLike,
          rejected_logp: ArrayLike,
          *,
          beta: float = 2.0,
          gamma_beta_ratio: float = 0.25,
          label_smoothing: float = 0.0,
          where: Optional[ArrayLike] = None,
          reduction: str = "none",
          normalizer: Optional[ArrayLike] = None) -> jax.Array:
  """SimPO: a reference-free, length-normalised margin loss.

  ``L = -log sigma(beta (lbar_w - lbar_l) - gamma)``, ``gamma = beta * gamma_beta_ratio``

  (with ``label_smoothing`` e: ``(1 - e) L(z) + e L(-z)`` on the same logit,
  as the released trainer). Source: Meng et al., "SimPO: Simple Preference
  Optimization with a Reference-Free Reward", 2024; ``princeton-nlp/SimPO``
  ``scripts/simpo_trainer.py`` (beta 2.0, gamma/beta 0.25 among the released
  settings). Log-probabilities are **per-token means** over the completion.

  Args:
    chosen_logp: ``[...]`` per-token mean log-probabilities of the chosen
      completions under the policy.
    rejected_logp: ``[...]`` the same for the rejected completions.
    beta: reward scale (> 0).
    gamma_beta_ratio: target margin divided by beta (>= 0).
    label_smoothing: label-flip rate in ``[0, 0.5]`` (0 in the paper).
    where: optional ``[...]`` mask of valid pairs.
    reduction: see `divlab.losses.reduce_loss` (default per-pair).
    normalizer: divisor for ``reduction='normalizer'``.

  Returns:
    ``[...]`` per-pair losses, or a scalar.

  Example:
    >>> simpo(jnp.array([-1.0]), jnp.array([-1.5]), beta=2.0,
    ...       gamma_beta_ratio=0.5)  # -log sigmoid(0) = log 2
    Array([0.6931472], dtype=float32)
  """
  _checks.check_positive(beta, "beta")
  _checks.check_in_range(gamma_beta_ratio, "gamma_beta_ratio", 0.0, np.inf,
                         high_inclusive=False)
  _check_smoothing(label_smoothing, "label_smoothing", high_inclusive=True)
  lw, ll = _same_shape_floats({"chosen_logp": chosen_logp, "rejected_logp": rejected_logp})
  mask = _checks.broadcast_mask(where, lw.shape, "where")
  lw, ll = _blank_all([lw, ll], mask)
  values = _smoothed_sigmoid_loss(beta * (lw - ll - gamma_beta_ratio), label_smoothing)
  return reduce_loss(values, reduction, where=mask, normalizer=normalizer)


def orpo(chosen_logp: ArrayLike,
         rejected_logp: ArrayLike,
         *,
         odds_ratio_weight: float = 0.1,
         where: Optional[ArrayLike] = None,
         reduction: str = "none",
         normalizer: Optional[ArrayLike] = None) -> jax.Array:
  """ORPO: supervised fine-tuning on the chosen answer plus an odds-ratio penalty.

  ``L = -lbar_w - lambda log sigma(log odds(lbar_w) - log odds(lbar_l))``,
  ``log odds(lbar) = lbar - log(1 - exp(lbar))``.

  Reference-free; the first term is the chosen answer's token-mean NLL (the
  released code adds the language-model loss ``outputs.loss``). Source: Hong
  et al., "ORPO: Monolithic Preference Optimization without Reference Model",
  2024; ``xfactlab/orpo`` ``src/orpo_trainer.py`` (lambda 0.1 to 1.0).
  ``log(1 - exp(lbar))`` uses `log1mexp`: the naive form is NaN as
  ``lbar -> 0``. A mean log-probability of exactly 0 (the completion has
  probability 1) has infinite odds; its value is taken at the largest float
  below 0 (finite), and its gradient with respect to that log-probability is
  0 (the clamp's), not the ~1/tiny slope just below 0. Log-probabilities are
  **per-token means** over the completion.

  Args:
    chosen_logp: ``[...]`` per-token mean log-probabilities (<= 0) of the
      chosen completions under the policy.
    rejected_logp: ``[...]`` the same for the rejected completions.
    odds_ratio_weight: lambda (>= 0).
    where: optional ``[...]`` mask of valid pairs.
    reduction: see `divlab.losses.reduce_loss` (default per-pair).
    normalizer: divisor for ``reduction='normalizer'``.

  Returns:
    ``[...]`` per-pair losses, or a scalar.

  Example:
    >>> orpo(jnp.array([-jnp.log(2.0)]), jnp.array([-jnp.log(2.0)]),
    ...      odds_ratio_weight=1.0)  # log 2 + log 2
    Array([1.3862944], dtype=float32)
  """
  _checks.check_in_range(odds_ratio_weight, "odds_ratio_weight", 0.0, np.inf,
                         high_inclusive=False)
  lw, ll = _same_shape_floats({"chosen_logp": chosen_logp, "rejected_logp": rejected_logp})
  mask = _checks.broadcast_mask(where, lw.shape, "where")
  lw, ll = _blank_all([lw, ll], mask)
  # The blanked value 0 of an excluded pair is also moved off 0 here.
  below_zero = -jnp.finfo(lw.dtype).tiny

  def log_odds(mean_logp):
    mean_logp = jnp.minimum(mean_logp, below_zero)
    return mean_logp - log1mexp(mean_logp)

  values = -lw - odds_ratio_weight * jax.nn.log_sigmoid(log_odds(lw) - log_odds(ll))
  return reduce_loss(values, reduction, where=mask, normalizer=normalizer)


# ----------------------------------------------------------------------------
# Unpaired and diffusion losses.
# ----------------------------------------------------------------------------


def kto(logp: ArrayLike,
        ref_logp: ArrayLike,
        desirable: ArrayLike,
        *,
        mismatched_logp: Optional[ArrayLike] = None,
        mismatched_ref_logp: Optional[ArrayLike] = None,
        reference_point: Optional[ArrayLike] = None,
        beta: float = 0.1,
        desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0,
        where: Optional[ArrayLike] = None,
        mismatched_where: Optional[ArrayLike] = None,
        reduction: str = "none",
        normalizer: Optional[ArrayLike] = None) -> jax.Array:
  """Kahneman-Tversky optimisation (KTO) on unpaired desirable/undesirable answers.

  ``r = log pi(y|x) - log pi_ref(y|x)``; ``z0 = sg[max(0, KL estimate)]``;
  desirable: ``lambda_D (1 - sigma(beta (r - z0)))``;
  undesirable: ``lambda_U (1 - sigma(beta (z0 - r)))``.

  The KL estimate is the mean of ``log pi - log pi_ref`` over mismatched
  pairs (a completion scored under another example's prompt), clamped at 0
  and held constant, as in HALOs' ``KTOTrainer`` and TRL's ``kto_trainer``
  (Ethayarajh et al., "KTO: Model Alignment as Prospect Theoretic
  Optimization", 2024; beta 0.1, lambda_D = lambda_U = 1). Give either the
  mismatched log-probabilities or a precomputed ``reference_point`` (which is
  clamped at 0 and held constant the same way). ``z0`` is a batch statistic,
  so each example's value depends on the batch. Log-probabilities are
  **sums** over the completion.

  Args:
    logp: ``[...]`` summed log-probabilities of the completions under the policy.
    ref_logp: ``[...]`` the same under the reference (constants).
    desirable: ``[...]`` booleans, True for desirable (chosen) completions.
    mismatched_logp: optional ``[M]`` policy log-probabilities of mismatched pairs.
    mismatched_ref_logp: optional ``[M]`` reference log-probabilities of them.
    reference_point: optional scalar KL estimate used instead.
    beta: inverse temperature (> 0).
    desirable_weight: lambda_D (>= 0).
    undesirable_weight: lambda_U (>= 0).
    where: optional ``[...]`` mask of valid examples.
    mismatched_where: optional ``[M]`` mask of valid mismatched pairs.
    reduction: see `divlab.losses.reduce_loss` (default per-example).
    normalizer: divisor for ``reduction='normalizer'``.

  Returns:
    ``[...]`` per-example losses in ``[0, max(lambda_D, lambda_U)]``, or a scalar.

  Example:
    >>> kto(jnp.array([-1.0, -1.0]), jnp.array([-1.0, -1.0]),
    ...     jnp.array([True, False]), reference_point=0.0)  # 1 - sigmoid(0)
    Array([0.5, 0.5], dtype=float32)
  """
  _checks.check_positive(beta, "beta")
  _checks.check_in_range(desirable_weight, "desirable_weight", 0.0, np.inf,
                         high_inclusive=False)
  _checks.check_in_range(undesirable_weight, "undesirable_weight", 0.0, np.inf,
                         high_inclusive=False)
  logp, ref_logp = _same_shape_floats({"logp": logp, "ref_logp": ref_logp},
                                      constant=("ref_logp",))
  desirable = jnp.asarray(desirable)
  if desirable.dtype != jnp.bool_:
    raise ValueError(f"`desirable` must be boolean, got {desirable.dtype}.")
  desirable = _checks.broadcast_mask(desirable, logp.shape, "desirable")
  mask = _checks.broadcast_mask(where, logp.shape, "where")
  logp, ref_logp = _blank_all([logp, ref_logp], mask)

  has_mismatched = mismatched_logp is not None or mismatched_ref_logp is not None
  if has_mismatched == (reference_point is not None):
    raise ValueError("give either `mismatched_logp` and `mismatched_ref_logp`, or "
                     "`reference_point`, not both or neither.")
  if has_mismatched:
    if mismatched_logp is None or mismatched_ref_logp is None:
      raise ValueError("`mismatched_logp` and `mismatched_ref_logp` must be given "
                       "together.")
    m_logp, m_ref = _same_shape_floats({"mismatched_logp": mismatched_logp,
                                        "mismatched_ref_logp": mismatched_ref_logp})
    m_mask = _checks.broadcast_mask(mismatched_where, m_logp.shape, "mismatched_where")
    m_logp, m_ref = _blank_all([m_logp, m_ref], m_mask)
    kl_estimate = reduce_loss(m_logp - m_ref, "mean", where=m_mask)
  else:
    kl_estimate = _as_float(reference_point, "reference_point")
    if kl_estimate.ndim != 0:
      raise ValueError(f"`reference_point` must be a scalar, got shape "
                       f"{kl_estimate.shape}.")
  z0 = jax.lax.stop_gradient(jnp.maximum(kl_estimate, 0).astype(logp.dtype))
  reward = logp - ref_logp
  values = jnp.where(desirable,
                     desirable_weight * jax.nn.sigmoid(-beta * (reward - z0)),
                     undesirable_weight * jax.nn.sigmoid(-beta * (z0 - reward)))
  return reduce_loss(values, reduction, where=mask, normalizer=normalizer)


def _x_over_expm1(x: jax.Array) -> jax.Array:
  """g(x) = x / (e^x - 1), with g(0) = 1, finite with finite gradients everywhere."""
  small = jnp.abs(x) < _SERIES_THRESHOLD
  # Each branch sees only arguments it handles, so the branches not taken
  # put no inf or NaN into the gradient.
  x_pos = jnp.where(x >= _SERIES_THRESHOLD, x, 1.0)
  x_neg = jnp.where(x <= -_SERIES_THRESHOLD, x, -1.0)
  # For x > 0 divide through by e^x so nothing overflows: x e^-x / (1 - e^-x).
  positive = x_pos * jnp.exp(-x_pos) / -jnp.expm1(-x_pos)
  negative = x_neg / jnp.expm1(x_neg)
  series = 1.0 - x / 2.0 + jnp.square(x) / 12.0
  return jnp.where(small, series, jnp.where(x > 0, positive, negative))


def mapo(chosen_mse: ArrayLike,
         rejected_mse: ArrayLike,
         *,
         beta: float = 0.1,
         snr: float = 0.5,
         num_train_timesteps: int = 1000,
         where: Optional[ArrayLike] = None,
         reduction: str = "none",
         normalizer: Optional[ArrayLike] = None) -> jax.Array:
  """Margin-aware preference optimisation (MaPO) for diffusion models.

  ``L = mse_w - beta log sigma(T [g(s mse_w) - g(s mse_l)])``,
  ``g(x) = x / (e^x - 1)``,

  per pair of images denoised at the same noise level: ``mse`` is the
  per-example mean squared error of the noise (or velocity) prediction,
  ``s`` a fixed SNR value and ``T`` the number of training timesteps, which
  scales the margin. The mean over pairs is the released loss
  ``mean(mse_w) - beta mean(log sigma(...))``. Reference-free. Source: Hong et
  al., "Margin-aware Preference Optimization for Aligning Diffusion Models
  without Reference", 2024; ``mapo-t2i/mapo`` ``utils.py`` ``compute_loss``
  (snr 0.5, T 1000, beta 0.1).

  Args:
    chosen_mse: ``[...]`` per-example MSEs (>= 0) on the preferred images.
    rejected_mse: ``[...]`` per-example MSEs on the rejected images.
    beta: weight of the margin term (>= 0).
    snr: the SNR value ``s`` (> 0).
    num_train_timesteps: ``T`` (> 0).
    where: optional ``[...]`` mask of valid pairs.
    reduction: see `divlab.losses.reduce_loss` (default per-pair).
    normalizer: divisor for ``reduction='normalizer'``.

  Returns:
    ``[...]`` per-pair losses, or a scalar.

  Example:
    >>> mapo(jnp.array([0.2]), jnp.array([0.2]), beta=1.0)  # 0.2 + log 2
    Array([0.8931472], dtype=float32)
  """
  _checks.check_in_range(beta, "beta", 0.0, np.inf, high_inclusive=False)
  _checks.check_positive(snr, "snr")
  _checks.check_positive(num_train_timesteps, "num_train_timesteps")
  mse_w, mse_l = _same_shape_floats({"chosen_mse": chosen_mse,
                                     "rejected_mse": rejected_mse})
  mask = _checks.broadcast_mask(where, mse_w.shape, "where")
  mse_w, mse_l = _blank_all([mse_w, mse_l], mask)
  margin = _x_over_expm1(snr * mse_w) - _x_over_expm1(snr * mse_l)
  values = mse_w - beta * jax.nn.log_sigmoid(num_train_timesteps * margin)
  return reduce_loss(values, reduction, where=mask, normalizer=normalizer)
