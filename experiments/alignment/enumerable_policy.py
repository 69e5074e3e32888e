"""An enumerable autoregressive policy: its completions, exact metrics and
f-DPO's closed-form optima.

* Completions are all ``V^L`` token sequences of length L over V tokens.
* A policy is a tabular autoregressive model: a ``[P, V]`` table with one row
  of next-token logits per prefix (``P = 1 + V + ... + V^(L-1)``), so every
  distribution over completions is reachable (`table_from_sequence_probs`
  inverts `sequence_probs`) and token-level quantities are defined.
* A problem (one seed) is a reference table and a reward per completion;
  preference pairs are drawn from the reference and labelled by
  Bradley-Terry (`pair_weights`).
* Every metric is exact by enumeration (`exact_metrics`), and f-DPO's
  population optimum ``f'(pi / pi_ref) = r / beta + c`` (Wang et al., 2024,
  "Beyond Reverse KL") is solved in float64 numpy (`closed_form_optimum`),
  independently of the JAX code that trains.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from divlab import divergences


# ----------------------------------------------------------------------------
# The enumerable task.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Task:
  """All completions of a length-L, vocabulary-V autoregressive model.

  Attributes:
    vocab_size: V.
    length: L.
    tokens: ``[N, L]`` every completion (N = V^L), in lexicographic order.
    prefix_index: ``[N, L]`` the row of the logit table that scores token t
      of each completion (the index of its prefix ``y_<t``).
    num_prefixes: rows of the logit table, ``sum_{t<L} V^t``.
  """
  vocab_size: int
  length: int
  tokens: np.ndarray
  prefix_index: np.ndarray
  num_prefixes: int

  @property
  def num_sequences(self) -> int:
    return int(self.tokens.shape[0])


def make_task(vocab_size: int, length: int) -> Task:
  """Enumerates the completions and indexes their prefixes."""
  if not 2 <= vocab_size <= 6:
    raise ValueError(f"`vocab_size` must lie in [2, 6], got {vocab_size}.")
  if not 1 <= length <= 4:
    raise ValueError(f"`length` must lie in [1, 4], got {length}.")
  tokens = np.array(np.meshgrid(*[np.arange(vocab_size)] * length, indexing="ij"))
  tokens = tokens.reshape(length, -1).T.astype(np.int32)
  # Prefixes of length t occupy rows [offset_t, offset_t + V^t), in base-V order.
  offsets = np.cumsum([0] + [vocab_size ** t for t in range(length)])
  prefix_index = np.zeros_like(tokens)
  for t in range(length):
    code = np.zeros(len(tokens), np.int64)
    for s in range(t):
      code = code * vocab_size + tokens[:, s]
    prefix_index[:, t] = offsets[t] + code
  return Task(vocab_size, length, tokens, prefix_index.astype(np.int32),
              int(offsets[-1]))


def token_logits(table: jax.Array, task: Task) -> jax.Array:
  """``[N, L, V]`` next-token logits of every completion from a ``[P, V]`` table."""
  return table[task.prefix_index]


def token_log_probs(table: jax.Array, task: Task) -> jax.Array:
  """``[N, L]`` log-probabilities of each completion's tokens."""
  log_probs = jax.nn.log_softmax(token_logits(table, task), axis=-1)
  return jnp.take_along_axis(log_probs, task.tokens[..., None], axis=-1)[..., 0]


def sequence_log_probs(table: jax.Array, task: Task) -> jax.Array:
  """``[N]`` log pi(y) of every completion (they sum to 1 in probability)."""
  return token_log_probs(table, task).sum(-1)


def sequence_probs(table: np.ndarray, task: Task) -> np.ndarray:
  """``[N]`` pi(y) in float64 numpy (the reference side of every comparison)."""
  logits = np.asarray(table, np.float64)[task.prefix_index]
  logits = logits - logits.max(-1, keepdims=True)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  picked = np.take_along_axis(log_probs, task.tokens[..., None], -1)[..., 0]
  return np.exp(picked.sum(-1))


def table_from_sequence_probs(probs: np.ndarray, task: Task) -> np.ndarray:
  """The ``[P, V]`` logit table of a distribution over completions (float64).

  Row ``prefix`` holds ``log P(prefix, v)``, the log-marginal of the prefix
  extended by each token, so its softmax is the conditional
  ``pi(v | prefix)``; the chain rule then gives back ``probs``. Prefixes of
  probability 0 get uniform rows.
  """
  probs = np.asarray(probs, np.float64)
  table = np.zeros((task.num_prefixes, task.vocab_size))
  for t in range(task.length):
    # Marginal of (y_<t, y_t): sum over the completions sharing it.
    joint = np.zeros((task.num_prefixes, task.vocab_size))
    np.add.at(joint, (task.prefix_index[:, t], task.tokens[:, t]), probs)
    rows = np.unique(task.prefix_index[:, t])
    with np.errstate(divide="ignore"):
      table[rows] = np.where(joint[rows].sum(-1, keepdims=True) > 0,
                             np.log(np.maximum(joint[rows], 1e-300)), 0.0)
  return table


def make_problem(seed: int, task: Task, cfg: ml_collections.ConfigDict) -> dict:
  """One seed's reference table and reward, in float32 numpy."""
  rng = np.random.default_rng(seed)
  ref_table = cfg.reference_scale * rng.standard_normal((task.num_prefixes,
                                                         task.vocab_size))
  reward = cfg.reward_scale * rng.standard_normal(task.num_sequences)
  return {"ref_table": ref_table.astype(np.float32), "reward": reward.astype(np.float32)}


def pair_weights(ref_logp: jax.Array, reward: jax.Array) -> jax.Array:
  """``[N, N]`` P(chosen = i, rejected = j) for pairs drawn from the reference.

  Two distinct completions drawn from pi_ref, the first labelled chosen with
  Bradley-Terry probability ``sigma(r_i - r_j)``; the diagonal (a completion
  paired with itself carries no preference) is dropped and the rest
  renormalised.
  """
  ref_probs = jnp.exp(ref_logp)
  weights = (ref_probs[:, None] * ref_probs[None, :]
             * jax.nn.sigmoid(reward[:, None] - reward[None, :]))
  weights = weights * (1 - jnp.eye(ref_logp.shape[0], dtype=weights.dtype))
  return weights / weights.sum()


# ----------------------------------------------------------------------------
# Exact metrics.
# ----------------------------------------------------------------------------


def seq_kl(table: jax.Array, ref_table: jax.Array, task: Task) -> jax.Array:
  """``[N]`` TDPO's SeqKL(y) = sum_t KL(pi_ref(.|y_<t) || pi(.|y_<t))."""
  return divergences.kl(token_logits(ref_table, task), token_logits(table, task)).sum(-1)


def exact_metrics(table: jax.Array, ref_table: jax.Array, reward: jax.Array,
                  task: Task) -> dict[str, jax.Array]:
  """Expected reward, entropy, KL to the reference, coverage and SeqKLs."""
  logp = sequence_log_probs(table, task)
  ref_logp = sequence_log_probs(ref_table, task)
  weights = pair_weights(ref_logp, reward)
  per_sequence_seq_kl = seq_kl(table, ref_table, task)
  return {
      "reward": jnp.sum(jnp.exp(logp) * reward),
      "entropy": divergences.entropy(logp),
      "kl": divergences.kl(logp, ref_logp),
      "coverage": jnp.exp(jnp.min(logp - ref_logp)),
      "seq_kl_chosen": jnp.sum(weights.sum(1) * per_sequence_seq_kl),
      "seq_kl_rejected": jnp.sum(weights.sum(0) * per_sequence_seq_kl),
  }


# ----------------------------------------------------------------------------
# f-DPO's closed-form optimum (float64 numpy: an independent reference).
# ----------------------------------------------------------------------------


def _ratio_given_shift(scaled_reward: np.ndarray, shift: float, divergence: str,
                       alpha: float) -> np.ndarray:
  """u = pi / pi_ref solving f'(u) = r / beta + shift (see `closed_form_optimum`)."""
  s = scaled_reward + shift
  if divergence == "reverse_kl":  # log u = s
    return np.exp(s)
  if divergence == "forward_kl":  # -1/u = s, s < 0
    return -1.0 / s
  if divergence == "js":  # log(2u / (1 + u)) = s, s < log 2
    w = np.exp(s)
    return w / (2.0 - w)
  # alpha: -u^(-alpha) / alpha = s, s < 0
  return (-alpha * s) ** (-1.0 / alpha)


def closed_form_optimum(ref_probs: np.ndarray, reward: np.ndarray, beta: float,
                        divergence: str, alpha: float = 0.5) -> np.ndarray:
  """pi*_f: the policy with f'(pi / pi_ref) = r / beta + c that sums to 1.

  ``f'`` is f-DPO's ``psi`` up to a constant: ``log u`` (reverse KL), ``-1/u``
  (forward KL), ``log(2u / (1 + u))`` (JS), ``-u^(-alpha) / alpha`` (alpha).
  The shift ``c`` is found by bisection (the mass is increasing in ``c``);
  for forward KL, JS and alpha it must keep ``r / beta + c`` below the pole
  (0, log 2 and 0).
  """
  scaled = np.asarray(reward, np.float64) / beta
  ref_probs = np.asarray(ref_probs, np.float64)
  mass = lambda c: float(np.sum(ref_probs * _ratio_given_shift(scaled, c, divergence,
                                                               alpha)))
  pole = {"reverse_kl": np.inf, "forward_kl": 0.0, "js": math.log(2.0),
          "alpha": 0.0}[divergence]
  if np.isinf(pole):
    c = -np.log(np.sum(ref_probs * np.exp(scaled - scaled.max()))) - scaled.max()
    return ref_probs * np.exp(scaled + c)
  high = pole - scaled.max()  # mass -> inf as c -> high
  low = high - 1.0
  while mass(low) > 1.0:
    low = high - 2.0 * (high - low)
  for _ in range(200):
    mid = 0.5 * (low + high)
    if mid in (low, high):
      break
    low, high = (mid, high) if mass(mid) < 1.0 else (low, mid)
  probs = ref_probs * _ratio_given_shift(scaled, 0.5 * (low + high), divergence, alpha)
  return probs / probs.sum()


def closed_form_curve(ref_probs: np.ndarray, reward: np.ndarray, betas: np.ndarray,
                      divergence: str, alpha: float = 0.5) -> dict[str, np.ndarray]:
  """Expected reward, coverage and KL(pi*_f || pi_ref) along a beta grid."""
  rewards, coverages, kls = [], [], []
  for beta in betas:
    probs = closed_form_optimum(ref_probs, reward, float(beta), divergence, alpha)
    rewards.append(float(np.sum(probs * reward)))
    coverages.append(float(np.min(probs / ref_probs)))
    positive = probs > 0
    kls.append(float(np.sum(probs[positive] * np.log(probs[positive]
                                                      / ref_probs[positive]))))
  return {"beta": np.asarray(betas, np.float64), "reward": np.array(rewards),
          "coverage": np.array(coverages), "kl": np.array(kls)}


# ----------------------------------------------------------------------------
# Comparisons along the closed-form curves.
# ----------------------------------------------------------------------------


def dpo_optimum_at_reward(problem: dict, reward_level: float, task: Task) -> dict:
  """Exact metrics of DPO's population optimum whose expected reward is `reward_level`.

  DPO's optimum ``pi_ref exp(r / beta) / Z`` has an expected reward that
  decreases with beta (from max r to the reference's); beta is found by
  bisection in log space. Levels outside that range are clipped to it.
  """
  ref_probs = sequence_probs(problem["ref_table"], task)
  reward = np.asarray(problem["reward"], np.float64)
  expected = lambda log_beta: float(np.sum(
      closed_form_optimum(ref_probs, reward, math.exp(log_beta), "reverse_kl") * reward))
  low, high = math.log(1e-3), math.log(1e4)
  for _ in range(60):
    mid = 0.5 * (low + high)
    low, high = (mid, high) if expected(mid) > reward_level else (low, mid)
  probs = closed_form_optimum(ref_probs, reward, math.exp(0.5 * (low + high)),
                              "reverse_kl")
  metrics = exact_metrics(jnp.asarray(table_from_sequence_probs(probs, task), jnp.float32),
                          jnp.asarray(problem["ref_table"]), jnp.asarray(problem["reward"]),
                          task)
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def matched_reward_coverage(curves: Mapping[str, Mapping[str, np.ndarray]],
                            num_levels: int) -> dict[str, np.ndarray]:
  """Coverage of each divergence's pi*_f at common expected-reward levels.

  The levels span the reward range every curve reaches (excluding the ends);
  coverage is interpolated linearly in reward along each curve.
  """
  low = max(float(c["reward"].min()) for c in curves.values())
  high = min(float(c["reward"].max()) for c in curves.values())
  levels = np.linspace(low, high, num_levels + 2)[1:-1]
  out = {"levels": levels}
  for name, c in curves.items():
    order = np.argsort(c["reward"])
    out[name] = np.interp(levels, c["reward"][order], c["coverage"][order])
  return out
