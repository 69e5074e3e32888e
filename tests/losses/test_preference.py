"""Tests for divlab.losses.preference against float64 numpy transcriptions.

Each reference below is written from the paper's formula (see the docstrings'
sources), in float64, on the float32-rounded inputs, so the comparison
measures only the float32 arithmetic of the code under test.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divlab import losses
from divlab.losses import preference as pref
from divlab.losses import unlearning
from finite_differences import central_differences

RTOL = 1e-6
ATOL = 1e-6
BATCH, LENGTH, VOCAB = 5, 4, 6


# ----------------------------------------------------------------------------
# float64 references.
# ----------------------------------------------------------------------------


def np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def np_log_sigmoid(x):
  # -log(1 + e^-x): finite where log(sigmoid(x)) underflows to log 0.
  return -np.logaddexp(0.0, -np.asarray(x, np.float64))


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def np_margin(lw, ll, rw, rl):
  return (np.float64(lw) - rw) - (np.float64(ll) - rl)


def np_dpo(lw, ll, rw, rl, beta, eps=0.0):
  h = np_margin(lw, ll, rw, rl)
  return -(1 - eps) * np_log_sigmoid(beta * h) - eps * np_log_sigmoid(-beta * h)


def np_robust_dpo(lw, ll, rw, rl, beta, eps):
  h = np_margin(lw, ll, rw, rl)
  return (-(1 - eps) * np_log_sigmoid(beta * h)
          + eps * np_log_sigmoid(-beta * h)) / (1 - 2 * eps)


def np_ipo(lw, ll, rw, rl, beta):
  return (np_margin(lw, ll, rw, rl) - 1 / (2 * beta)) ** 2


def np_psi(u, divergence, alpha):
  """f'(u) up to a constant, from the paper's table."""
  if divergence == "reverse_kl":
    return np.log(u)
  if divergence == "forward_kl":
    return -1.0 / u
  if divergence == "js":
    return np.log(2 * u / (1 + u))
  return -u ** (-alpha) / alpha


def np_f_dpo(lw, ll, rw, rl, beta, divergence, alpha=0.5):
  u_w = np.exp(np.float64(lw) - rw)
  u_l = np.exp(np.float64(ll) - rl)
  return -np_log_sigmoid(beta * (np_psi(u_w, divergence, alpha)
                                 - np_psi(u_l, divergence, alpha)))


def np_token_terms(logits, ref_logits, tokens):
  """Per-token log-ratio of the target and KL(pi_ref || pi)."""
  log_p, log_r = np_log_softmax(logits), np_log_softmax(ref_logits)
  take = lambda a: np.take_along_axis(a, tokens[..., None], -1)[..., 0]
  ratio = take(log_p) - take(log_r)
  kl = (np.exp(log_r) * (log_r - log_p)).sum(-1)
  return ratio, kl


def np_tdpo(inputs, beta, alpha, variant, masks=None):
  cw, cl, rcw, rcl, tw, tl = inputs
  mw, ml = masks if masks is not None else (np.ones(tw.shape), np.ones(tl.shape))
  ratio_w, kl_w = np_token_terms(cw, rcw, tw)
  ratio_l, kl_l = np_token_terms(cl, rcl, tl)
  delta = (mw * ratio_w).sum(-1) - (ml * ratio_l).sum(-1)
  seq_kl_w, seq_kl_l = (mw * kl_w).sum(-1), (ml * kl_l).sum(-1)
  weight = 1.0 if variant == 1 else alpha
  return -np_log_sigmoid(beta * (delta - weight * (seq_kl_l - seq_kl_w)))


def np_sparse_po(inputs, masks_u, masks_d, beta, lam_u, lam_d):
  cw, cl, rcw, rcl, tw, tl = inputs
  ratio_w, kl_w = np_token_terms(cw, rcw, tw)
  ratio_l, kl_l = np_token_terms(cl, rcl, tl)
  tok_kl_w, tok_kl_l = -kl_w, -kl_l  # sum_v p_ref (log p - log p_ref)
  u = (masks_u[0] * ratio_w).sum(-1) - (masks_u[1] * ratio_l).sum(-1)
  d = (masks_d[0] * tok_kl_w).sum(-1) - (masks_d[1] * tok_kl_l).sum(-1)
  penalty = (lam_u * (np.abs(masks_u[0]).sum(-1) + np.abs(masks_u[1]).sum(-1))
             + lam_d * (np.abs(masks_d[0]).sum(-1) + np.abs(masks_d[1]).sum(-1)))
  return -np_log_sigmoid(beta * (u - d)) + penalty


def np_simpo(lw, ll, beta, ratio, eps=0.0):
  z = beta * (np.float64(lw) - ll) - beta * ratio
  return -(1 - eps) * np_log_sigmoid(z) - eps * np_log_sigmoid(-z)


def np_orpo(lw, ll, lam):
  lw, ll = np.float64(lw), np.float64(ll)
  log_odds = lambda m: m - np.log(-np.expm1(m))
  return -lw - lam * np_log_sigmoid(log_odds(lw) - log_odds(ll))


def np_kto(logp, ref_logp, desirable, kl_terms, beta, lam_d, lam_u):
  z0 = max(np.mean(kl_terms), 0.0)
  r = np.float64(logp) - ref_logp
  return np.where(desirable, lam_d * (1 - np_sigmoid(beta * (r - z0))),
                  lam_u * (1 - np_sigmoid(beta * (z0 - r))))


def np_mapo(mse_w, mse_l, beta, snr, steps):
  g = lambda x: x / (np.exp(x) - 1)
  mse_w, mse_l = np.float64(mse_w), np.float64(mse_l)
  return mse_w - beta * np_log_sigmoid(steps * (g(snr * mse_w) - g(snr * mse_l)))


# ----------------------------------------------------------------------------
# Inputs.
# ----------------------------------------------------------------------------


def f32(x):
  return np.asarray(x, np.float32)


@pytest.fixture(scope="module")
def pairs():
  """Summed log-probabilities of BATCH pairs (policy near the reference)."""
  rng = np.random.default_rng(0)
  ref = -rng.uniform(2.0, 12.0, size=(2, BATCH))
  pol = ref + rng.normal(0.0, 1.5, size=(2, BATCH))
  return tuple(f32(a) for a in (pol[0], pol[1], ref[0], ref[1]))


@pytest.fixture(scope="module")
def means():
  """Per-token mean log-probabilities (in (-3, -0.05))."""
  rng = np.random.default_rng(1)
  return tuple(f32(-rng.uniform(0.05, 3.0, size=BATCH)) for _ in range(4))


@pytest.fixture(scope="module")
def token_inputs():
  rng = np.random.default_rng(2)
  logits = [f32(rng.normal(0, 2.0, size=(BATCH, LENGTH, VOCAB))) for _ in range(4)]
  tokens = [rng.integers(0, VOCAB, size=(BATCH, LENGTH)) for _ in range(2)]
  return (*logits, *tokens)


def check_close(actual, expected):
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected,
                             rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------
# Values against the papers' formulas.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("beta,eps", [(0.1, 0.0), (0.5, 0.0), (0.1, 0.2), (1.0, 0.5)])
def test_dpo_and_cdpo_match_formula(pairs, beta, eps):
  got = jax.jit(functools.partial(pref.dpo, beta=beta, label_smoothing=eps))(*pairs)
  check_close(got, np_dpo(*pairs, beta, eps))


@pytest.mark.parametrize("eps", [0.1, 0.3, 0.45])
def test_robust_dpo_matches_formula(pairs, eps):
  got = pref.robust_dpo(*pairs, epsilon=eps, beta=0.2)
  check_close(got, np_robust_dpo(*pairs, 0.2, eps))


def test_robust_dpo_is_unbiased_under_label_flips(pairs):
  # Its expectation over flips at rate e is the clean DPO loss (the paper's point).
  eps = 0.2
  lw, ll, rw, rl = pairs
  kept = pref.robust_dpo(lw, ll, rw, rl, epsilon=eps)
  flipped = pref.robust_dpo(ll, lw, rl, rw, epsilon=eps)
  check_close((1 - eps) * np.asarray(kept, np.float64)
              + eps * np.asarray(flipped, np.float64), np_dpo(*pairs, 0.1))


def test_ipo_matches_formula_on_token_means(means):
  check_close(pref.ipo(*means, beta=0.1), np_ipo(*means, 0.1))
  check_close(pref.ipo(*means, beta=2.0), np_ipo(*means, 2.0))


@pytest.mark.parametrize("divergence,alpha", [
    ("reverse_kl", 0.5), ("forward_kl", 0.5), ("js", 0.5), ("alpha", 0.3),
    ("alpha", 0.7)])
def test_f_dpo_matches_formula(pairs, divergence, alpha):
  got = jax.jit(functools.partial(pref.f_dpo, divergence=divergence, alpha=alpha,
                                  beta=0.3))(*pairs)
  check_close(got, np_f_dpo(*pairs, 0.3, divergence, alpha))


@pytest.mark.parametrize("variant", [1, 2])
def test_tdpo_matches_formula(token_inputs, variant):
  got = jax.jit(functools.partial(pref.tdpo, variant=variant, alpha=0.5, beta=0.1))(
      *token_inputs)
  check_close(got, np_tdpo(token_inputs, 0.1, 0.5, variant))


def test_tdpo_token_mask(token_inputs):
  rng = np.random.default_rng(3)
  mw = rng.random((BATCH, LENGTH)) < 0.7
  ml = rng.random((BATCH, LENGTH)) < 0.7
  got = pref.tdpo(*token_inputs, chosen_where=mw, rejected_where=ml, variant=1)
  check_close(got, np_tdpo(token_inputs, 0.1, 0.5, 1, masks=(mw, ml)))
  # Masked-out positions may hold -inf logits and ignore ids without effect.
  cw, cl, rcw, rcl, tw, tl = token_inputs
  poisoned = [np.where(~mw[..., None], -np.inf, cw), cl,
              np.where(~mw[..., None], np.nan, rcw), rcl,
              np.where(~mw, -100, tw), tl]
  again = pref.tdpo(*poisoned, chosen_where=mw, rejected_where=ml, variant=1)
  np.testing.assert_array_equal(np.asarray(again), np.asarray(got))


def test_tdpo2_stops_the_gradient_through_chosen_seq_kl(token_inputs):
  # Finite differences of the numpy loss with SeqKL_w frozen at the base point.
  cw, cl, rcw, rcl, tw, tl = token_inputs
  beta, alpha = 0.5, 0.5
  _, kl_w0 = np_token_terms(cw, rcw, tw)
  frozen = kl_w0.sum(-1)

  def np_loss(chosen_logits):
    ratio_w, _ = np_token_terms(chosen_logits, rcw, tw)
    ratio_l, kl_l = np_token_terms(cl, rcl, tl)
    z = ratio_w.sum(-1) - ratio_l.sum(-1) - alpha * (kl_l.sum(-1) - frozen)
    return (-np_log_sigmoid(beta * z)).sum()

  grad = jax.grad(lambda c: pref.tdpo(c, cl, rcw, rcl, tw, tl, variant=2, alpha=alpha,
                                      beta=beta, reduction="sum"))(cw)
  numeric = central_differences(np_loss, np.float64(cw))
  np.testing.assert_allclose(np.asarray(grad, np.float64), numeric, atol=2e-6)


def test_sparse_po_matches_formula(token_inputs):
  rng = np.random.default_rng(4)
  shape = (BATCH, LENGTH)
  masks_u = [f32(rng.random(shape)) for _ in range(2)]
  masks_d = [f32(rng.random(shape)) for _ in range(2)]
  got = pref.sparse_po(*token_inputs, chosen_reward_mask=masks_u[0],
                       rejected_reward_mask=masks_u[1], chosen_kl_mask=masks_d[0],
                       rejected_kl_mask=masks_d[1], reward_l1=1e-2, kl_l1=3e-2,
                       beta=0.8)
  check_close(got, np_sparse_po(token_inputs, masks_u, masks_d, 0.8, 1e-2, 3e-2))


def test_simpo_matches_formula(means):
  lw, ll = means[:2]
  check_close(pref.simpo(lw, ll), np_simpo(lw, ll, 2.0, 0.25))
  check_close(pref.simpo(lw, ll, beta=2.5, gamma_beta_ratio=0.5, label_smoothing=0.1),
              np_simpo(lw, ll, 2.5, 0.5, 0.1))


def test_orpo_matches_formula(means):
  lw, ll = means[:2]
  check_close(pref.orpo(lw, ll, odds_ratio_weight=0.1), np_orpo(lw, ll, 0.1))
  check_close(pref.orpo(lw, ll, odds_ratio_weight=1.0), np_orpo(lw, ll, 1.0))


def test_log1mexp_matches_float64_over_its_range():
  x = f32(-np.logspace(-12, 2, 57))
  check_close(pref.log1mexp(x), np.log(-np.expm1(np.float64(x))))


def test_kto_matches_formula(pairs):
  rng = np.random.default_rng(5)
  logp, ref_logp = pairs[0], pairs[2]
  desirable = rng.random(BATCH) < 0.5
  for shift in (-1.0, 2.0):  # The KL estimate is clamped at 0 (first) or not.
    m_logp = f32(rng.normal(-5, 1, size=7))
    m_ref = f32(m_logp - shift + rng.normal(0, 0.1, size=7))
    got = pref.kto(logp, ref_logp, desirable, mismatched_logp=m_logp,
                   mismatched_ref_logp=m_ref, beta=0.3, desirable_weight=1.0,
                   undesirable_weight=1.5)
    want = np_kto(logp, ref_logp, desirable, np.float64(m_logp) - m_ref, 0.3, 1.0, 1.5)
    check_close(got, want)


def test_kto_reference_point_is_held_constant(pairs):
  logp, ref_logp = pairs[0], pairs[2]
  desirable = np.array([True, False, True, False, True])
  m_ref = f32(np.full(3, -4.0))

  def loss(m_logp):
    return pref.kto(logp, ref_logp, desirable, mismatched_logp=m_logp,
                    mismatched_ref_logp=m_ref, reduction="sum")

  grad = jax.grad(loss)(f32(np.full(3, -2.0)))
  np.testing.assert_array_equal(np.asarray(grad), 0.0)
  precomputed = pref.kto(logp, ref_logp, desirable, reference_point=2.0)
  check_close(precomputed, np_kto(logp, ref_logp, desirable, [2.0], 0.1, 1.0, 1.0))


def test_mapo_matches_formula():
  rng = np.random.default_rng(6)
  mse_w, mse_l = f32(rng.uniform(0.0, 2.0, BATCH)), f32(rng.uniform(0.0, 2.0, BATCH))
  # The margin scales the MSEs by num_train_timesteps (1000) inside an exp, which
  # amplifies float32 rounding: 3e-6 relative on an H200, 1e-5 allowed.
  np.testing.assert_allclose(np.asarray(pref.mapo(mse_w, mse_l), np.float64),
                             np_mapo(mse_w, mse_l, 0.1, 0.5, 1000), rtol=1e-5, atol=ATOL)
  check_close(pref.mapo(mse_w, mse_l, beta=0.5, snr=2.0, num_train_timesteps=10),
              np_mapo(mse_w, mse_l, 0.5, 2.0, 10))


def test_mapo_margin_near_zero_and_large_mse():
  # g(x) = x / (e^x - 1) -> 1 at 0; large MSEs underflow to g = 0 without NaN.
  mse = f32([0.0, 1e-6, 1e-3, 5e-3, 500.0])
  got = pref.mapo(mse, f32(np.full(5, 0.3)), beta=1.0, num_train_timesteps=1)
  x = np.float64(mse) * 0.5
  want = np.ones_like(x)
  want[x > 0] = x[x > 0] / np.expm1(x[x > 0])
  want = np.float64(mse) - np_log_sigmoid(want - 0.15 / np.expm1(0.15))
  check_close(got, want)
  grads = jax.grad(lambda m: pref.mapo(m, f32(np.full(5, 0.3)), beta=1.0,
                                       num_train_timesteps=1, reduction="sum"))(mse)

  def np_loss(m):  # g extended through 0 by its limit: smooth, so differences hold
    x = 0.5 * m
    g = np.where(x != 0, x / np.expm1(np.where(x != 0, x, 1.0)), 1.0)
    return np.sum(m - np_log_sigmoid(g - 0.15 / np.expm1(0.15)))

  step = 1e-6
  numeric = [(np_loss(np.float64(mse) + step * e) - np_loss(np.float64(mse) - step * e))
             / (2 * step) for e in np.eye(5)]
  np.testing.assert_allclose(np.asarray(grads, np.float64), numeric, rtol=1e-5)


def test_npo_is_the_unlearning_function():
  assert pref.npo is unlearning.npo
  assert losses.preference.npo is unlearning.npo


# ----------------------------------------------------------------------------
# Identities.
# ----------------------------------------------------------------------------


def test_f_dpo_reverse_kl_is_dpo(pairs):
  np.testing.assert_allclose(pref.f_dpo(*pairs, divergence="reverse_kl", beta=0.3),
                             pref.dpo(*pairs, beta=0.3), rtol=1e-7, atol=0)


def test_f_dpo_alpha_limits(pairs):
  # alpha -> 0 approaches reverse KL (DPO); alpha -> 1 approaches forward KL.
  np.testing.assert_allclose(pref.f_dpo(*pairs, divergence="alpha", alpha=1e-4),
                             pref.dpo(*pairs), rtol=5e-4)
  np.testing.assert_allclose(pref.f_dpo(*pairs, divergence="alpha", alpha=1 - 1e-4),
                             pref.f_dpo(*pairs, divergence="forward_kl"), rtol=5e-4)


def test_robust_dpo_at_zero_epsilon_is_dpo(pairs):
  np.testing.assert_allclose(pref.robust_dpo(*pairs, epsilon=0.0, beta=0.7),
                             pref.dpo(*pairs, beta=0.7), rtol=1e-7, atol=0)


def test_sparse_po_with_unit_masks_is_tdpo1(token_inputs):
  ones = np.ones((BATCH, LENGTH), np.float32)
  tdpo1 = pref.tdpo(*token_inputs, variant=1, beta=0.4)
  no_penalty = pref.sparse_po(*token_inputs, chosen_reward_mask=ones,
                              rejected_reward_mask=ones, chosen_kl_mask=ones,
                              rejected_kl_mask=ones, reward_l1=0.0, kl_l1=0.0, beta=0.4)
  np.testing.assert_allclose(no_penalty, tdpo1, rtol=1e-6)
  # With penalties, unit masks add the constant lambda * (number of tokens).
  penalised = pref.sparse_po(*token_inputs, chosen_reward_mask=ones,
                             rejected_reward_mask=ones, reward_l1=1e-3, beta=0.4)
  np.testing.assert_allclose(penalised, np.asarray(tdpo1) + 1e-3 * 2 * LENGTH,
                             rtol=1e-6)
  # Without masks there are no penalties either.
  np.testing.assert_allclose(pref.sparse_po(*token_inputs, beta=0.4), tdpo1, rtol=1e-6)


def test_token_losses_broadcast_chosen_against_rejected(token_inputs):
  # [B, 1] chosen against [1, B] rejected scores all B x B ordered pairs.
  cw, cl, rcw, rcl, tw, tl = token_inputs
  outer = pref.tdpo(cw[:, None], cl[None], rcw[:, None], rcl[None], tw[:, None],
                    tl[None], variant=1)
  tile = lambda a, axis: np.repeat(np.expand_dims(a, axis), BATCH, axis)
  explicit = pref.tdpo(tile(cw, 1), tile(cl, 0), tile(rcw, 1), tile(rcl, 0),
                       tile(tw, 1), tile(tl, 0), variant=1)
  assert outer.shape == (BATCH, BATCH)
  np.testing.assert_allclose(outer, explicit, rtol=1e-6)
  masks = np.ones((BATCH, LENGTH), np.float32)
  sparse = pref.sparse_po(cw[:, None], cl[None], rcw[:, None], rcl[None], tw[:, None],
                          tl[None], chosen_kl_mask=masks[:, None],
                          rejected_kl_mask=masks[None], kl_l1=0.0, beta=0.1)
  np.testing.assert_allclose(sparse, explicit, rtol=1e-6)


def test_tdpo_variants_agree_in_value_at_alpha_one(token_inputs):
  np.testing.assert_allclose(pref.tdpo(*token_inputs, variant=2, alpha=1.0),
                             pref.tdpo(*token_inputs, variant=1), rtol=1e-6)


# ----------------------------------------------------------------------------
# Extreme log-ratios, dtypes, masks, reductions.
# ----------------------------------------------------------------------------


def _pair_losses():
  """Every sequence-level pair loss as f(lw, ll, rw, rl) -> [B]."""
  return {
      "dpo": pref.dpo,
      "cdpo": functools.partial(pref.dpo, label_smoothing=0.2),
      "robust_dpo": functools.partial(pref.robust_dpo, epsilon=0.2),
      "ipo": pref.ipo,
      "f_dpo_rkl": functools.partial(pref.f_dpo, divergence="reverse_kl"),
      "f_dpo_fkl": functools.partial(pref.f_dpo, divergence="forward_kl"),
      "f_dpo_js": functools.partial(pref.f_dpo, divergence="js"),
      "f_dpo_alpha": functools.partial(pref.f_dpo, divergence="alpha", alpha=0.5),
      "simpo": lambda lw, ll, rw, rl: pref.simpo(lw, ll),
      "orpo": lambda lw, ll, rw, rl: pref.orpo(jnp.minimum(lw, 0), jnp.minimum(ll, 0)),
      "kto": lambda lw, ll, rw, rl: pref.kto(
          jnp.concatenate([lw, ll]), jnp.concatenate([rw, rl]),
          jnp.arange(2 * lw.shape[0]) < lw.shape[0], reference_point=1.0),
      "npo": lambda lw, ll, rw, rl: pref.npo(ll, rl),
      "mapo": lambda lw, ll, rw, rl: pref.mapo(jnp.abs(lw), jnp.abs(ll)),
  }


# Float64 transcriptions for +-800-nat log-ratios, where some references above
# overflow, with the documented numerics of each loss at the extremes (f-DPO's
# cap on beta psi(u), ORPO's probability-1 completion taken at the largest
# float below 0).
stable_log_sigmoid = np_log_sigmoid


# f_dpo docstring: beta psi(u) = -exp(log(beta / a) - a log u) (a = 1 for
# forward KL), the exponent capped at C = log(float32 max) - 1.
F_DPO_CAP = np.log(np.finfo(np.float32).max.astype(np.float64)) - 1.0


def stable_f_dpo(lw, ll, rw, rl, divergence, beta=0.1, alpha=0.5):
  def scaled_psi(log_u):
    if divergence == "js":  # log(2u / (1 + u)) = log sigma(log u) + log 2
      return beta * (stable_log_sigmoid(log_u) + np.log(2.0))
    a = 1.0 if divergence == "forward_kl" else alpha
    return -np.exp(np.minimum(np.log(beta / a) - a * log_u, F_DPO_CAP))
  return -stable_log_sigmoid(scaled_psi(lw - rw) - scaled_psi(ll - rl))


def f_dpo_capped_gradients(lw, ll, rw, rl, divergence, beta=0.1, alpha=0.5):
  """d f_dpo / d (lw, ll) by hand: the loss reaches exp(C) ~ 1e38 here, far too
  large for finite differences of order-one slopes. With s(x) the capped
  beta psi above and z = s(lw - rw) - s(ll - rl), L = softplus(-z), so
  dL/dlw = -sigma(-z) s'(lw - rw) and dL/dll = sigma(-z) s'(ll - rl), where
  s'(x) = beta e^{-a x} below the cap and 0 beyond it (as documented)."""
  a = 1.0 if divergence == "forward_kl" else alpha

  def slope(log_u):
    exponent = np.log(beta / a) - a * log_u
    return np.where(exponent < F_DPO_CAP, a * np.exp(np.minimum(exponent, F_DPO_CAP)), 0.0)

  def scaled_psi(log_u):
    return -np.exp(np.minimum(np.log(beta / a) - a * log_u, F_DPO_CAP))

  z = scaled_psi(lw - rw) - scaled_psi(ll - rl)
  weight = np.exp(stable_log_sigmoid(-z))  # sigma(-z)
  return [-weight * slope(lw - rw), weight * slope(ll - rl)]


def stable_orpo(lw, ll, lam=0.1):
  below_zero = -np.finfo(np.float32).tiny
  def log_odds(m):
    m = np.minimum(m, below_zero)
    return m - np.log(-np.expm1(m))
  return -lw - lam * stable_log_sigmoid(log_odds(lw) - log_odds(ll))


def stable_mapo(mse_w, mse_l, beta=0.1, snr=0.5, steps=1000):
  def g(x):  # x / (e^x - 1), 1 at x = 0
    safe = np.where(x > 0, x, 1.0)
    return np.where(x > 0, safe / np.expm1(np.minimum(safe, 700.0)) * (safe <= 700.0), 1.0)
  return mse_w - beta * stable_log_sigmoid(steps * (g(snr * mse_w) - g(snr * mse_l)))


def stable_dpo(lw, ll, rw, rl, beta=0.1, eps=0.0):
  z = beta * np_margin(lw, ll, rw, rl)
  return -(1 - eps) * stable_log_sigmoid(z) - eps * stable_log_sigmoid(-z)


def _stable_references():
  """Each loss of `_pair_losses` as a float64 function of (lw, ll, rw, rl)."""
  def kto(lw, ll, rw, rl, beta=0.1, z0=1.0):
    r = np.concatenate([lw - rw, ll - rl])
    desirable = np.arange(len(r)) < len(lw)
    return np.where(desirable, 1 - np.exp(stable_log_sigmoid(beta * (r - z0))),
                    1 - np.exp(stable_log_sigmoid(beta * (z0 - r))))
  return {
      "dpo": stable_dpo,
      "cdpo": lambda *a: stable_dpo(*a, eps=0.2),
      "robust_dpo": lambda *a: (-(0.8) * stable_log_sigmoid(0.1 * np_margin(*a))
                                + 0.2 * stable_log_sigmoid(-0.1 * np_margin(*a))) / 0.6,
      "ipo": lambda *a: (np_margin(*a) - 1 / (2 * 0.1)) ** 2,
      "f_dpo_rkl": stable_dpo,
      "f_dpo_fkl": lambda *a: stable_f_dpo(*a, "forward_kl"),
      "f_dpo_js": lambda *a: stable_f_dpo(*a, "js"),
      "f_dpo_alpha": lambda *a: stable_f_dpo(*a, "alpha"),
      "simpo": lambda lw, ll, rw, rl: -stable_log_sigmoid(2.0 * (lw - ll) - 2.0 * 0.25),
      "orpo": lambda lw, ll, rw, rl: stable_orpo(np.minimum(lw, 0), np.minimum(ll, 0)),
      "kto": kto,
      "npo": lambda lw, ll, rw, rl: -(2.0 / 0.1) * stable_log_sigmoid(0.1 * (rl - ll)),
      "mapo": lambda lw, ll, rw, rl: stable_mapo(np.abs(lw), np.abs(ll)),
  }


EXTREME_INPUTS = (  # lw, ll, rw, rl: log-ratios of +-800 nats, probability 1
    [0.0, -800.0, 0.0, -800.0, -1.0],
    [-800.0, 0.0, -800.0, 0.0, -1.0],
    [-800.0, 0.0, 0.0, -1.0, -801.0],
    [0.0, -800.0, 0.0, -1.0, 0.0],
)


def _central_differences_of(fn, args, step=1e-3):
  """d sum(fn) / d args[0] and d args[1], central differences in float64."""
  grads = []
  for which in (0, 1):
    grad = np.zeros_like(args[which])
    for i in range(len(grad)):
      up = [a.copy() for a in args]
      down = [a.copy() for a in args]
      up[which][i] += step
      down[which][i] -= step
      grad[i] = (np.sum(fn(*up)) - np.sum(fn(*down))) / (2 * step)
    grads.append(grad)
  return grads


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", sorted(_pair_losses()))
def test_values_and_gradients_at_extreme_log_ratios(name, dtype):
  fn, reference = _pair_losses()[name], _stable_references()[name]
  lw, ll, rw, rl = (jnp.array(a, dtype) for a in EXTREME_INPUTS)
  loss = lambda *a: fn(*a).astype(jnp.float32).sum()
  values = fn(lw, ll, rw, rl)
  grads = jax.grad(loss, argnums=(0, 1))(lw, ll, rw, rl)
  # The reference on the inputs as rounded to `dtype` (bf16 moves -801 to -800).
  args64 = [np.asarray(a, np.float64) for a in (lw, ll, rw, rl)]
  expected = reference(*args64)
  # Values reach exp(C) ~ 1.2e38 (f-DPO's cap): relative float32 accuracy,
  # and the cap constant itself is a float32 exponent (rounding 1e-5 relative).
  np.testing.assert_allclose(np.asarray(values, np.float64), expected, rtol=2e-5,
                             atol=1e-6, err_msg=name)
  if name in ("f_dpo_fkl", "f_dpo_alpha"):
    expected_grads = f_dpo_capped_gradients(
        *args64, "forward_kl" if name == "f_dpo_fkl" else "alpha")
  else:
    expected_grads = _central_differences_of(reference, args64)
  for grad, want, x in zip(grads, expected_grads, args64):
    assert grad.dtype == dtype
    grad = np.asarray(grad, np.float64)
    assert np.all(np.isfinite(grad)), name
    # A log-probability of exactly 0 sits on a kink of the wrappers above
    # (MaPO's |x|, ORPO's move to the largest float below 0): no derivative
    # to compare with there, only finiteness.
    smooth = np.ones(len(x), bool) if name not in ("mapo", "orpo") else x != 0
    # bf16 gradients carry 8 significant bits.
    tolerance = 1e-5 if dtype == jnp.float32 else 2.0 ** -7
    np.testing.assert_allclose(grad[smooth], want[smooth], rtol=tolerance,
                               atol=tolerance * max(1.0, np.abs(want).max()), err_msg=name)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("variant", [1, 2])
def test_token_losses_at_extreme_logits(dtype, variant):
  # Logit gaps of 800 put per-token log-ratios at about -+800 nats.
  base = np.zeros((2, 3, 4), np.float32)
  sharp = base.copy()
  sharp[..., 0] = 800.0
  tokens = np.array([[1, 1, 1], [0, 0, 0]])
  inputs = (sharp, base, base, sharp, tokens, tokens)
  args = [jnp.asarray(a, dtype) for a in (sharp, base, base, sharp)]
  ones = np.ones((2, 3))
  # function, float64 reference of (chosen, rejected) logits; 0 and 800 are
  # exact in bf16.
  cases = {
      "tdpo": (functools.partial(pref.tdpo, variant=variant),
               lambda c, r: np_tdpo((c, r) + inputs[2:], 0.1, 0.5, variant)),
      "sparse_po": (functools.partial(pref.sparse_po, chosen_kl_mask=jnp.ones((2, 3)),
                                      rejected_kl_mask=jnp.ones((2, 3))),
                    lambda c, r: np_sparse_po((c, r) + inputs[2:], (ones, ones),
                                              (ones, ones), 0.1, 0.0, 1e-3)),
  }
  for name, (fn, reference) in cases.items():
    value = fn(*args, tokens, tokens)
    grads = jax.grad(lambda a, b: fn(a, b, *args[2:], tokens, tokens).sum(),
                     argnums=(0, 1))(*args[:2])
    np.testing.assert_allclose(np.asarray(value, np.float64),
                               reference(np.float64(sharp), np.float64(base)), rtol=1e-6,
                               atol=1e-6, err_msg=name)
    for g in grads:
      assert g.dtype == dtype
      assert np.all(np.isfinite(np.asarray(g, np.float32))), name
    if name == "tdpo" and variant == 2:
      continue  # its stop-gradient: test_tdpo2_stops_the_gradient_through_chosen_seq_kl
    for which, g in enumerate(grads):
      numeric = np.zeros(sharp.shape)
      for index in np.ndindex(sharp.shape):
        up = [np.float64(sharp), np.float64(base)]
        down = [a.copy() for a in up]
        up[which][index] += 1e-3
        down[which][index] -= 1e-3
        numeric[index] = (reference(*up).sum() - reference(*down).sum()) / 2e-3
      tolerance = 1e-5 if dtype == jnp.float32 else 2.0 ** -7
      np.testing.assert_allclose(np.asarray(g, np.float64), numeric, rtol=tolerance,
                                 atol=tolerance * max(1.0, np.abs(numeric).max()),
                                 err_msg=name)


def test_bf16_inputs_are_computed_in_float32(pairs):
  bf16 = [jnp.asarray(a, jnp.bfloat16) for a in pairs]
  got = pref.dpo(*bf16)
  assert got.dtype == jnp.float32
  check_close(got, np_dpo(*[np.asarray(a, np.float64) for a in bf16], 0.1))


def test_where_excludes_pairs_holding_nan(pairs):
  lw, ll, rw, rl = (np.array(a) for a in pairs)
  mask = np.array([True, False, True, True, False])
  lw[~mask] = np.nan
  ll[~mask] = -np.inf
  clean = [np.asarray(a)[mask] for a in (lw, ll, rw, rl)]
  for name, fn, reference in [
      ("dpo", pref.dpo, np_dpo(*clean, 0.1)), ("ipo", pref.ipo, np_ipo(*clean, 0.1)),
      ("f_dpo", functools.partial(pref.f_dpo, divergence="forward_kl"),
       np_f_dpo(*clean, 0.1, "forward_kl"))]:
    values = fn(lw, ll, rw, rl, where=mask)
    assert np.all(np.asarray(values)[~mask] == 0), name
    check_close(np.asarray(values)[mask], reference)
    grad = jax.grad(lambda x: fn(x, ll, rw, rl, where=mask, reduction="sum"))(lw)
    assert np.all(np.asarray(grad)[~mask] == 0) and np.all(np.isfinite(grad)), name
    mean = fn(lw, ll, rw, rl, where=mask, reduction="mean")
    np.testing.assert_allclose(mean, np.mean(reference), rtol=1e-6)


def test_reference_inputs_get_no_gradient(pairs, token_inputs):
  lw, ll, rw, rl = pairs
  g = jax.grad(lambda r: pref.dpo(lw, ll, r, rl, reduction="sum"))(rw)
  np.testing.assert_array_equal(np.asarray(g), 0.0)
  cw, cl, rcw, rcl, tw, tl = token_inputs
  g = jax.grad(lambda r: pref.tdpo(cw, cl, r, rcl, tw, tl, reduction="sum"))(rcw)
  np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_reductions_and_vmap(pairs):
  got = pref.dpo(*pairs, reduction="mean")
  np.testing.assert_allclose(got, np.mean(np_dpo(*pairs, 0.1)), rtol=1e-6)
  batched = jax.vmap(lambda *a: pref.dpo(*a))(*[a[:, None] for a in pairs])
  np.testing.assert_allclose(batched[:, 0], pref.dpo(*pairs), rtol=1e-7)


# ----------------------------------------------------------------------------
# Bad inputs.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("call,argument", [
    (lambda p: pref.dpo(*p, beta=0.0), "beta"),
    (lambda p: pref.dpo(*p, label_smoothing=0.6), "label_smoothing"),
    (lambda p: pref.robust_dpo(*p, epsilon=0.5), "epsilon"),
    (lambda p: pref.f_dpo(*p, divergence="hellinger"), "divergence"),
    (lambda p: pref.f_dpo(*p, divergence="alpha", alpha=1.0), "alpha"),
    (lambda p: pref.ipo(p[0], p[1][:3], p[2], p[3]), "rejected_logp"),
    (lambda p: pref.dpo(*p, where=np.ones(3, bool)), "where"),
    (lambda p: pref.simpo(p[0], p[1], gamma_beta_ratio=-1.0), "gamma_beta_ratio"),
    (lambda p: pref.orpo(p[0], p[1], odds_ratio_weight=-0.1), "odds_ratio_weight"),
    (lambda p: pref.kto(p[0], p[2], np.ones(BATCH)), "desirable"),
    (lambda p: pref.kto(p[0], p[2], np.ones(BATCH, bool)), "reference_point"),
    (lambda p: pref.mapo(p[0], p[1], snr=0.0), "snr"),
    (lambda p: pref.dpo(np.arange(BATCH), *p[1:]), "chosen_logp"),
])
def test_bad_sequence_inputs_name_the_argument(pairs, call, argument):
  with pytest.raises(ValueError, match=argument):
    call(pairs)


@pytest.mark.parametrize("call,argument", [
    (lambda t: pref.tdpo(*t, variant=3), "variant"),
    (lambda t: pref.tdpo(t[0], t[1], t[2][:, :2], *t[3:]), "ref_chosen_logits"),
    (lambda t: pref.tdpo(*t[:4], t[4].astype(np.float32), t[5]), "chosen_tokens"),
    (lambda t: pref.tdpo(*t[:4], t[4][:, :2], t[5]), "chosen_tokens"),
    (lambda t: pref.tdpo(t[0][:3], t[1], t[2][:3], t[3], t[4][:3], t[5]), "broadcast"),
    (lambda t: pref.tdpo(*t, chosen_where=np.ones((BATCH, 2), bool)), "chosen_where"),
    (lambda t: pref.sparse_po(*t, chosen_reward_mask=np.ones((BATCH, LENGTH))),
     "rejected_reward_mask"),
    (lambda t: pref.sparse_po(*t, chosen_kl_mask=np.ones((BATCH, 2)),
                              rejected_kl_mask=np.ones((BATCH, 2))), "chosen_kl_mask"),
    (lambda t: pref.sparse_po(*t, kl_l1=-1.0), "kl_l1"),
])
def test_bad_token_inputs_name_the_argument(token_inputs, call, argument):
  with pytest.raises(ValueError, match=argument):
    call(token_inputs)
