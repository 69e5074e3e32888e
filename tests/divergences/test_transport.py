"""Sinkhorn and sliced Wasserstein against exact transport (assignment, linear program)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.special
import scipy.stats

from divlab.divergences import transport

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 2))
Y = RNG.normal(loc=0.5, size=(6, 2))
KEY = jax.random.PRNGKey(0)

SOLVER_SETTINGS = ("max_iterations", "threshold", "anneal_start", "anneal_decay",
                   "accept_unconverged")
sinkhorn = jax.jit(transport.sinkhorn, static_argnames=SOLVER_SETTINGS)
sinkhorn_divergence = jax.jit(transport.sinkhorn_divergence,
                              static_argnames=SOLVER_SETTINGS)
sliced = jax.jit(transport.sliced_wasserstein, static_argnames=("num_projections", "p"))


def cost_matrix(x, y):
  return np.array([[np.sum((a - b) ** 2) for b in y] for a in x])


def exact_assignment_cost(x, y):
  """W_2^2 between equal-size uniform clouds: an optimal permutation."""
  c = cost_matrix(x, y)
  rows, cols = scipy.optimize.linear_sum_assignment(c)
  return c[rows, cols].mean(), cols


def exact_ot_cost(a, b, c):
  """Exact OT between weighted discrete measures, as a linear program."""
  n, m = c.shape
  rows = np.kron(np.eye(n), np.ones((1, m)))   # sum_j P_ij = a_i
  cols = np.kron(np.ones((1, n)), np.eye(m))   # sum_i P_ij = b_j
  result = scipy.optimize.linprog(c.ravel(), A_eq=np.vstack([rows, cols]),
                                  b_eq=np.concatenate([a, b]), bounds=(0, None),
                                  method="highs")
  assert result.success
  return result.fun


def exact_w_pp_1d(u, v, p):
  """W_p^p between uniform 1-D samples by a linear program on |u_i - v_j|^p."""
  c = np.abs(u[:, None] - v[None, :]) ** p
  return exact_ot_cost(np.full(len(u), 1 / len(u)), np.full(len(v), 1 / len(v)), c)


# ----------------------------------------------------------------------------
# Sinkhorn: convergence is visible, annealing reaches small epsilon, gradients
# match finite differences at every epsilon.

# 16 points in 3-D (float64 inside x64 blocks): unit-scale Gaussian clouds for
# the small-epsilon limit, clouds in the unit cube for the gradient checks,
# where epsilon = 0.01 is small next to the largest cost (3) but Sinkhorn still
# converges to 1e-7 within a few thousand annealed iterations.
X16 = np.random.default_rng(7).normal(size=(16, 3))
Y16 = np.random.default_rng(8).normal(loc=0.5, size=(16, 3))
X_CUBE = np.random.default_rng(7).uniform(size=(16, 3))
Y_CUBE = np.random.default_rng(8).uniform(size=(16, 3)) + 0.2
FUNCTIONS = ["sinkhorn", "sinkhorn_divergence"]


def test_small_epsilon_without_annealing_is_nan_not_a_wrong_cost():
  # Plain iterations stall at epsilon = 1e-4 on unit-scale data; the stalled
  # value is off the exact cost, so it must not come back as a number.
  exact, _ = exact_assignment_cost(X16, Y16)
  assert np.isnan(sinkhorn(X16, Y16, 1e-4))
  stalled = float(sinkhorn(X16, Y16, 1e-4, accept_unconverged=True))
  assert np.isfinite(stalled) and abs(stalled - exact) > 1e-3
  assert np.isnan(sinkhorn(X16, Y16, 1.0, max_iterations=2))
  assert np.isnan(sinkhorn_divergence(X16, Y16, 1.0, max_iterations=2))


@pytest.fixture(scope="module")
def annealed_value_and_grad():
  """value_and_grad in x at epsilon 1e-4, annealed from 1, compiled once each."""
  return {name: jax.jit(jax.value_and_grad(
      lambda x, fn=getattr(transport, name): fn(
          x, Y16, 1e-4, anneal_start=1e4, threshold=1e-9, max_iterations=4000)))
          for name in FUNCTIONS}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_annealed_small_epsilon_matches_exact_assignment(name, annealed_value_and_grad):
  # W_2^2 is the optimal assignment cost; its gradient in x_i is
  # (2 / n) (x_i - y_sigma(i)). At epsilon = 1e-4 the entropic plan is that
  # assignment, so both quantities equal it up to epsilon log n (the
  # divergence's self terms are epsilon log n each).
  exact, perm = exact_assignment_cost(X16, Y16)
  exact_grad = 2.0 / len(X16) * (X16 - Y16[perm])
  with jax.enable_x64(True):
    value, grad = annealed_value_and_grad[name](X16)
  tolerance = 1e-8 if name == "sinkhorn" else 1e-4 * np.log(len(X16))
  np.testing.assert_allclose(value, exact, atol=tolerance)
  np.testing.assert_allclose(grad, exact_grad, atol=1e-6)


@pytest.fixture(scope="module")
def converged_value_and_grad():
  """value_and_grad in x with epsilon traced: one compilation per function."""
  return {name: jax.jit(jax.value_and_grad(
      lambda x, epsilon, fn=getattr(transport, name): fn(
          x, Y_CUBE, epsilon, anneal_start=100.0, threshold=1e-7,
          max_iterations=20000)))
          for name in FUNCTIONS}


@pytest.mark.parametrize("epsilon", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_gradient_matches_central_differences(name, epsilon, converged_value_and_grad):
  value_and_grad = converged_value_and_grad[name]
  direction = np.random.default_rng(5).normal(size=X_CUBE.shape)
  direction /= np.linalg.norm(direction)
  h = 1e-4
  with jax.enable_x64(True):
    value, grad = value_and_grad(X_CUBE, epsilon)
    plus, _ = value_and_grad(X_CUBE + h * direction, epsilon)
    minus, _ = value_and_grad(X_CUBE - h * direction, epsilon)
  assert np.isfinite(value)
  numeric = (float(plus) - float(minus)) / (2 * h)
  np.testing.assert_allclose(np.vdot(grad, direction), numeric, rtol=1e-6)


def test_gradient_at_moderate_epsilon_in_16d_is_the_translation_identity():
  # The shape whose gradient used to crash in ott's implicit solve. Translating
  # x by t adds row and column terms to C, which leave the plan unchanged, so
  # sum_i d<P, C>/dx_i = 2 sum_ij P_ij (x_i - y_j) = 2 (mean(x) - mean(y)) at
  # exact marginals. The solver's last update makes the rows exact; the column
  # error (L1 <= threshold) moves the sum by at most 2 threshold max|y|.
  rng = np.random.default_rng(9)
  x = rng.normal(size=(64, 16)).astype(np.float32)
  y = rng.normal(loc=0.2, size=(64, 16)).astype(np.float32)
  grad = jax.jit(jax.grad(lambda x: transport.sinkhorn(x, y, 0.1, threshold=1e-3)))(x)
  np.testing.assert_allclose(np.sum(grad, axis=0), 2.0 * (x.mean(0) - y.mean(0)),
                             atol=2 * 1e-3 * np.abs(y).max())


def test_sinkhorn_with_weights_matches_linear_program():
  x, y = X[:5, 0], Y[:4, 0]  # 1-D arrays: scalar samples
  rng = np.random.default_rng(2)
  a, b = rng.uniform(0.5, 1.5, size=5), rng.uniform(0.5, 1.5, size=4)
  exact = exact_ot_cost(a / a.sum(), b / b.sum(), cost_matrix(x[:, None], y[:, None]))
  with jax.enable_x64(True):
    got = float(sinkhorn(x, y, 0.01, a=a, b=b, threshold=1e-7, max_iterations=20000))
  np.testing.assert_allclose(got, exact, rtol=2e-3)


def entropic_plan(x, y, epsilon, a=None, b=None):
  """The entropic OT plan of C_ij = |x_i - y_j|^2 between weights a and b
  (uniform by default): log-domain Sinkhorn in float64, iterated until both
  marginals are exact to 1e-13."""
  cost = cost_matrix(x, y)
  a = np.full(len(x), 1 / len(x)) if a is None else a / a.sum()
  b = np.full(len(y), 1 / len(y)) if b is None else b / b.sum()
  f, g = np.zeros(len(x)), np.zeros(len(y))
  for _ in range(20000):
    f = -epsilon * scipy.special.logsumexp((g[None] - cost) / epsilon, b=b[None], axis=1)
    g = -epsilon * scipy.special.logsumexp((f[:, None] - cost) / epsilon, b=a[:, None],
                                           axis=0)
    plan = np.exp((f[:, None] + g[None] - cost) / epsilon) * a[:, None] * b[None]
    if np.abs(plan.sum(1) - a).max() < 1e-13:  # columns are exact after g's update
      break
  return plan, cost, np.outer(a, b)


def regularised_cost(x, y, epsilon):
  """<P, C> + epsilon KL(P || a b^T) at the entropic plan."""
  plan, cost, product = entropic_plan(x, y, epsilon)
  return np.sum(plan * cost) + epsilon * np.sum(scipy.special.rel_entr(plan, product))


@pytest.mark.parametrize("epsilon", [0.3, 2.0])
def test_sinkhorn_and_divergence_match_float64_log_domain_sinkhorn(epsilon):
  # Moderate epsilon, where the entropic values differ from W_2^2: the primal
  # cost <P, C> and the debiased S = OT(x, y) - (OT(x, x) + OT(y, y)) / 2 of
  # the regularised costs, as the docstrings define them.
  plan, cost, _ = entropic_plan(X, Y, epsilon)
  expected_divergence = regularised_cost(X, Y, epsilon) - 0.5 * (
      regularised_cost(X, X, epsilon) + regularised_cost(Y, Y, epsilon))
  with jax.enable_x64(True):
    primal = float(sinkhorn(X, Y, epsilon, threshold=1e-10))
    divergence = float(sinkhorn_divergence(X, Y, epsilon, threshold=1e-10))
  np.testing.assert_allclose(primal, np.sum(plan * cost), rtol=1e-8)
  np.testing.assert_allclose(divergence, expected_divergence, rtol=1e-8)
  # Weighted measures (normalised by the function).
  a, b = np.linspace(0.5, 1.5, len(X)), np.linspace(2.0, 0.2, len(Y))
  plan, cost, _ = entropic_plan(X, Y, epsilon, a, b)
  with jax.enable_x64(True):
    weighted = float(sinkhorn(X, Y, epsilon, a=a, b=b, threshold=1e-10))
  np.testing.assert_allclose(weighted, np.sum(plan * cost), rtol=1e-8)


def test_sinkhorn_divergence_nonnegative_and_debiased():
  rng = np.random.default_rng(1)
  for _ in range(3):  # same shapes as X, Y: one compilation
    x, y = rng.normal(size=X.shape), rng.normal(size=Y.shape)
    assert float(sinkhorn_divergence(x, y, 0.3, threshold=1e-5)) >= -1e-5
  assert abs(float(sinkhorn_divergence(X, X, 0.3, threshold=1e-5))) < 1e-5
  # Unlike the plain cost, which is biased upwards for identical clouds.
  assert float(sinkhorn(X, X, 0.3)) > 1e-2


# ----------------------------------------------------------------------------
# Sliced Wasserstein.


@pytest.mark.parametrize("p", [1, 2, 3])
def test_sliced_wasserstein_1d_equal_sizes_is_sorted_w_p(p):
  rng = np.random.default_rng(3)
  u, v = rng.normal(size=7), rng.exponential(size=7)
  expected = np.mean(np.abs(np.sort(u) - np.sort(v)) ** p) ** (1 / p)
  np.testing.assert_allclose(sliced(u, v, KEY, p=p, num_projections=4), expected, rtol=1e-5)


def test_sliced_wasserstein_1d_unequal_sizes_is_exact():
  rng = np.random.default_rng(4)
  u, v = rng.normal(size=5), rng.normal(loc=1.0, size=8)
  np.testing.assert_allclose(sliced(u, v, KEY, p=1, num_projections=4),
                             scipy.stats.wasserstein_distance(u, v), rtol=1e-5)
  np.testing.assert_allclose(sliced(u, v, KEY, p=2, num_projections=4),
                             np.sqrt(exact_w_pp_1d(u, v, 2)), rtol=1e-5)


def test_sliced_wasserstein_same_measure_different_sizes_is_zero():
  # Every point repeated twice is the same empirical measure.
  assert float(sliced(X, np.concatenate([X, X[::-1]]), KEY)) == 0.0


def test_sliced_wasserstein_translation_in_2d():
  # For a shift t, direction theta gives W_2^2 = <theta, t>^2 exactly (sorting
  # commutes with a translation). So SW_2^2 is the mean of <theta, t>^2 over the
  # drawn directions (the documented draw: normalised normals from the key), in
  # float64; and that mean estimates |t|^2 / 2, its average over the circle.
  shift = np.array([1.5, -0.5])
  value = float(sliced(X, X + shift, KEY, num_projections=4096))
  theta = np.asarray(jax.random.normal(KEY, (4096, 2), jnp.float32), np.float64)
  theta /= np.linalg.norm(theta, axis=1, keepdims=True)
  np.testing.assert_allclose(value ** 2, np.mean((theta @ shift) ** 2), rtol=1e-5)
  np.testing.assert_allclose(value ** 2, np.sum(shift ** 2) / 2, rtol=5e-2)


def test_sliced_wasserstein_gradient_is_finite_at_zero():
  grad = jax.jit(jax.grad(lambda x: transport.sliced_wasserstein(x, X, KEY)))(jnp.asarray(X))
  assert np.all(np.asarray(grad) == 0.0)


# ----------------------------------------------------------------------------
# Transformations, shapes, errors.


def test_vmap_matches_loop():
  xs = np.stack([X, X + 1.0, 2.0 * X]).astype(np.float32)
  ys = np.stack([Y, Y, Y]).astype(np.float32)
  batched = jax.jit(jax.vmap(lambda x, y: transport.sliced_wasserstein(x, y, KEY)))(xs, ys)
  np.testing.assert_allclose(batched, [sliced(x, y, KEY) for x, y in zip(xs, ys)], rtol=1e-5)
  batched = jax.jit(jax.vmap(lambda x, y: transport.sinkhorn(x, y, 0.5)))(xs, ys)
  np.testing.assert_allclose(batched, [sinkhorn(x, y, 0.5) for x, y in zip(xs, ys)],
                             rtol=1e-4)


def test_one_dimensional_input_equals_column():
  # Sinkhorn's 1-D path is covered by the linear-program test above.
  u, v = X[:, 0], Y[:, 0]
  assert float(sliced(u, v, KEY)) == float(sliced(u[:, None], v[:, None], KEY))


@pytest.mark.parametrize("call, name", [
    (lambda: transport.sinkhorn(X, Y, 0.0), "epsilon"),
    (lambda: transport.sinkhorn(X, Y, np.inf), "epsilon"),
    (lambda: transport.sinkhorn(X, Y, 0.1, anneal_start=0.5), "anneal_start"),
    (lambda: transport.sinkhorn(X, Y, 0.1, anneal_start=10.0, anneal_decay=1.0),
     "anneal_decay"),
    (lambda: transport.sinkhorn(X, Y, 0.1, anneal_start=1e4, max_iterations=500),
     "max_iterations"),
    (lambda: transport.sinkhorn_divergence(X, Y, -1.0), "epsilon"),
    (lambda: transport.sinkhorn(X, Y[:, :1], 0.1), "y"),
    (lambda: transport.sinkhorn(X, Y, 0.1, a=np.ones(4)), "a"),
    (lambda: transport.sinkhorn_divergence(X, Y, 0.1, b=np.ones(2)), "b"),
    (lambda: transport.sinkhorn(X, Y, 0.1, max_iterations=0), "max_iterations"),
    (lambda: transport.sinkhorn(X, Y, 0.1, threshold=0.0), "threshold"),
    (lambda: transport.sliced_wasserstein(X, Y, KEY, p=0.5), "p"),
    (lambda: transport.sliced_wasserstein(X, Y, KEY, p=np.inf), "p"),
    (lambda: transport.sliced_wasserstein(X, Y, KEY, num_projections=0), "num_projections"),
    (lambda: transport.sliced_wasserstein(X, Y[:, :1], KEY), "y"),
    (lambda: transport.sliced_wasserstein(np.ones((2, 2, 2)), Y, KEY), "x"),
])
def test_bad_arguments_raise_value_error_naming_them(call, name):
  with pytest.raises(ValueError, match=f"`{name}`"):
    call()
