"""Categorical divergences against float64 numpy/scipy references.

Values are compared with sums written out in float64 (scipy's rel_entr,
entropy, log_softmax and jensenshannon where they apply); gradients with
central finite differences of those float64 references, with the closed forms
of the softmax chain rule, and with `jax.test_util.check_grads`.

Compilation dominates the run time, so all cases are evaluated by one jitted
bundle per input signature, and fixtures share shapes.
"""
import doctest
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax import test_util as jtu

from divlab.divergences import categorical as dv
from divlab.divergences import generators

RNG = np.random.default_rng(0)
SHAPE = (3, 6)
P_LOGITS = (2.0 * RNG.normal(size=SHAPE)).astype(np.float32)
Q_LOGITS = (2.0 * RNG.normal(size=SHAPE)).astype(np.float32)
LOG2 = np.log(2.0)


# ----------------------------------------------------------------------------
# float64 references on probabilities (rows are distributions).


def softmax64(logits, axis=-1):
  x = np.asarray(logits, np.float64)
  top = np.max(x, axis=axis, keepdims=True)
  top = np.where(np.isfinite(top), top, 0.0)
  weights = np.exp(x - top)
  total = weights.sum(axis=axis, keepdims=True)
  return weights / np.where(total > 0, total, 1.0)


def ref_kl(p, q):
  return scipy.special.rel_entr(p, q).sum(-1)


def ref_entropy(p):
  return scipy.stats.entropy(p, axis=-1)


def ref_cross_entropy(p, q):
  safe_q = np.where(p > 0, q, 1.0)
  with np.errstate(divide="ignore"):
    return -np.sum(np.where(p > 0, p * np.log(safe_q), 0.0), -1)


def ref_js(p, q, beta=0.5):
  m = beta * p + (1 - beta) * q
  return beta * ref_kl(p, m) + (1 - beta) * ref_kl(q, m)


def ref_power_sum(p, q, a):
  """sum p^a q^(1-a) over the union of supports, with 0^negative = inf."""
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = np.power(p, a) * np.power(q, 1 - a)
  return np.where((p > 0) | (q > 0), terms, 0.0).sum(-1)


def ref_alpha(p, q, a):
  return (1.0 - ref_power_sum(p, q, a)) / (a * (1.0 - a))


def ref_renyi(p, q, a):
  with np.errstate(divide="ignore"):
    return np.log(ref_power_sum(p, q, a)) / (a - 1.0)


def ref_tv(p, q):
  return 0.5 * np.abs(p - q).sum(-1)


def ref_hellinger(p, q):
  return np.square(np.sqrt(p) - np.sqrt(q)).sum(-1)


def ref_chi2(p, q):
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = np.square(p - q) / q
  return np.where((p > 0) | (q > 0), terms, 0.0).sum(-1)


# name -> (function of (p_logits, q_logits, where=...), reference of (P, Q)).
CASES = {
    "kl": (dv.kl, ref_kl),
    "reverse_kl": (dv.reverse_kl, lambda p, q: ref_kl(q, p)),
    "cross_entropy": (dv.cross_entropy, ref_cross_entropy),
    "js": (dv.js, ref_js),
    "js_beta0.3": (functools.partial(dv.js, beta=0.3),
                   functools.partial(ref_js, beta=0.3)),
    "alpha0.3": (functools.partial(dv.alpha_divergence, alpha=0.3),
                 functools.partial(ref_alpha, a=0.3)),
    "alpha0.8": (functools.partial(dv.alpha_divergence, alpha=0.8),
                 functools.partial(ref_alpha, a=0.8)),
    "alpha2.5": (functools.partial(dv.alpha_divergence, alpha=2.5),
                 functools.partial(ref_alpha, a=2.5)),
    "alpha-1.5": (functools.partial(dv.alpha_divergence, alpha=-1.5),
                  functools.partial(ref_alpha, a=-1.5)),
    "renyi0.3": (functools.partial(dv.renyi, alpha=0.3),
                 functools.partial(ref_renyi, a=0.3)),
    "renyi1.5": (functools.partial(dv.renyi, alpha=1.5),
                 functools.partial(ref_renyi, a=1.5)),
    "renyi4": (functools.partial(dv.renyi, alpha=4.0),
               functools.partial(ref_renyi, a=4.0)),
    "total_variation": (dv.total_variation, ref_tv),
    "squared_hellinger": (dv.squared_hellinger, ref_hellinger),
    "chi_squared": (dv.chi_squared, ref_chi2),
    "f_pearson": (functools.partial(dv.f_divergence, f=generators.pearson()),
                  ref_chi2),
}
NAMES = sorted(CASES)
# Finite even where P has mass and Q has none.
STAY_FINITE = ["js", "js_beta0.3", "total_variation", "squared_hellinger",
               "alpha0.3", "alpha0.8", "renyi0.3"]
BECOME_INFINITE = ["kl", "cross_entropy", "chi_squared", "f_pearson", "alpha2.5",
                   "renyi1.5", "renyi4"]


@jax.jit
def all_values(p, q, where=None):
  return {name: fn(p, q, where=where) for name, (fn, _) in CASES.items()}


@jax.jit
def all_grads(p, q, where=None):
  def grads(fn):
    return jax.grad(lambda a, b: jnp.sum(fn(a, b, where=where)), argnums=(0, 1))(p, q)
  return {name: grads(fn) for name, (fn, _) in CASES.items()}


def references(p_logits, q_logits):
  p, q = softmax64(p_logits), softmax64(q_logits)
  return {name: ref(p, q) for name, (_, ref) in CASES.items()}


def close(actual, expected, rtol=2e-5, atol=2e-6, name=""):
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected,
                             rtol=rtol, atol=atol, err_msg=name)


VALUES = all_values(P_LOGITS, Q_LOGITS)
GRADS = all_grads(P_LOGITS, Q_LOGITS)


# ----------------------------------------------------------------------------
# Values.


@pytest.mark.parametrize("name", NAMES)
def test_matches_float64_reference(name):
  value = VALUES[name]
  assert value.shape == (3,) and value.dtype == jnp.float32
  close(value, references(P_LOGITS, Q_LOGITS)[name])


def test_entropy_and_log_softmax_match_scipy():
  close(jax.jit(dv.entropy)(P_LOGITS), ref_entropy(softmax64(P_LOGITS)))
  close(jax.jit(dv.masked_log_softmax)(P_LOGITS),
        scipy.special.log_softmax(P_LOGITS.astype(np.float64), axis=-1))


def test_js_matches_scipy_jensenshannon():
  # scipy returns the square root of the (natural-log, beta = 1/2) JS divergence.
  expected = scipy.spatial.distance.jensenshannon(
      softmax64(P_LOGITS), softmax64(Q_LOGITS), axis=-1) ** 2
  close(VALUES["js"], expected)


def test_hand_computed_values():
  # P = (1/2, 1/2), Q = (1/4, 3/4).
  p = np.zeros((3, 6), np.float32)
  p[:, 2:] = -np.inf
  q = p.copy()
  q[:, 1] = np.log(3.0)
  values = all_values(p, q)
  close(values["kl"], np.full(3, 0.5 * np.log(2.0) + 0.5 * np.log(2.0 / 3.0)))
  close(values["reverse_kl"], np.full(3, 0.25 * np.log(0.5) + 0.75 * np.log(1.5)))
  close(values["total_variation"], np.full(3, 0.25))
  close(values["chi_squared"], np.full(3, 0.25 ** 2 / 0.25 + 0.25 ** 2 / 0.75))
  close(values["squared_hellinger"],
        np.full(3, (np.sqrt(0.5) - 0.5) ** 2 + (np.sqrt(0.5) - np.sqrt(0.75)) ** 2))


def test_float64_stays_float64():
  with jax.enable_x64(True):
    p, q = P_LOGITS.astype(np.float64), Q_LOGITS.astype(np.float64)
    values = jax.jit(lambda a, b: {name: CASES[name][0](a, b) for name in
                                   ["kl", "js", "alpha0.8", "renyi1.5", "chi_squared"]})(p, q)
    expected = references(p, q)
    for name, value in values.items():
      assert value.dtype == jnp.float64
      close(value, expected[name], rtol=1e-12, atol=1e-14, name=name)


def test_identical_inputs_give_zero():
  values = all_values(P_LOGITS, P_LOGITS)
  for name in NAMES:
    if name != "cross_entropy":
      np.testing.assert_allclose(values[name], 0.0, atol=1e-6, err_msg=name)


def test_infinite_only_where_the_divergence_is():
  p = np.tile(P_LOGITS[:1], (3, 1))
  q = Q_LOGITS.copy()
  q[:, 1] = -np.inf  # Q has no mass where P has some.
  values, expected = all_values(p, q), references(p, q)
  for name in BECOME_INFINITE:
    assert np.isposinf(values[name]).all(), name
  for name in STAY_FINITE:
    close(values[name], expected[name], name=name)


def test_disjoint_supports_hit_the_bounds():
  p = np.full(SHAPE, -np.inf, np.float32)
  q = p.copy()
  p[:, :3] = P_LOGITS[:, :3]
  q[:, 3:] = Q_LOGITS[:, 3:]
  values = all_values(p, q)
  close(values["js"], np.full(3, LOG2))
  close(values["total_variation"], np.ones(3))
  close(values["squared_hellinger"], np.full(3, 2.0))


# ----------------------------------------------------------------------------
# alpha and Renyi limits.

ALPHA = jax.jit(dv.alpha_divergence)
RENYI = jax.jit(dv.renyi)
P64, Q64 = softmax64(P_LOGITS), softmax64(Q_LOGITS)


@pytest.mark.parametrize("alpha", [1e-5, 1e-3, 0.2, 0.5, 0.9, 1 - 1e-3, 1 - 1e-5,
                                   1 + 1e-4, 1.6, 3.0, -0.4])
def test_alpha_and_renyi_near_and_away_from_the_limits(alpha):
  # alpha is traced here (a jit argument), so the branch is a lax.cond; the
  # float64 reference is accurate to ~1e-16 / (alpha (1 - alpha)).
  close(ALPHA(P_LOGITS, Q_LOGITS, alpha), ref_alpha(P64, Q64, alpha), rtol=1e-4)
  if alpha > 0:
    close(RENYI(P_LOGITS, Q_LOGITS, alpha), ref_renyi(P64, Q64, alpha), rtol=1e-4)


def test_alpha_limits_are_kl():
  close(dv.alpha_divergence(P_LOGITS, Q_LOGITS, 1.0), ref_kl(P64, Q64))
  close(dv.alpha_divergence(P_LOGITS, Q_LOGITS, 0.0), ref_kl(Q64, P64))
  close(ALPHA(P_LOGITS, Q_LOGITS, 1.0), ref_kl(P64, Q64))
  close(ALPHA(P_LOGITS, Q_LOGITS, 0.0), ref_kl(Q64, P64))
  close(RENYI(P_LOGITS, Q_LOGITS, 1.0), ref_kl(P64, Q64))
  close(dv.renyi(P_LOGITS, Q_LOGITS, 1.0), ref_kl(P64, Q64))
  # alpha = 1/2 is 4 (1 - Bhattacharyya coefficient) = 2 x squared Hellinger.
  close(ALPHA(P_LOGITS, Q_LOGITS, 0.5), 2 * ref_hellinger(P64, Q64))


def test_vmap_over_alpha_crosses_every_branch():
  alphas = np.array([-0.5, 0.0, 0.3, 0.5, 1.0, 2.0])
  values = jax.jit(jax.vmap(lambda a: dv.alpha_divergence(P_LOGITS, Q_LOGITS, a)))(alphas)
  expected = [ref_kl(Q64, P64) if a == 0 else ref_kl(P64, Q64) if a == 1 else
              ref_alpha(P64, Q64, a) for a in alphas]
  close(values, np.stack(expected), rtol=1e-4)
  orders = np.array([0.2, 1.0, 1.7, 3.0])
  values = jax.jit(jax.vmap(lambda a: dv.renyi(P_LOGITS, Q_LOGITS, a)))(orders)
  expected = [ref_kl(P64, Q64) if a == 1 else ref_renyi(P64, Q64, a) for a in orders]
  close(values, np.stack(expected), rtol=1e-4)


def test_renyi_is_nondecreasing_in_alpha():
  orders = [0.2, 0.5, 0.9, 1.0, 1.3, 2.0, 5.0]
  values = np.stack([np.asarray(RENYI(P_LOGITS, Q_LOGITS, a)) for a in orders])
  assert np.all(np.diff(values, axis=0) >= -1e-6)


# ----------------------------------------------------------------------------
# Masks, -inf logits, axis.

COLUMNS_KEPT = np.array([0, 2, 3, 5])
ROW_MASK = np.array([[1, 1, 0, 1, 1, 1], [0, 1, 1, 1, 0, 1], [1, 0, 1, 1, 1, 0]], bool)
MASKED_VALUES = all_values(P_LOGITS, Q_LOGITS, ROW_MASK)
MASKED_GRADS = all_grads(P_LOGITS, Q_LOGITS, ROW_MASK)


def test_masked_equals_sliced():
  mask = np.broadcast_to(np.isin(np.arange(6), COLUMNS_KEPT), SHAPE)
  masked = all_values(P_LOGITS, Q_LOGITS, mask)
  sliced = all_values(P_LOGITS[:, COLUMNS_KEPT], Q_LOGITS[:, COLUMNS_KEPT])
  for name in NAMES:
    np.testing.assert_allclose(masked[name], sliced[name], rtol=1e-6, atol=1e-7,
                               err_msg=name)


def test_where_equals_minus_inf_logits():
  p_inf = np.where(ROW_MASK, P_LOGITS, -np.inf).astype(np.float32)
  q_inf = np.where(ROW_MASK, Q_LOGITS, -np.inf).astype(np.float32)
  inf_values, inf_grads = all_values(p_inf, q_inf), all_grads(p_inf, q_inf)
  expected = references(p_inf, q_inf)
  for name in NAMES:
    np.testing.assert_allclose(MASKED_VALUES[name], inf_values[name], rtol=1e-6,
                               atol=1e-7, err_msg=name)
    close(MASKED_VALUES[name], expected[name], name=name)
    for masked_grad, inf_grad in zip(MASKED_GRADS[name], inf_grads[name]):
      np.testing.assert_allclose(masked_grad, inf_grad, rtol=1e-5, atol=1e-7,
                                 err_msg=name)


def test_gradients_are_finite_and_zero_at_excluded_entries():
  for name in NAMES:
    for grad in MASKED_GRADS[name]:
      assert np.all(np.isfinite(grad)), name
      np.testing.assert_array_equal(np.asarray(grad)[~ROW_MASK], 0.0, err_msg=name)


def test_fully_masked_row_is_zero_with_zero_gradient():
  mask = np.ones(SHAPE, bool)
  mask[1] = False
  values, grads = all_values(P_LOGITS, Q_LOGITS, mask), all_grads(P_LOGITS, Q_LOGITS, mask)
  for name in NAMES:
    assert float(values[name][1]) == 0.0, name
    for grad in grads[name]:
      assert np.all(np.isfinite(grad)), name
      np.testing.assert_array_equal(np.asarray(grad)[1], 0.0, err_msg=name)


def test_axis_is_moveaxis_equivalent():
  p3 = RNG.normal(size=(2, 6, 3)).astype(np.float32)
  q3 = RNG.normal(size=(2, 6, 3)).astype(np.float32)
  subset = ["kl", "js", "alpha0.3", "f_pearson"]
  bundle = jax.jit(lambda a, b, axis: {name: CASES[name][0](a, b, axis=axis)
                                       for name in subset},
                   static_argnames="axis")
  along_1 = bundle(p3, q3, axis=1)
  moved = bundle(np.moveaxis(p3, 1, -1), np.moveaxis(q3, 1, -1), axis=-1)
  for name in subset:
    assert along_1[name].shape == (2, 3)
    np.testing.assert_allclose(along_1[name], moved[name], rtol=1e-6, atol=1e-7,
                               err_msg=name)
  np.testing.assert_allclose(dv.entropy(p3, axis=1),
                             dv.entropy(np.moveaxis(p3, 1, -1)), rtol=1e-6)


def test_mask_broadcasts_and_may_be_integer():
  columns = np.isin(np.arange(6), COLUMNS_KEPT)
  kl = jax.jit(dv.kl)
  full = kl(P_LOGITS, Q_LOGITS, where=np.broadcast_to(columns, SHAPE))
  # Three programs: on a GPU each may sum in its own order, and KL is a
  # difference of O(1) terms (1.2e-7 apart on an H200).
  np.testing.assert_allclose(kl(P_LOGITS, Q_LOGITS, where=columns), full, rtol=1e-6,
                             atol=3e-7)
  np.testing.assert_allclose(kl(P_LOGITS, Q_LOGITS, where=columns.astype(np.int32)),
                             full, rtol=1e-6, atol=3e-7)


# ----------------------------------------------------------------------------
# Extreme inputs.


def test_logits_of_magnitude_1e4():
  # Rows sit at +-1e4 with gaps up to 80 inside a row (exact in float32, and
  # every probability is representable, so the plain float64 reference holds).
  # Gaps are also chosen so that p^2.5 q^-1.5 and p^-1.5 q^2.5 fit in float32.
  offsets_p = np.array([0.0, -1.5, -3.0, -20.0, -40.0, -80.0])
  offsets_q = np.array([-2.0, 0.0, -25.0, -4.5, -1.0, -30.0])
  p = np.stack([1e4 + offsets_p, -1e4 + offsets_p, 1e4 + offsets_p]).astype(np.float32)
  q = np.stack([1e4 + offsets_q, 1e4 + offsets_q, 1e4 + offsets_p]).astype(np.float32)
  values, grads, expected = all_values(p, q), all_grads(p, q), references(p, q)
  for name in NAMES:
    close(values[name], expected[name], rtol=1e-5, atol=1e-6, name=name)
    # Shifting a row's logits changes nothing, so the float64 differences of
    # the reference hold at 1e4 as at 0.
    fd_grads = _finite_difference_grads(CASES[name][1], p, q)
    for grad, reference in zip(grads[name], fd_grads):
      close(grad, reference, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(reference).max()),
            name=name)


def test_gaps_of_2e4_inside_a_row():
  # exp(-2e4) underflows even in float64: compare with log-space references.
  p = np.tile(np.array([1e4, -1e4, 0.0, 9999.0, -5000.0, 9990.0], np.float32), (3, 1))
  q = np.tile(np.array([9999.0, 1e4, -1e4, 0.0, 9995.0, -9000.0], np.float32), (3, 1))
  log_p = scipy.special.log_softmax(p.astype(np.float64), axis=-1)
  log_q = scipy.special.log_softmax(q.astype(np.float64), axis=-1)
  prob_p, prob_q = np.exp(log_p), np.exp(log_q)
  kl = np.sum(np.where(prob_p > 0, prob_p * (log_p - log_q), 0.0), -1)
  reverse = np.sum(np.where(prob_q > 0, prob_q * (log_q - log_p), 0.0), -1)
  values, grads = all_values(p, q), all_grads(p, q)
  close(values["kl"], kl, rtol=1e-6)
  close(values["reverse_kl"], reverse, rtol=1e-6)
  close(values["cross_entropy"],
        -np.sum(np.where(prob_p > 0, prob_p * log_q, 0.0), -1), rtol=1e-6)
  for name in ["js", "js_beta0.3", "total_variation", "squared_hellinger"]:
    close(values[name], CASES[name][1](prob_p, prob_q), name=name)
  # Log-space forms where a probability underflows in float64 but its term
  # does not (p log q at p = e^-10, q = e^-19000; p^a q^(1-a) likewise).
  def log_space(name):
    def total(a, b):
      lp = scipy.special.log_softmax(a, axis=-1)
      lq = scipy.special.log_softmax(b, axis=-1)
      if name.startswith("renyi"):
        order = float(name[len("renyi"):])
        return np.sum(scipy.special.logsumexp(order * lp + (1 - order) * lq, axis=-1)
                      / (order - 1))
      if name == "reverse_kl":
        lp, lq = lq, lp
      return np.sum(np.exp(lp) * ((lp - lq) if name != "cross_entropy" else -lq))
    return total
  for name in NAMES:
    assert not np.any(np.isnan(values[name])), name
    if not np.all(np.isfinite(values[name])):
      continue  # e^(1e4)-sized sums (chi^2, alpha > 1): infinite in float64 too
    if name in ("kl", "reverse_kl", "cross_entropy") or name.startswith("renyi"):
      total = log_space(name)
      close(values[name], total(np.float64(p[:1]), np.float64(q[:1])), rtol=1e-6, name=name)
      fd_grads = _finite_difference_grads(None, p, q, total=total)
    else:
      # softmax64 subtracts the row maximum, so its float64 differences hold
      # here; an underflowed probability stays 0 under a 1e-6 step.
      fd_grads = _finite_difference_grads(CASES[name][1], p, q)
    for grad, reference in zip(grads[name], fd_grads):
      close(grad, reference, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(reference).max()),
            name=name)


@pytest.mark.parametrize("alpha", [0.7, 1.0001, 1.5, 2.0])
def test_renyi_near_one_with_large_log_ratios(alpha):
  # One log-ratio of 200 nats: the divergence is large but finite, although
  # the near-one expansion's sum p_i (q_i/p_i)^(1-a) overflows float32 for a > 1.
  p = np.array([0.0, 0.0, 1.0], np.float32)
  q = np.array([0.0, -200.0, 1.0], np.float32)

  def total(a, b):
    lp = scipy.special.log_softmax(a)
    lq = scipy.special.log_softmax(b)
    return scipy.special.logsumexp(alpha * lp + (1 - alpha) * lq) / (alpha - 1)

  close(RENYI(p, q, alpha), total(np.float64(p), np.float64(q)), rtol=1e-5)
  grads = jax.grad(lambda x, y: RENYI(x, y, alpha), argnums=(0, 1))(p, q)
  for grad, reference in zip(grads, _finite_difference_grads(None, p, q, total=total)):
    close(grad, reference, rtol=1e-4, atol=1e-6 * max(1.0, np.abs(reference).max()))


LOW_PRECISION = ["kl", "cross_entropy", "js", "alpha0.8", "renyi4", "total_variation",
                 "chi_squared", "f_pearson"]


def test_low_precision_inputs_compute_in_float32():
  p, q = jnp.asarray(P_LOGITS, jnp.bfloat16), jnp.asarray(Q_LOGITS, jnp.bfloat16)

  @jax.jit
  def values_and_grads(a, b):
    def one(fn):
      return jax.value_and_grad(lambda x, y: jnp.sum(fn(x, y)), argnums=(0, 1))(a, b)
    return {name: (CASES[name][0](a, b), one(CASES[name][0])[1])
            for name in LOW_PRECISION}

  expected = references(np.asarray(p, np.float64), np.asarray(q, np.float64))
  p64, q64 = np.asarray(p, np.float64), np.asarray(q, np.float64)
  for name, (value, grads) in values_and_grads(p, q).items():
    assert value.dtype == jnp.float32, name
    close(value, expected[name], rtol=1e-5, atol=2e-6, name=name)
    # The float64 gradient at the rounded inputs, rounded once more to bf16
    # (8 significant bits), relative to each gradient's scale.
    for grad, reference in zip(grads, _finite_difference_grads(CASES[name][1], p64, q64)):
      assert grad.dtype == jnp.bfloat16, name
      close(grad, reference, rtol=2.0 ** -7, atol=2.0 ** -8 * np.abs(reference).max(),
            name=name)
  half = jnp.asarray(P_LOGITS, jnp.float16)
  assert dv.entropy(half).dtype == jnp.float32
  close(dv.kl(half, half * 0), ref_kl(softmax64(np.asarray(half, np.float64)),
                                      np.full(SHAPE, 1 / 6)))


# ----------------------------------------------------------------------------
# Gradients.


def _finite_difference_grads(ref, p_logits, q_logits, step=1e-6, total=None):
  """Central differences of sum(ref(softmax(p), softmax(q))) in float64 (or of
  `total(p_logits, q_logits)` when given)."""
  if total is None:
    def total(p, q):
      return np.sum(ref(softmax64(p), softmax64(q)))
  grads = []
  for which in range(2):
    base = [np.asarray(p_logits, np.float64), np.asarray(q_logits, np.float64)]
    grad = np.zeros_like(base[which])
    for index in np.ndindex(grad.shape):
      up = [x.copy() for x in base]
      down = [x.copy() for x in base]
      up[which][index] += step
      down[which][index] -= step
      grad[index] = (total(*up) - total(*down)) / (2 * step)
    grads.append(grad)
  return grads


@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_finite_differences_of_the_reference(name):
  expected = _finite_difference_grads(CASES[name][1], P_LOGITS, Q_LOGITS)
  for grad, reference in zip(GRADS[name], expected):
    close(grad, reference, rtol=1e-4, atol=1e-5, name=name)


def test_kl_js_entropy_gradients_match_closed_forms():
  log_ratio = np.log(P64) - np.log(Q64)
  grad_p, grad_q = GRADS["kl"]
  close(grad_p, P64 * (log_ratio - ref_kl(P64, Q64)[:, None]), atol=1e-6)
  close(grad_q, Q64 - P64, atol=1e-6)
  beta = 0.3
  m = beta * P64 + (1 - beta) * Q64
  grad_p, grad_q = GRADS["js_beta0.3"]
  close(grad_p, beta * P64 * (np.log(P64 / m) - ref_kl(P64, m)[:, None]), atol=1e-6)
  close(grad_q, (1 - beta) * Q64 * (np.log(Q64 / m) - ref_kl(Q64, m)[:, None]),
        atol=1e-6)
  grad_h = jax.jit(jax.grad(lambda x: jnp.sum(dv.entropy(x))))(P_LOGITS)
  close(grad_h, -P64 * (np.log(P64) + ref_entropy(P64)[:, None]), atol=1e-6)


def test_js_gradient_in_beta_matches_finite_difference():
  step = 1e-6
  expected = (ref_js(P64, Q64, 0.3 + step) - ref_js(P64, Q64, 0.3 - step)).sum() / (2 * step)
  grad = jax.jit(jax.grad(lambda b: jnp.sum(dv.js(P_LOGITS, Q_LOGITS, beta=b))))(0.3)
  close(grad, expected, rtol=1e-4)


@pytest.mark.parametrize("name,order", [
    ("kl", 2), ("js_beta0.3", 2), ("cross_entropy", 1), ("alpha-1.5", 1),
    ("alpha0.8", 1), ("renyi0.3", 1), ("renyi1.5", 1), ("chi_squared", 1),
    ("f_pearson", 1)])
def test_check_grads_reverse_mode(name, order):
  fn = CASES[name][0]
  with jax.enable_x64(True):
    p = P_LOGITS[:2, :4].astype(np.float64)
    q = Q_LOGITS[:2, :4].astype(np.float64)
    jtu.check_grads(jax.jit(lambda a, b: fn(a, b)), (p, q), order=order,
                    modes=["rev"], atol=1e-5, rtol=1e-5)


def test_hessian_of_kl_is_the_fisher_metric():
  # d^2 KL(P || Q) / d q_logits^2 = diag(q) - q q^T (forward-over-reverse).
  hessian = jax.jit(jax.hessian(lambda b: dv.kl(P_LOGITS[0], b)))(Q_LOGITS[0])
  close(hessian, np.diag(Q64[0]) - np.outer(Q64[0], Q64[0]), atol=1e-6)


def test_vmap_matches_batched_call():
  vmapped = jax.jit(jax.vmap(lambda a, b: {name: CASES[name][0](a, b)
                                           for name in ["kl", "js", "renyi1.5"]}))
  values = vmapped(P_LOGITS, Q_LOGITS)
  for name, value in values.items():
    np.testing.assert_allclose(value, VALUES[name], rtol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------
# Properties (hypothesis), on the shared signature (no recompilation).

LOGITS = hnp.arrays(np.float32, SHAPE,
                    elements=st.floats(-30, 30, width=32, allow_nan=False))
MASKS = hnp.arrays(np.bool_, SHAPE)


# derandomize: the same 30 examples on every run, so a CI run cannot turn red
# on an example no earlier run has seen.
@settings(max_examples=30, deadline=None, derandomize=True)
@given(p=LOGITS, q=LOGITS, mask=MASKS)
def test_properties(p, q, mask):
  values = {k: np.asarray(v) for k, v in all_values(p, q, mask).items()}
  swapped = all_values(q, p, mask)
  for name, value in values.items():
    assert not np.any(np.isnan(value)), name
    if name != "cross_entropy":
      assert np.all(value >= -1e-5), (name, value)
  for name in ["js", "total_variation", "squared_hellinger"]:
    np.testing.assert_allclose(values[name], swapped[name], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(values["kl"], swapped["reverse_kl"], rtol=1e-6)
  assert np.all(values["js"] <= LOG2 + 1e-6)
  assert np.all(values["js_beta0.3"] <= -(0.3 * np.log(0.3) + 0.7 * np.log(0.7)) + 1e-6)
  assert np.all(values["total_variation"] <= 1 + 1e-6)
  assert np.all(values["squared_hellinger"] <= 2 + 1e-6)
  # Pinsker: TV <= sqrt(KL / 2), with KL in float64: for nearly equal rows
  # the float32 KL is a cancellation of log-normalisers near 30 and can round
  # to 0 while TV is 1e-5 (found by this test), so TV is checked against the
  # exact KL. Le Cam: H^2 / 2 <= TV.
  masked = lambda x: np.where(mask, np.asarray(x, np.float64), -np.inf)
  kl64 = ref_kl(softmax64(masked(p)), softmax64(masked(q)))
  assert np.all(values["total_variation"] <= np.sqrt(kl64 / 2) + 1e-5)
  assert np.all(values["squared_hellinger"] / 2 <= values["total_variation"] + 1e-5)


# ----------------------------------------------------------------------------
# Argument errors and documentation.


def test_value_errors_name_the_argument():
  p, q = P_LOGITS, Q_LOGITS
  cases = [
      (lambda: dv.kl(p, q[:, :5]), "q_logits"),
      (lambda: dv.js(p, q, beta=1.5), "beta"),
      (lambda: dv.js(p, q, beta=-0.1), "beta"),
      (lambda: dv.js(p, q, beta=jnp.full(3, 0.5)), "beta"),
      (lambda: dv.alpha_divergence(p, q, np.inf), "alpha"),
      (lambda: dv.alpha_divergence(p, q, jnp.ones(2)), "alpha"),
      (lambda: dv.renyi(p, q, 0.0), "alpha"),
      (lambda: dv.renyi(p, q, -2.0), "alpha"),
      (lambda: dv.kl(p, q, where=np.ones((3, 5), bool)), "where"),
      (lambda: dv.kl(p, q, axis=2), "axis"),
      (lambda: dv.entropy(np.float32(1.0)), "logits"),
      (lambda: dv.total_variation(p.astype(np.complex64), q), "p_logits"),
      (lambda: dv.f_divergence(p, q, lambda u: u * jnp.log(u)), "f"),
  ]
  for call, name in cases:
    with pytest.raises(ValueError, match=f"`{name}`"):
      call()
  with pytest.raises(ValueError, match="`beta`"):
    jax.jit(lambda a, b: dv.js(a, b, beta=2.0))(p, q)


def test_public_functions_are_exported_and_documented():
  for name in dv.__all__:
    doc = getattr(dv, name).__doc__
    assert doc and "Args:" in doc and "Returns:" in doc and "Example:" in doc, name


def test_docstring_examples_run():
  result = doctest.testmod(dv, extraglobs={"jnp": jnp}, verbose=False)
  assert result.attempted >= len(dv.__all__) and result.failed == 0


def test_hessian_of_kl_in_p_with_masked_entries_is_finite_and_correct():
  # d^2 KL(P || Q) / d p_logits^2 restricted to the included entries equals the
  # Hessian of sum_i p_i (log p_i - log q_i) over those entries alone; the
  # excluded entry has zero rows and columns (no NaN from the where-trap).
  p_logits = np.array([0.1, 0.5, 2.0, -0.7])
  q_logits = np.array([0.3, -0.2, 1.0, 0.4])
  keep = np.array([True, True, False, True])
  hessian = jax.jit(jax.hessian(lambda a: dv.kl(a, q_logits, where=keep)))(p_logits)
  idx = np.flatnonzero(keep)
  log_q = scipy.special.log_softmax(q_logits[idx])

  def kl_gradient(a):
    # dKL/da_j = p_j (log p_j - log q_j - KL) over the kept entries.
    log_p = scipy.special.log_softmax(a)
    ratio = log_p - log_q
    p = np.exp(log_p)
    return p * (ratio - np.sum(p * ratio))

  # The Hessian: central differences of that closed-form gradient, in float64.
  step = 1e-6
  expected = np.stack([
      (kl_gradient(p_logits[idx] + step * e) - kl_gradient(p_logits[idx] - step * e))
      / (2 * step) for e in np.eye(len(idx))], axis=1)
  full = np.zeros((4, 4))
  full[np.ix_(idx, idx)] = expected
  assert np.all(np.isfinite(np.asarray(hessian)))
  close(hessian, full, atol=1e-6)
