"""Bad and edge inputs to the categorical divergences: each case's exact outcome.

A catalogue, one row per input a user can plausibly pass: NaN and +/-inf
logits, parameters outside their domain (concrete: ValueError naming the
argument; traced under `jit`: NaN), shapes, dtypes and masks. Expected limits
are computed independently in float64 (a +inf logit is the limit of a growing
logit: the point mass on the +inf entries).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from divlab.divergences import categorical as dv
from divlab.divergences import generators
from divlab.losses import distillation

INF, NAN = np.inf, np.nan
P = np.array([[1.0, 2.0, 0.5, -1.0], [0.0, 3.0, 1.0, 2.0]], np.float32)
Q = np.array([[0.0, 1.0, 2.0, 3.0], [1.0, -1.0, 0.5, 0.0]], np.float32)


def with_nan(x, row=0, col=1):
  x = x.copy()
  x[row, col] = NAN
  return x


def with_inf(x, row=0, col=0):
  x = x.copy()
  x[row, col] = INF
  return x


def softmax64(x):
  return scipy.special.softmax(np.asarray(x, np.float64), -1)


def point_mass(x):
  """float64 probabilities of logits with +inf entries (uniform on them)."""
  x = np.asarray(x, np.float64)
  out = softmax64(np.where(np.isinf(x) & (x > 0), 0.0, x))
  has_inf = np.any(np.isposinf(x), -1, keepdims=True)
  mass = np.isposinf(x) / np.maximum(np.isposinf(x).sum(-1, keepdims=True), 1)
  return np.where(has_inf, mass, out)


def ref_alpha(p, q, a):
  return (1 - np.sum(p ** a * q ** (1 - a), -1)) / (a * (1 - a))


def ref_renyi(p, q, a):
  return np.log(np.sum(p ** a * q ** (1 - a), -1)) / (a - 1)


def ref_chi2(p, q):
  return np.sum((p - q) ** 2 / q, -1)


def ref_kl(p, q):
  return scipy.special.rel_entr(p, q).sum(-1)


def ref_js(p, q):
  m = 0.5 * (p + q)
  return 0.5 * ref_kl(p, m) + 0.5 * ref_kl(q, m)


def ref_tv(p, q):
  return 0.5 * np.abs(p - q).sum(-1)


def ref_hellinger(p, q):
  return np.sum((np.sqrt(p) - np.sqrt(q)) ** 2, -1)


PAIR_FUNCTIONS = {
    "kl": (dv.kl, ref_kl),
    "reverse_kl": (dv.reverse_kl, lambda p, q: ref_kl(q, p)),
    "js": (dv.js, ref_js),
    "alpha(0.5)": (lambda p, q: dv.alpha_divergence(p, q, 0.5),
                   lambda p, q: ref_alpha(p, q, 0.5)),
    "alpha(2)": (lambda p, q: dv.alpha_divergence(p, q, 2.0),
                 lambda p, q: ref_alpha(p, q, 2.0)),
    "renyi(2)": (lambda p, q: dv.renyi(p, q, 2.0), lambda p, q: ref_renyi(p, q, 2.0)),
    "renyi(0.5)": (lambda p, q: dv.renyi(p, q, 0.5), lambda p, q: ref_renyi(p, q, 0.5)),
    "chi_squared": (dv.chi_squared, ref_chi2),
    "total_variation": (dv.total_variation, ref_tv),
    "squared_hellinger": (dv.squared_hellinger, ref_hellinger),
    "f(pearson)": (lambda p, q: dv.f_divergence(p, q, generators.pearson()), ref_chi2),
    "f(chi_square)": (lambda p, q: dv.f_divergence(p, q, generators.chi_square()), ref_chi2),
    "cross_entropy": (dv.cross_entropy,
                      lambda p, q: -np.sum(p * np.log(q), -1)),
}


@pytest.mark.parametrize("name", sorted(PAIR_FUNCTIONS))
@pytest.mark.parametrize("side", ["p", "q"])
def test_a_nan_logit_makes_its_row_nan(name, side):
  fn, ref = PAIR_FUNCTIONS[name]
  p, q = (with_nan(P), Q) if side == "p" else (P, with_nan(Q))
  values = np.asarray(jax.jit(fn)(p, q))
  assert np.isnan(values[0])
  np.testing.assert_allclose(values[1], ref(softmax64(P), softmax64(Q))[1], rtol=2e-5)


@pytest.mark.parametrize("name", sorted(PAIR_FUNCTIONS))
def test_a_nan_logit_makes_the_gradient_of_its_row_nan(name):
  fn, _ = PAIR_FUNCTIONS[name]
  grad = jax.jit(jax.grad(lambda p: fn(p, Q)[0]))(with_nan(P))
  assert np.all(np.isnan(np.asarray(grad[0])))


def test_an_all_nan_row_is_nan():
  p = P.copy()
  p[0] = NAN
  assert np.isnan(float(dv.kl(p, Q)[0]))
  assert np.isnan(float(dv.entropy(p)[0]))


@pytest.mark.parametrize("name", sorted(PAIR_FUNCTIONS))
def test_a_plus_inf_logit_in_p_is_the_point_mass_limit(name):
  fn, ref = PAIR_FUNCTIONS[name]
  p = with_inf(P)
  expected = ref(point_mass(p), softmax64(Q))
  np.testing.assert_allclose(np.asarray(jax.jit(fn)(p, Q)), expected, rtol=2e-5)
  # ... and equals what a huge finite logit gives.
  # (Where the limit is infinite, a finite logit gives a finite, huge value.)
  huge = P.copy()
  huge[0, 0] = 1e30
  from_huge = np.asarray(fn(huge, Q))
  finite = np.isfinite(expected)
  np.testing.assert_allclose(from_huge[finite], expected[finite], rtol=2e-5)
  assert np.all(from_huge[~finite] > 1e20)


@pytest.mark.parametrize("name", ["kl", "js", "total_variation", "squared_hellinger",
                                  "alpha(0.5)"])
def test_plus_inf_logits_in_both_at_the_same_entry(name):
  fn, ref = PAIR_FUNCTIONS[name]
  p, q = with_inf(P), with_inf(Q)
  values = np.asarray(fn(p, q))
  assert values[0] == pytest.approx(0.0, abs=1e-7)
  np.testing.assert_allclose(values[1], ref(softmax64(P), softmax64(Q))[1], rtol=2e-5)


def test_entropy_of_special_rows():
  p = np.array([[INF, 0.0, 1.0], [INF, INF, 0.0], [-INF, -INF, -INF], [0.0, NAN, 1.0]],
               np.float32)
  values = np.asarray(dv.entropy(p))
  np.testing.assert_allclose(values[:3], [0.0, np.log(2.0), 0.0], atol=1e-7)
  assert np.isnan(values[3])


@pytest.mark.parametrize("fn,bad", [
    (lambda a: dv.renyi(P, Q, a), -1.0),
    (lambda a: dv.renyi(P, Q, a), 0.0),
    (lambda a: dv.renyi(P, Q, a), INF),
    (lambda a: dv.alpha_divergence(P, Q, a), INF),
    (lambda a: dv.alpha_divergence(P, Q, a), NAN),
    (lambda b: dv.js(P, Q, beta=b), 1.5),
    (lambda b: dv.js(P, Q, beta=b), -0.1),
], ids=["renyi(-1)", "renyi(0)", "renyi(inf)", "alpha(inf)", "alpha(nan)", "js(1.5)",
        "js(-0.1)"])
def test_traced_parameters_outside_the_domain_give_nan(fn, bad):
  assert np.all(np.isnan(np.asarray(jax.jit(fn)(jnp.float32(bad)))))


def test_traced_parameters_inside_the_domain_give_the_divergence():
  renyi = jax.jit(lambda a: dv.renyi(P, Q, a))(jnp.float32(2.0))
  js = jax.jit(lambda b: dv.js(P, Q, beta=b))(jnp.float32(0.3))
  p, q = softmax64(P), softmax64(Q)
  m = 0.3 * p + 0.7 * q
  np.testing.assert_allclose(renyi, ref_renyi(p, q, 2.0), rtol=2e-5)
  np.testing.assert_allclose(js, 0.3 * ref_kl(p, m) + 0.7 * ref_kl(q, m), rtol=2e-5)


ERRORS = [
    ("shape mismatch", lambda: dv.kl(P, Q[:, :3]), "q_logits"),
    ("scalar logits", lambda: dv.entropy(jnp.float32(1.0)), "logits"),
    ("complex logits", lambda: dv.kl(P.astype(np.complex64), Q.astype(np.complex64)),
     "p_logits"),
    ("mask shape", lambda: dv.kl(P, Q, where=np.ones((3,), bool)), "where"),
    ("mask dtype", lambda: dv.kl(P, Q, where=np.ones((4,), np.float32)), "where"),
    ("axis out of range", lambda: dv.kl(P, Q, axis=2), "axis"),
    ("renyi alpha <= 0", lambda: dv.renyi(P, Q, -1.0), "alpha"),
    ("renyi alpha inf", lambda: dv.renyi(P, Q, INF), "alpha"),
    ("alpha nan", lambda: dv.alpha_divergence(P, Q, NAN), "alpha"),
    ("alpha not scalar", lambda: dv.alpha_divergence(P, Q, np.ones(2)), "alpha"),
    ("js beta > 1", lambda: dv.js(P, Q, beta=1.5), "beta"),
    ("js beta not scalar", lambda: dv.js(P, Q, beta=np.ones(2)), "beta"),
    ("f not a generator", lambda: dv.f_divergence(P, Q, lambda u: u), "f"),
    ("kd labels out of shape", lambda: distillation.kd(P, Q, np.zeros((3,), np.int32)),
     "labels"),
]


@pytest.mark.parametrize("case", ERRORS, ids=[c[0] for c in ERRORS])
def test_invalid_arguments_raise_value_error_naming_them(case):
  _, call, name = case
  with pytest.raises(ValueError, match=f"`{name}`"):
    call()


@pytest.mark.parametrize("side", ["student", "teacher"])
def test_distillation_loss_rows_with_nan_logits_are_nan(side):
  student, teacher = (with_nan(P), Q) if side == "student" else (P, with_nan(Q))
  labels = np.array([0, 1])
  values = np.asarray(distillation.kd(student, teacher, labels, temperature=4.0, alpha=0.5))
  assert np.isnan(values[0])
  # Row 1: (1 - a) CE + a T^2 KL(teacher || student) at temperature T, float64.
  cross_entropy = -np.log(softmax64(P)[1, 1])
  soft = ref_kl(softmax64(Q / 4.0), softmax64(P / 4.0))[1]
  np.testing.assert_allclose(values[1], 0.5 * cross_entropy + 0.5 * 16.0 * soft, rtol=2e-5)
