"""Csiszar generators and f_divergence against float64 numpy references.

Each generator's f is written out again here in numpy; D_f is summed directly
in float64 with the conventions 0 f(0/0) = 0, q f(0) for p = 0 and
p lim f(u)/u for q = 0; conjugates are checked against a brute-force supremum
over a fine grid of u.
"""
import doctest
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special
from jax import test_util as jtu

from divlab.divergences import categorical as dv
from divlab.divergences import generators as gen

RNG = np.random.default_rng(1)
SHAPE = (3, 5)
P_LOGITS = (1.5 * RNG.normal(size=SHAPE)).astype(np.float32)
Q_LOGITS = (1.5 * RNG.normal(size=SHAPE)).astype(np.float32)
INF = math.inf


def softmax64(logits):
  return scipy.special.softmax(np.asarray(logits, np.float64), axis=-1)


P64, Q64 = softmax64(P_LOGITS), softmax64(Q_LOGITS)


def xlogx(u):
  return scipy.special.xlogy(u, u)


def amari_np(a):
  return lambda u: (u ** a - 1 - a * (u - 1)) / (a * (a - 1))


def t_power_np(t):
  sign = -1.0 if 0 < t < 1 else 1.0
  return lambda u: sign * (u ** t - 1 - t * (u - 1))


def js_np(beta):
  return lambda u: beta * xlogx(u) - xlogx(beta * u + 1 - beta)


# name -> (generator, numpy f on u > 0, f(0+), lim f(u)/u).
GENERATORS = {
    "kl_forward": (gen.kl_forward(), xlogx, 0.0, INF),
    "kl_reverse": (gen.kl_reverse(), lambda u: -np.log(u), INF, 0.0),
    "jensen_shannon": (gen.jensen_shannon(), js_np(0.5), 0.5 * np.log(2), 0.5 * np.log(2)),
    "jensen_shannon(0.2)": (gen.jensen_shannon(0.2), js_np(0.2), -0.8 * np.log(0.8),
                            -0.2 * np.log(0.2)),
    "amari_alpha(0.3)": (gen.amari_alpha(0.3), amari_np(0.3), 1 / 0.3, 1 / 0.7),
    "amari_alpha(2)": (gen.amari_alpha(2.0), amari_np(2.0), 0.5, INF),
    "amari_alpha(-1)": (gen.amari_alpha(-1.0), amari_np(-1.0), INF, 0.5),
    "pearson": (gen.pearson(), lambda u: (u - 1) ** 2, 1.0, INF),
    # TFP's chi_square: f(u) = u^2 - 1 (f(0) = -1).
    "chi_square": (gen.chi_square(), lambda u: u ** 2 - 1, -1.0, INF),
    "dual(chi_square)": (gen.dual(gen.chi_square()), lambda u: 1 / u - u, INF, -1.0),
    "squared_hellinger": (gen.squared_hellinger(), lambda u: (np.sqrt(u) - 1) ** 2,
                          1.0, 1.0),
    "total_variation": (gen.total_variation(), lambda u: 0.5 * np.abs(u - 1), 0.5, 0.5),
    "jeffreys": (gen.jeffreys(), lambda u: 0.5 * (u - 1) * np.log(u), INF, INF),
    "triangular": (gen.triangular(), lambda u: (u - 1) ** 2 / (1 + u), 1.0, 1.0),
    "t_power(0.4)": (gen.t_power(0.4), t_power_np(0.4), 0.6, 0.4),
    "t_power(3)": (gen.t_power(3.0), t_power_np(3.0), 2.0, INF),
    "log1p_abs": (gen.log1p_abs(), lambda u: u ** np.sign(u - 1) - 1, INF, 1.0),
    "modified_gan": (gen.modified_gan(),
                     lambda u: np.log1p(u) - np.log(u) - np.log(2), INF, 0.0),
    "arithmetic_geometric": (gen.arithmetic_geometric(),
                             lambda u: (1 + u) * np.log((1 + u) / (2 * np.sqrt(u))),
                             INF, INF),
    "dual(pearson)": (gen.dual(gen.pearson()), lambda u: (1 - u) ** 2 / u, INF, 1.0),
    "symmetrized(triangular)": (gen.symmetrized(gen.triangular()),
                                lambda u: (u - 1) ** 2 / (1 + u), 1.0, 1.0),
}
NAMES = sorted(GENERATORS)


def ref_f_divergence(f_np, f_at_zero, slope_at_inf, p, q):
  """sum_i q_i f(p_i / q_i) in float64 with the zero-probability conventions."""
  both = (p > 0) & (q > 0)
  with np.errstate(divide="ignore", invalid="ignore"):
    ratio = np.where(both, p / np.where(both, q, 1.0), 1.0)
    terms = np.where(both, q * f_np(ratio), 0.0)
    terms = terms + np.where((p == 0) & (q > 0), q * f_at_zero, 0.0)
    terms = terms + np.where((q == 0) & (p > 0), p * slope_at_inf, 0.0)
  return terms.sum(-1)


@jax.jit
def all_f_divergences(p, q, where=None):
  return {name: dv.f_divergence(p, q, g, where=where)
          for name, (g, *_) in GENERATORS.items()}


@jax.jit
def all_f_grads(p, q, where=None):
  def grads(g):
    return jax.grad(lambda a, b: jnp.sum(dv.f_divergence(a, b, g, where=where)),
                    argnums=(0, 1))(p, q)
  return {name: grads(g) for name, (g, *_) in GENERATORS.items()}


VALUES = all_f_divergences(P_LOGITS, Q_LOGITS)


def close(actual, expected, rtol=2e-5, atol=2e-6, name=""):
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol,
                             atol=atol, err_msg=name)


# ----------------------------------------------------------------------------
# The generator functions themselves.

U_GRID = np.array([1e-3, 0.05, 0.3, 0.9, 1.0, 1.2, 2.5, 7.0, 40.0])
CONVEX_GRID = np.linspace(0.05, 6.0, 120)
LOG_GRID = np.array([-1e4, -300.0, -80.0, -1e-6, 0.0])


@jax.jit
def generator_tables():
  """Every generator's f, dual, dual of dual and log forms on fixed grids."""
  u = jnp.asarray(np.concatenate([U_GRID, CONVEX_GRID, [0.0, 1.0]]), jnp.float32)
  x = jnp.asarray(LOG_GRID, jnp.float32)
  return {name: {"f": g.f(u), "dual": gen.dual(g).f(u),
                 "dual_dual": gen.dual(gen.dual(g)).f(u),
                 "log": g.f_of_log(x), "dual_log": gen.dual(g).f_of_log(x)}
          for name, (g, *_) in GENERATORS.items()}


TABLES = generator_tables()
N_GRID, N_CONVEX = len(U_GRID), len(CONVEX_GRID)


@pytest.mark.parametrize("name", NAMES)
def test_f_matches_numpy_formula_and_is_convex(name):
  g, f_np, f_at_zero, _ = GENERATORS[name]
  f = np.asarray(TABLES[name]["f"], np.float64)
  close(f[:N_GRID], f_np(U_GRID), rtol=1e-5, atol=1e-6, name=name)
  at_zero, at_one = f[-2], f[-1]
  assert at_one == pytest.approx(0.0, abs=1e-7)
  assert at_zero == pytest.approx(f_at_zero) and g.f_at_zero == pytest.approx(f_at_zero)
  convex = f[N_GRID:N_GRID + N_CONVEX]
  second_differences = convex[:-2] + convex[2:] - 2 * convex[1:-1]
  assert np.all(second_differences >= -1e-6 * (1 + np.abs(convex).max())), name


@pytest.mark.parametrize("name", NAMES)
def test_dual_is_the_perspective(name):
  g, f_np, f_at_zero, slope_at_inf = GENERATORS[name]
  dual = gen.dual(g)
  close(TABLES[name]["dual"][:N_GRID], U_GRID * f_np(1 / U_GRID), rtol=1e-5,
        atol=1e-6, name=name)
  assert dual.f_at_zero == pytest.approx(slope_at_inf)
  assert gen.dual(dual).f_at_zero == pytest.approx(f_at_zero)
  np.testing.assert_allclose(TABLES[name]["dual_dual"], TABLES[name]["f"], rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_log_forms_stay_finite_far_below_one(name):
  # f_divergence only asks the log forms for log u <= 0; at -1e4 they must be
  # at their u -> 0 limits, never NaN.
  _, _, f_at_zero, slope_at_inf = GENERATORS[name]
  below = np.asarray(TABLES[name]["log"])
  dual_below = np.asarray(TABLES[name]["dual_log"])
  assert not np.any(np.isnan(below)) and not np.any(np.isnan(dual_below))
  if math.isfinite(f_at_zero):
    close(below[0], f_at_zero, rtol=1e-5, name=name)
  if math.isfinite(slope_at_inf):
    close(dual_below[0], slope_at_inf, rtol=1e-5, name=name)


# ----------------------------------------------------------------------------
# f_divergence.


@pytest.mark.parametrize("name", NAMES)
def test_f_divergence_matches_direct_float64_sum(name):
  g, f_np, f_at_zero, slope_at_inf = GENERATORS[name]
  close(VALUES[name], ref_f_divergence(f_np, f_at_zero, slope_at_inf, P64, Q64),
        name=name)


def test_f_divergence_equals_the_closed_forms():
  closed = jax.jit(lambda p, q: {
      "kl": dv.kl(p, q), "reverse_kl": dv.reverse_kl(p, q),
      "chi_squared": dv.chi_squared(p, q), "hellinger": dv.squared_hellinger(p, q),
      "tv": dv.total_variation(p, q), "js": dv.js(p, q), "js0.2": dv.js(p, q, beta=0.2),
      "alpha0.3": dv.alpha_divergence(p, q, 0.3),
      "alpha2": dv.alpha_divergence(p, q, 2.0),
      "alpha-1": dv.alpha_divergence(p, q, -1.0)})(P_LOGITS, Q_LOGITS)
  pairs = [("kl_forward", "kl"), ("kl_reverse", "reverse_kl"),
           ("pearson", "chi_squared"), ("chi_square", "chi_squared"),
           ("squared_hellinger", "hellinger"),
           ("total_variation", "tv"), ("jensen_shannon", "js"),
           ("jensen_shannon(0.2)", "js0.2"), ("amari_alpha(0.3)", "alpha0.3"),
           ("amari_alpha(2)", "alpha2"), ("amari_alpha(-1)", "alpha-1")]
  for generator_name, closed_name in pairs:
    close(VALUES[generator_name], closed[closed_name], rtol=2e-5, atol=1e-6,
          name=generator_name)
  # Identities between generators, against float64 sums.
  kl_pq = scipy.special.rel_entr(P64, Q64).sum(-1)
  kl_qp = scipy.special.rel_entr(Q64, P64).sum(-1)
  close(VALUES["jeffreys"], 0.5 * (kl_pq + kl_qp))
  m = 0.5 * (P64 + Q64)
  close(VALUES["arithmetic_geometric"],
        scipy.special.rel_entr(m, P64).sum(-1) + scipy.special.rel_entr(m, Q64).sum(-1))
  close(VALUES["triangular"], np.sum((P64 - Q64) ** 2 / (P64 + Q64), -1))
  close(VALUES["t_power(3)"], np.sum(P64 ** 3 / Q64 ** 2, -1) - 1)
  close(VALUES["modified_gan"], np.sum(Q64 * np.log((P64 + Q64) / (2 * P64)), -1))


def test_tfp_jensen_shannon_is_twice_the_standard_one():
  # TFP's self-normalised generator u log u - (1 + u) log((1 + u) / 2), summed
  # directly, is 2 JS; the standard JS (scipy's, squared) is what divlab returns.
  tfp_f = lambda u: xlogx(u) - (1 + u) * np.log((1 + u) / 2)
  tfp_value = ref_f_divergence(tfp_f, np.log(2.0), np.log(2.0), P64, Q64)
  scipy_js = scipy.spatial.distance.jensenshannon(P64, Q64, axis=-1) ** 2
  close(tfp_value, 2 * scipy_js, rtol=1e-10)
  close(VALUES["jensen_shannon"], scipy_js)


def test_dual_swaps_and_symmetrized_averages_the_arguments():
  swapped = all_f_divergences(Q_LOGITS, P_LOGITS)
  names = ["kl_forward", "pearson", "amari_alpha(0.3)", "jensen_shannon(0.2)"]
  duals = jax.jit(lambda p, q: (
      {name: dv.f_divergence(p, q, gen.dual(GENERATORS[name][0])) for name in names},
      dv.f_divergence(p, q, gen.symmetrized(gen.pearson())),
      dv.f_divergence(p, q, gen.symmetrized(gen.kl_forward()))))
  dual_values, sym_pearson, sym_kl = duals(P_LOGITS, Q_LOGITS)
  for name in names:
    close(dual_values[name], swapped[name], rtol=2e-5, name=name)
  pearson_pq = np.sum((P64 - Q64) ** 2 / Q64, -1)
  neyman_pq = np.sum((P64 - Q64) ** 2 / P64, -1)
  close(sym_pearson, 0.5 * (pearson_pq + neyman_pq))
  close(sym_kl, VALUES["jeffreys"], rtol=1e-5)


def central_differences(total, p_logits, q_logits, step=1e-6):
  """d total / d (p_logits, q_logits) in float64; a -inf logit stays -inf, so
  its difference is 0."""
  grads = []
  for which in range(2):
    base = [np.asarray(p_logits, np.float64), np.asarray(q_logits, np.float64)]
    grad = np.zeros_like(base[which])
    for index in np.ndindex(grad.shape):
      up, down = [x.copy() for x in base], [x.copy() for x in base]
      up[which][index] += step
      down[which][index] -= step
      grad[index] = (total(*up) - total(*down)) / (2 * step)
    grads.append(grad)
  return grads


def test_zero_probabilities_use_the_limits():
  p = P_LOGITS.copy()
  q = Q_LOGITS.copy()
  p[:, 0] = -np.inf  # P = 0 < Q: contributes q f(0)
  q[:, 1] = -np.inf  # Q = 0 < P: contributes p lim f(u)/u
  p[:, 2] = q[:, 2] = -np.inf  # both 0: nothing
  values, grads = all_f_divergences(p, q), all_f_grads(p, q)
  prob_p, prob_q = softmax64(p), softmax64(q)
  for name, (_, f_np, f_at_zero, slope_at_inf) in GENERATORS.items():
    expected = ref_f_divergence(f_np, f_at_zero, slope_at_inf, prob_p, prob_q)
    if np.all(np.isfinite(expected)):
      close(values[name], expected, name=name)
      reference = lambda a, b: ref_f_divergence(f_np, f_at_zero, slope_at_inf,
                                                softmax64(a), softmax64(b)).sum()
      for grad, fd in zip(grads[name], central_differences(reference, p, q)):
        np.testing.assert_array_equal(np.asarray(grad)[:, 2], 0.0, err_msg=name)
        close(grad, fd, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(fd).max()), name=name)
    else:
      assert np.all(np.isposinf(values[name])), name


def test_mask_equals_minus_inf_logits_and_gives_zero_gradients():
  mask = np.ones(SHAPE, bool)
  mask[:, 3] = False
  mask[2] = False
  masked = all_f_divergences(P_LOGITS, Q_LOGITS, mask)
  p_inf = np.where(mask, P_LOGITS, -np.inf).astype(np.float32)
  q_inf = np.where(mask, Q_LOGITS, -np.inf).astype(np.float32)
  inf_values, inf_grads = all_f_divergences(p_inf, q_inf), all_f_grads(p_inf, q_inf)
  masked_kl_grads = jax.jit(jax.grad(
      lambda a, b: jnp.sum(dv.f_divergence(a, b, gen.kl_forward(), where=mask)),
      argnums=(0, 1)))(P_LOGITS, Q_LOGITS)
  for masked_grad, inf_grad in zip(masked_kl_grads, inf_grads["kl_forward"]):
    np.testing.assert_allclose(masked_grad, inf_grad, rtol=1e-6, atol=1e-8)
  for name in NAMES:
    np.testing.assert_allclose(masked[name], inf_values[name], rtol=1e-6, err_msg=name)
    assert float(masked[name][2]) == 0.0, name
    for grad in inf_grads[name]:
      assert np.all(np.isfinite(grad)), name
      np.testing.assert_array_equal(np.asarray(grad)[~mask], 0.0, err_msg=name)


def test_huge_log_ratios_never_give_nan():
  p = np.tile(np.array([1e4, -1e4, 0.0, 9999.0, -5000.0], np.float32), (3, 1))
  q = np.tile(np.array([9999.0, 1e4, -1e4, 0.0, 9995.0], np.float32), (3, 1))
  values, grads = all_f_divergences(p, q), all_f_grads(p, q)
  for name in NAMES:
    assert not np.any(np.isnan(values[name])), name
    if np.all(np.isfinite(values[name])):
      for grad in grads[name]:
        assert np.all(np.isfinite(grad)), name
  # Bounded divergences stay exact: P ~ (0.73, 0, 0, 0.27, 0), Q ~ (0.27, 0.73, 0, 0, 0).
  log_p = scipy.special.log_softmax(p.astype(np.float64), axis=-1)
  log_q = scipy.special.log_softmax(q.astype(np.float64), axis=-1)
  close(values["total_variation"], 0.5 * np.abs(np.exp(log_p) - np.exp(log_q)).sum(-1))


@pytest.mark.parametrize("name", ["kl_forward", "jensen_shannon(0.2)", "amari_alpha(-1)",
                                  "log1p_abs", "arithmetic_geometric"])
def test_check_grads(name):
  g = GENERATORS[name][0]
  with jax.enable_x64(True):
    p = P_LOGITS[:2, :4].astype(np.float64)
    q = Q_LOGITS[:2, :4].astype(np.float64)
    jtu.check_grads(jax.jit(lambda a, b: dv.f_divergence(a, b, g)), (p, q), order=1,
                    modes=["rev"], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------
# Conjugates.


def brute_force_conjugate(f_np, t, dual=False):
  """sup_{u >= 0} (u t - f(u)) over a dense grid, in float64."""
  u = np.concatenate([[0.0], np.geomspace(1e-8, 1e4, 400001)])
  with np.errstate(divide="ignore", invalid="ignore"):
    values = f_np(u[1:]) if not dual else u[1:] * f_np(1 / u[1:])
  return np.max(np.outer(t, u[1:]) - values[None, :], axis=1), u


CONJUGATES = {
    "kl_forward": np.array([-3.0, -0.5, 0.0, 0.7, 2.0]),
    "kl_reverse": np.array([-5.0, -1.0, -0.2]),
    "jensen_shannon": np.array([-3.0, -0.5, 0.0, 0.2]),
    "jensen_shannon(0.2)": np.array([-2.0, 0.0, 0.25]),
    "amari_alpha(0.3)": np.array([-4.0, -1.0, 0.0, 1.0]),
    "amari_alpha(2)": np.array([-3.0, -1.5, -0.5, 0.0, 2.0]),
    "amari_alpha(-1)": np.array([-3.0, 0.0, 0.3]),
    "pearson": np.array([-4.0, -2.0, -1.0, 0.0, 3.0]),
    "chi_square": np.array([-3.0, -1.0, 0.0, 1.5, 4.0]),
    "dual(chi_square)": np.array([-5.0, -2.0, -1.5]),
    "squared_hellinger": np.array([-5.0, -0.5, 0.0, 0.6]),
    "total_variation": np.array([-2.0, -0.5, -0.2, 0.0, 0.5]),
    "triangular": np.array([-5.0, -3.0, -1.0, 0.0, 0.8]),
    "t_power(3)": np.array([-3.0, -1.0, 0.0, 2.0]),
    "log1p_abs": np.array([-4.0, -1.0, 0.3, 1.0]),
    "dual(pearson)": np.array([-5.0, 0.0, 0.9]),
}


@pytest.mark.parametrize("name", sorted(CONJUGATES))
def test_conjugate_is_the_supremum(name):
  g, f_np, f_at_zero, _ = GENERATORS[name]
  t = CONJUGATES[name]
  brute, _ = brute_force_conjugate(f_np, t)
  # u = 0 is in the domain: its value is -f(0).
  brute = np.maximum(brute, -f_at_zero)
  close(g.conjugate(jnp.asarray(t, jnp.float32)), brute, rtol=1e-4, atol=1e-4, name=name)


def test_conjugates_are_infinite_outside_their_domain():
  outside = {"kl_reverse": 0.5, "squared_hellinger": 1.5, "total_variation": 0.8,
             "jensen_shannon": 0.5, "amari_alpha(0.3)": 2.0, "log1p_abs": 1.5,
             "triangular": 1.5, "dual(pearson)": 1.5}
  for name, t in outside.items():
    assert np.isposinf(float(GENERATORS[name][0].conjugate(jnp.float32(t)))), name
  for name in ["jeffreys", "modified_gan", "arithmetic_geometric"]:
    assert GENERATORS[name][0].conjugate is None, name


# ----------------------------------------------------------------------------
# Construction.


def test_generators_are_hashable_and_cached_for_jit():
  assert gen.amari_alpha(0.3) == gen.amari_alpha(0.3)
  assert hash(gen.dual(gen.pearson())) == hash(gen.dual(gen.pearson()))
  assert gen.dual(gen.dual(gen.pearson())).name == "pearson"
  f_div = jax.jit(dv.f_divergence, static_argnames="f")
  close(f_div(P_LOGITS, Q_LOGITS, f=gen.pearson()), VALUES["pearson"], rtol=1e-7)


def test_value_errors_name_the_argument():
  cases = [
      (lambda: gen.amari_alpha(np.inf), "alpha"),
      (lambda: gen.jensen_shannon(0.0), "beta"),
      (lambda: gen.jensen_shannon(1.0), "beta"),
      (lambda: gen.jensen_shannon(1.5), "beta"),
      (lambda: gen.t_power(1.0), "t"),
      (lambda: gen.t_power(np.nan), "t"),
      (lambda: gen.dual("pearson"), "g"),
      (lambda: gen.symmetrized(None), "g"),
  ]
  for call, name in cases:
    with pytest.raises(ValueError, match=f"`{name}`"):
      call()
  with pytest.raises(ValueError, match="`alpha`"):
    jax.jit(gen.amari_alpha)(0.5)


def test_docstring_examples_run():
  result = doctest.testmod(gen, extraglobs={"jnp": jnp}, verbose=False)
  assert result.attempted >= 14 and result.failed == 0
