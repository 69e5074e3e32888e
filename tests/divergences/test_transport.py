"""Sinkhorn and sliced Wasserstein against exact transport (assignment, linear program)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from divlab.divergences import transport

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 2))
Y = RNG.normal(loc=0.5, size=(6, 2))
KEY = jax.random.PRNGKey(0)

sinkhorn = jax.jit(transport.sinkhorn,
                   static_argnames=("max_iterations", "threshold"))
sinkhorn_divergence = jax.jit(transport.sinkhorn_divergence,
                              static_argnames=("max_iterations", "threshold"))
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
# Sinkhorn.


def _value_and_grad_x64(fn):
  """Value and x-gradient of fn(x, Y, epsilon) at float64, compiled once."""
  return jax.jit(jax.value_and_grad(
      lambda x, epsilon: fn(x, Y, epsilon, threshold=1e-9, max_iterations=20000)))


def _check_central_difference(value_and_grad, epsilon):
  direction = jnp.asarray(np.random.default_rng(5).normal(size=X.shape))
  _, grad = value_and_grad(X, epsilon)
  h = 1e-4
  numeric = (value_and_grad(X + h * direction, epsilon)[0]
             - value_and_grad(X - h * direction, epsilon)[0]) / (2 * h)
  np.testing.assert_allclose(jnp.vdot(grad, direction), numeric, rtol=1e-5)


@pytest.mark.parametrize("name", ["sinkhorn", "sinkhorn_divergence"])
def test_small_epsilon_value_and_gradient_tend_to_exact_transport(name):
  # W_2^2 is the optimal assignment cost; its gradient in x_i is
  # (2 / n) (x_i - y_sigma(i)). Both Sinkhorn quantities tend to it as
  # epsilon -> 0 (the divergence's self terms vanish), and their gradients
  # match central differences at a moderate epsilon.
  exact, perm = exact_assignment_cost(X, Y)
  exact_grad = 2.0 / len(X) * (X - Y[perm])
  with jax.enable_x64(True):
    value_and_grad = _value_and_grad_x64(getattr(transport, name))
    coarse, _ = value_and_grad(X, 1.0)
    fine, grad = value_and_grad(X, 0.01)
    np.testing.assert_allclose(fine, exact, rtol=1e-4)
    assert abs(float(fine) - exact) < abs(float(coarse) - exact)
    np.testing.assert_allclose(grad, exact_grad, atol=5e-3)
    _check_central_difference(value_and_grad, 0.5)


def test_sinkhorn_with_weights_matches_linear_program():
  x, y = X[:5, 0], Y[:4, 0]  # 1-D arrays: scalar samples
  rng = np.random.default_rng(2)
  a, b = rng.uniform(0.5, 1.5, size=5), rng.uniform(0.5, 1.5, size=4)
  exact = exact_ot_cost(a / a.sum(), b / b.sum(), cost_matrix(x[:, None], y[:, None]))
  with jax.enable_x64(True):
    got = float(sinkhorn(x, y, 0.01, a=a, b=b, threshold=1e-7, max_iterations=20000))
  np.testing.assert_allclose(got, exact, rtol=2e-3)


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
  # For a shift t, every direction gives W_2^2 = <theta, t>^2, whose mean over
  # the circle is |t|^2 / 2; 4096 directions put the estimate within ~1%.
  shift = np.array([1.5, -0.5])
  value = float(sliced(X, X + shift, KEY, num_projections=4096))
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
