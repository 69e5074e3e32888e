"""divlab.losses.policy against float64 numpy transcriptions of each source's
formula, and the KL-estimator gradient table derived exactly by enumeration."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divlab.losses import policy

RNG = np.random.default_rng(0)


def np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


# ----------------------------------------------------------------------------
# group_advantages
# ----------------------------------------------------------------------------


def np_group_advantages(r, std, eps):
  out = np.zeros_like(r)
  for g, row in enumerate(r):
    centred = row - row.mean()
    if std == "none":
      out[g] = centred
    elif len(row) == 1:
      out[g] = 0.0
    else:
      out[g] = centred / (row.std(ddof=1 if std == "unbiased" else 0) + eps)
  return out


@pytest.mark.parametrize("std", ["unbiased", "biased", "none"])
def test_group_advantages_matches_numpy_both_layouts(std):
  r = RNG.normal(size=(4, 5))
  want = np_group_advantages(r, std, 1e-4)
  got = jax.jit(lambda x: policy.group_advantages(x, std=std, eps=1e-4))(r)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # The same groups, shuffled and flattened, with explicit group ids.
  perm = RNG.permutation(20)
  ids = np.repeat(np.arange(4), 5)[perm]
  flat = policy.group_advantages(r.reshape(-1)[perm], ids, std=std, eps=1e-4)
  np.testing.assert_allclose(flat, want.reshape(-1)[perm], rtol=1e-5, atol=1e-6)


def test_group_advantages_conventions_on_binary_pair_and_singletons():
  pair = jnp.array([[1.0, 0.0]])
  # Bessel std of {0, 1} is 0.707, the population std 0.5.
  np.testing.assert_allclose(policy.group_advantages(pair, std="unbiased", eps=0.0),
                             [[0.5 / np.sqrt(0.5), -0.5 / np.sqrt(0.5)]], rtol=1e-6)
  np.testing.assert_allclose(policy.group_advantages(pair, std="biased", eps=0.0),
                             [[1.0, -1.0]], rtol=1e-6)
  ids = jnp.array([0, 0, 2])  # reward 2 is alone in its group
  got = policy.group_advantages(jnp.array([1.0, 0.0, 5.0]), ids, std="unbiased")
  assert got[2] == 0.0
  np.testing.assert_allclose(got[:2], np.array([0.5, -0.5]) / (np.sqrt(0.5) + 1e-6),
                             rtol=1e-6)
  np.testing.assert_allclose(policy.group_advantages(jnp.array([[3.0], [7.0]])),
                             [[0.0], [0.0]])


# ----------------------------------------------------------------------------
# kl_estimator: values, straight-through, and the gradient table.
# ----------------------------------------------------------------------------


def test_kl_estimator_values_match_numpy():
  logp, ref = np.log(RNG.uniform(0.05, 1, 7)), np.log(RNG.uniform(0.05, 1, 7))
  log_r = ref - logp
  want = {"k1": -log_r, "k2": 0.5 * log_r ** 2, "k3": np.exp(log_r) - 1 - log_r}
  want["k1+"], want["k3+"] = want["k1"], want["k3"]
  for kind, value in want.items():
    np.testing.assert_allclose(policy.kl_estimator(logp, ref, kind=kind), value,
                               rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(policy.kl_estimator(logp, ref, kind="k3", clamp=0.1),
                             np.clip(want["k3"], -0.1, 0.1), rtol=1e-5, atol=1e-7)


def test_straight_through_kinds_have_the_k2_gradient():
  logp, ref = np.log(RNG.uniform(0.05, 1, 6)), np.log(RNG.uniform(0.05, 1, 6))
  grad = lambda kind: jax.grad(lambda x: policy.kl_estimator(x, ref, kind=kind).sum())(
      jnp.asarray(logp, jnp.float32))
  # d k2 / d logp = logp - ref.
  for kind in ("k2", "k1+", "k3+"):
    np.testing.assert_allclose(grad(kind), logp - ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad("k3"), 1 - np.exp(ref - logp), rtol=1e-5, atol=1e-6)
  # The reference is a constant.
  g_ref = jax.grad(lambda r: policy.kl_estimator(jnp.float32(logp), r, kind="k3").sum())(
      jnp.asarray(ref, jnp.float32))
  np.testing.assert_array_equal(g_ref, 0.0)


def np_bandit_gradients(theta, ref_logits):
  """Closed-form gradients in the softmax logits theta (float64)."""
  p = np.exp(np_log_softmax(theta))
  log_ratio = np_log_softmax(theta) - np_log_softmax(ref_logits)
  reverse = p * (log_ratio - (p * log_ratio).sum())          # d KL(p || ref)
  forward = p - np.exp(np_log_softmax(ref_logits))            # d KL(ref || p)
  return reverse, forward


def _expected_gradient(per_sample_loss, theta, weights_fn):
  """sum_y pi(y) d loss(y) / d theta, the sampling distribution held fixed."""
  def surrogate(t):
    return (jax.lax.stop_gradient(weights_fn(t)) * per_sample_loss(t)).sum()
  return np.asarray(jax.grad(surrogate)(theta))


def test_bandit_gradient_table_is_exact():
  theta = RNG.normal(size=6)
  ref_logits = RNG.normal(size=6)
  reverse, forward = np_bandit_gradients(theta, ref_logits)
  with jax.enable_x64(True):
    t = jnp.asarray(theta)
    ref = jax.nn.log_softmax(jnp.asarray(ref_logits))
    probs = lambda t: jax.nn.softmax(t)

    def in_loss(kind):
      return _expected_gradient(
          lambda t: policy.kl_estimator(jax.nn.log_softmax(t), ref, kind=kind), t, probs)

    def in_reward(t):  # one token per sequence: grpo_loss on each action alone
      logp = jax.nn.log_softmax(t)[:, None]
      return jax.vmap(lambda lp, rl: policy.grpo_loss(
          lp[None], jax.lax.stop_gradient(lp[None]), jnp.zeros(1), ref_logp=rl[None],
          kl_coef=1.0, kl_in="reward"))(logp, ref[:, None])

    np.testing.assert_allclose(in_loss("k1"), 0.0, atol=1e-12)
    for kind in ("k2", "k1+", "k3+"):
      np.testing.assert_allclose(in_loss(kind), reverse, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(in_loss("k3"), forward, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(_expected_gradient(in_reward, t, probs), reverse,
                               rtol=1e-10, atol=1e-12)


# A length-3 sequence policy over 2 tokens, one logit row per prefix.
VOCAB, LENGTH = 2, 3
PREFIXES = [p for n in range(LENGTH) for p in itertools.product(range(VOCAB), repeat=n)]
PREFIX_INDEX = {p: i for i, p in enumerate(PREFIXES)}
SEQUENCES = list(itertools.product(range(VOCAB), repeat=LENGTH))
ROWS = np.array([[PREFIX_INDEX[s[:t]] for t in range(LENGTH)] for s in SEQUENCES])
TOKENS = np.array(SEQUENCES)


def np_token_logp(table):
  """[num_sequences, LENGTH] log pi(y_t | y_<t) of every sequence."""
  return np_log_softmax(table)[ROWS, TOKENS]


def np_sequence_kl(table, ref_table, frozen=None, forward=False):
  """Sequence KL by enumeration; with ``frozen`` the prefix probabilities come
  from that table (sum over t of E_{prefix ~ frozen} KL_t)."""
  logp, ref = np_log_softmax(table), np_log_softmax(ref_table)
  if frozen is None:
    seq_p = np.exp(np_token_logp(table).sum(1))
    seq_ref = np.exp(np_token_logp(ref_table).sum(1))
    a, b = (seq_ref, seq_p) if forward else (seq_p, seq_ref)
    return float((a * np.log(a / b)).sum())
  frozen_logp = np_log_softmax(frozen)
  total = 0.0
  for prefix in PREFIXES:
    weight = np.exp(sum(frozen_logp[PREFIX_INDEX[prefix[:t]], prefix[t]]
                        for t in range(len(prefix))))
    i = PREFIX_INDEX[prefix]
    p, q = np.exp(logp[i]), np.exp(ref[i])
    a, b = (q, p) if forward else (p, q)
    total += weight * (a * np.log(a / b)).sum()
  return total


def np_finite_difference(fn, table, h=1e-6):
  grad = np.zeros_like(table)
  for idx in np.ndindex(table.shape):
    e = np.zeros_like(table)
    e[idx] = h
    grad[idx] = (fn(table + e) - fn(table - e)) / (2 * h)
  return grad


def test_sequence_gradient_table_is_exact():
  table = RNG.normal(size=(len(PREFIXES), VOCAB))
  ref_table = RNG.normal(size=(len(PREFIXES), VOCAB))
  exact_reverse = np_finite_difference(lambda t: np_sequence_kl(t, ref_table), table)
  exact_forward = np_finite_difference(
      lambda t: np_sequence_kl(t, ref_table, forward=True), table)
  per_token_reverse = np_finite_difference(
      lambda t: np_sequence_kl(t, ref_table, frozen=table), table)
  per_token_forward = np_finite_difference(
      lambda t: np_sequence_kl(t, ref_table, frozen=table, forward=True), table)
  with jax.enable_x64(True):
    rows, tokens = jnp.asarray(ROWS), jnp.asarray(TOKENS)
    ref_logp = jax.nn.log_softmax(jnp.asarray(ref_table))[rows, tokens]
    token_logp = lambda t: jax.nn.log_softmax(t)[rows, tokens]
    seq_probs = lambda t: jnp.exp(token_logp(t).sum(1))

    def in_loss(kind):
      return _expected_gradient(
          lambda t: policy.kl_estimator(token_logp(t), ref_logp, kind=kind).sum(1),
          jnp.asarray(table), seq_probs)

    def in_reward(t):  # summed over tokens: aggregation 'constant', normaliser 1
      lp = token_logp(t)
      return jax.vmap(lambda l, r: policy.grpo_loss(
          l[None], jax.lax.stop_gradient(l[None]), jnp.zeros(1), ref_logp=r[None],
          kl_coef=1.0, kl_in="reward", aggregation="constant", normalizer=1.0))(
              lp, ref_logp)

    reward_grad = _expected_gradient(in_reward, jnp.asarray(table), seq_probs)
    np.testing.assert_allclose(reward_grad, exact_reverse, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(in_loss("k1"), 0.0, atol=1e-12)
    for kind in ("k2", "k1+", "k3+"):
      np.testing.assert_allclose(in_loss(kind), per_token_reverse, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(in_loss("k3"), per_token_forward, rtol=1e-6, atol=1e-8)
  # ... and neither per-token form is the gradient of a sequence KL.
  rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)
  assert rel(per_token_reverse, exact_reverse) > 0.05
  assert rel(per_token_forward, exact_forward) > 0.05
  assert rel(per_token_forward, exact_reverse) > 0.05


# ----------------------------------------------------------------------------
# ppo_clip and grpo_loss
# ----------------------------------------------------------------------------


def np_ppo_clip(logp, old, adv, lo, hi, dual):
  ratio = np.exp(np.clip(logp - old, -20, 20))
  loss = np.maximum(-ratio * adv, -np.clip(ratio, 1 - lo, 1 + hi) * adv)
  if dual is not None:
    loss = np.where(adv < 0, np.minimum(loss, -dual * adv), loss)
  return loss


@pytest.mark.parametrize("lo,hi,dual", [(0.2, 0.2, None), (0.2, 0.28, 3.0)])
def test_ppo_clip_matches_numpy(lo, hi, dual):
  logp = np.log(RNG.uniform(0.05, 1, (4, 6)))
  old = logp + RNG.normal(scale=1.5, size=(4, 6))
  adv = RNG.normal(size=(4, 1))
  got = jax.jit(lambda a, b, c: policy.ppo_clip(a, b, c, clip_low=lo, clip_high=hi,
                                                dual_clip=dual))(logp, old, adv)
  np.testing.assert_allclose(got, np_ppo_clip(logp, old, adv, lo, hi, dual), rtol=1e-5,
                             atol=1e-6)


def _batch(lengths, t=5):
  b = len(lengths)
  logp = np.log(RNG.uniform(0.05, 1, (b, t)))
  old = logp + RNG.normal(scale=0.3, size=(b, t))
  ref = np.log(RNG.uniform(0.05, 1, (b, t)))
  mask = np.arange(t)[None] < np.asarray(lengths)[:, None]
  adv = RNG.normal(size=b)
  return logp, old, ref, mask, adv


def np_aggregate(values, mask, aggregation, max_length):
  v = np.where(mask, values, 0)
  if aggregation == "sequence_mean":
    return np.mean(v.sum(1) / mask.sum(1))
  if aggregation == "token_mean":
    return v.sum() / mask.sum()
  return v.sum() / (len(v) * max_length)


@pytest.mark.parametrize("aggregation", ["sequence_mean", "token_mean", "constant"])
def test_grpo_loss_matches_numpy_with_kl_in_loss(aggregation):
  logp, old, ref, mask, adv = _batch([5, 3, 1, 4])
  got = policy.grpo_loss(logp, old, adv, mask, ref_logp=ref, kl_coef=0.1, kl_kind="k3",
                         aggregation=aggregation)
  log_r = ref - logp
  token = np_ppo_clip(logp, old, adv[:, None], 0.2, 0.2, None) + 0.1 * (
      np.exp(log_r) - 1 - log_r)
  np.testing.assert_allclose(got, np_aggregate(token, mask, aggregation, 5), rtol=1e-5)


def test_grpo_loss_kl_in_reward_is_return_to_go():
  logp, old, ref, mask, adv = _batch([5, 2])
  got = policy.grpo_loss(logp, old, adv, mask, ref_logp=ref, kl_coef=0.3, kl_in="reward",
                         aggregation="token_mean")
  k1 = np.where(mask, logp - ref, 0)
  rtg = np.cumsum(k1[:, ::-1], 1)[:, ::-1]
  token = np_ppo_clip(logp, old, adv[:, None] - 0.3 * rtg, 0.2, 0.2, None)
  np.testing.assert_allclose(got, np_aggregate(token, mask, "token_mean", 5), rtol=1e-5)


def test_aggregations_coincide_at_equal_lengths_and_accumulate():
  logp, old, ref, mask, adv = _batch([5, 5, 5, 5])
  values = [float(policy.grpo_loss(logp, old, adv, mask, aggregation=a))
            for a in policy.AGGREGATIONS]
  np.testing.assert_allclose(values, values[0], rtol=1e-6)
  logp, old, ref, mask, adv = _batch([5, 2, 4, 1])
  full = policy.grpo_loss(logp, old, adv, mask, aggregation="token_mean")
  total = mask.sum()
  halves = [policy.grpo_loss(logp[s], old[s], adv[s], mask[s], aggregation="token_mean",
                             normalizer=total) for s in (slice(0, 2), slice(2, 4))]
  np.testing.assert_allclose(sum(halves), full, rtol=1e-6)
  full = policy.grpo_loss(logp, old, adv, mask, aggregation="sequence_mean")
  halves = [policy.grpo_loss(logp[s], old[s], adv[s], mask[s], normalizer=4)
            for s in (slice(0, 2), slice(2, 4))]
  np.testing.assert_allclose(sum(halves), full, rtol=1e-6)


def test_grpo_on_policy_gradient_is_reinforce():
  logp, _, _, mask, adv = _batch([5, 3])
  grad = jax.grad(lambda x: policy.grpo_loss(x, jax.lax.stop_gradient(x), adv, mask,
                                             aggregation="constant", normalizer=1.0))(
                                                 jnp.float32(logp))
  np.testing.assert_allclose(grad, np.where(mask, -adv[:, None], 0), rtol=1e-6)


# ----------------------------------------------------------------------------
# topr, disco, dph_rehearsal, kdrl
# ----------------------------------------------------------------------------


def test_topr_matches_numpy_value_and_gradient():
  logp = np.log(RNG.uniform(0.01, 1, 8))
  mu = np.log(RNG.uniform(0.01, 1, 8))
  r = RNG.choice([-1.0, 0.5, 1.0], 8)
  alpha = np.where(r < 0, np.clip(np.exp(logp - mu), 0, 1), 1.0)
  np.testing.assert_allclose(policy.topr(logp, mu, r), -alpha * r * logp, rtol=1e-5)
  grad = jax.grad(lambda x: policy.topr(x, mu, r).sum())(jnp.float32(logp))
  np.testing.assert_allclose(grad, -alpha * r, rtol=1e-5)


def np_disco(logp, old, r, ids, mask, score, tau, delta, beta):
  per = logp if score == "log_l" else np.exp(logp - old)
  s = np.where(mask, per, 0).sum(1) / mask.sum(1)
  terms = []
  for g in np.unique(ids):
    sg, rg = s[ids == g], r[ids == g]
    pos, neg = sg[rg > 0], sg[rg <= 0]
    if len(pos) and len(neg):
      terms.append(pos.mean() - tau * np.log(np.mean(np.exp(neg / tau))))
  kl = np.where(mask, old - logp, 0).sum() / mask.sum()
  return -np.mean(terms) + max(beta * (kl - delta), 0) * kl


@pytest.mark.parametrize("score", ["log_l", "l_ratio"])
def test_disco_matches_numpy(score):
  logp, old, _, mask, _ = _batch([5, 3, 4, 2, 5, 1, 3, 4, 2, 5, 5, 1])
  ids = np.repeat([0, 3, 6, 9], 3)
  r = np.array([1, 0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0], float)  # groups 6, 9 dropped
  got = jax.jit(lambda *a: policy.disco(*a, score=score, tau=2.0, delta=1e-4, beta=10.0))(
      logp, old, r, ids, mask)
  np.testing.assert_allclose(got, np_disco(logp, old, r, ids, mask, score, 2.0, 1e-4, 10.0),
                             rtol=1e-5)


def test_dph_rehearsal_expectations_are_the_divergences():
  p0 = RNG.dirichlet(np.ones(6))
  p = RNG.dirichlet(np.ones(6))
  m = 0.5 * (p + p0)
  a = 0.2
  want = {"forward": (p0 * np.log(p0 / p)).sum(),
          "js": (p * np.log(p / m)).sum() + (p0 * np.log(p0 / m)).sum(),
          "alpha": (1 - (p0 ** a * p ** (1 - a)).sum()) / (a * (1 - a))}
  for kind, value in want.items():
    got = (p0 * policy.dph_rehearsal(np.log(p), np.log(p0), kind=kind, alpha=a)).sum()
    np.testing.assert_allclose(got, value, rtol=1e-5)
  # Its expected gradient in the logits of pi is that of KL(pi_0 || pi): pi - pi_0.
  theta = jnp.float32(np.log(p))
  grad = jax.grad(lambda t: (p0 * policy.dph_rehearsal(jax.nn.log_softmax(t),
                                                       np.log(p0))).sum())(theta)
  np.testing.assert_allclose(grad, p - p0, rtol=1e-4, atol=1e-6)


def test_kdrl_is_grpo_plus_masked_k2():
  logp, old, teacher, mask, adv = _batch([5, 3, 2])
  correct = np.array([True, False, False])
  got = policy.kdrl(logp, old, adv, teacher, mask, kd_coef=0.01,
                    kd_where=~correct[:, None], aggregation="token_mean")
  rl = np_aggregate(np_ppo_clip(logp, old, adv[:, None], 0.2, 0.2, None), mask,
                    "token_mean", 5)
  kd_mask = mask & ~correct[:, None]
  kd = np_aggregate(0.5 * (teacher - logp) ** 2, kd_mask, "token_mean", 5)
  np.testing.assert_allclose(got, rl + 0.01 * kd, rtol=1e-5)


@pytest.mark.parametrize("call,arg", [
    (lambda: policy.group_advantages(jnp.ones((2, 3)), std="bessel"), "std"),
    (lambda: policy.group_advantages(jnp.ones(3)), "rewards"),
    (lambda: policy.kl_estimator(jnp.ones(2), jnp.ones(2), kind="k4"), "kind"),
    (lambda: policy.kl_estimator(jnp.ones(2), jnp.ones(3)), "ref_logp"),
    (lambda: policy.ppo_clip(jnp.ones(2), jnp.ones(2), jnp.ones(2), clip_low=1.5),
     "clip_low"),
    (lambda: policy.ppo_clip(jnp.ones(2), jnp.ones(2), jnp.ones(2), dual_clip=0.5),
     "dual_clip"),
    (lambda: policy.grpo_loss(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones(2),
                              aggregation="dr"), "aggregation"),
    (lambda: policy.grpo_loss(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones(2),
                              kl_coef=0.1), "ref_logp"),
    (lambda: policy.topr(jnp.ones(2), jnp.ones(3), jnp.ones(2)), "behaviour_logp_seq"),
    (lambda: policy.disco(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones(2),
                          jnp.zeros(2, int), tau=0.0), "tau"),
    (lambda: policy.dph_rehearsal(jnp.ones(2), jnp.ones(2), kind="alpha", alpha=1.0),
     "alpha"),
])
def test_bad_input_names_the_argument(call, arg):
  with pytest.raises(ValueError, match=f"`{arg}"):
    call()
