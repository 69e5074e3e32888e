"""Heavy-ball PLMS against the exact recursion of the linear test equation.

With alpha = 1 on the grid, x_bar = x and g = sigma, so a sampler integrates
dx/dg = eps(x). For eps(x) = lam * x the heavy-ball method is a linear map of
its state; its N-step result is a matrix power, evaluated here in float64 by
eigendecomposition -- no loop that mirrors the sampler's scan. beta = 0.3
(not 0.5) so that swapping beta and 1 - beta cannot pass.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divlab.diffusion import samplers
from divlab.diffusion import schedules

LAMBDAS = np.array([0.5, -1.0, 1.5, -0.25])
G = np.linspace(2.0, 0.4, 9)  # 8 equal steps of h = -0.2
H = G[1] - G[0]
X0 = np.array([1.0, -2.0, 0.5, 3.0])


def _grid():
  ones = np.ones_like(G)
  return schedules.SamplingGrid(t=jnp.asarray(np.linspace(1.0, 0.1, len(G)), jnp.float32),
                                alpha=jnp.asarray(ones, jnp.float32),
                                sigma=jnp.asarray(G, jnp.float32))


def _power(matrix, n):
  """matrix ** n by eigendecomposition (float64, complex-safe)."""
  values, vectors = np.linalg.eig(matrix)
  return np.real(vectors @ np.diag(values ** n) @ np.linalg.inv(vectors))


def _exact_order1(lam, beta, x0, n):
  """HB order 1: v_n = (1-b) v_{n-1} + b lam x_n, x_{n+1} = x_n + h v_n.

  State (x_n, v_{n-1}); v_0 = lam x_0 is reproduced by v_{-1} = lam x_0.
  """
  m = np.array([[1 + H * beta * lam, H * (1 - beta)],
                [beta * lam, 1 - beta]])
  return (_power(m, n) @ np.array([x0, lam * x0]))[0]


def _exact_order2(lam, beta, x0, n):
  """HB order 2: d_n = (3 eps_n - eps_{n-1}) / 2 after a first Euler step.

  Step 0: v_0 = eps_0, x_1 = x_0 + h lam x_0. From n = 1 the state
  (x_n, eps_{n-1}, v_{n-1}) evolves linearly.
  """
  x1 = x0 + H * lam * x0
  d_x, d_e = 1.5 * beta * lam, -0.5 * beta  # b * d_n in terms of x_n, eps_{n-1}
  m = np.array([[1 + H * d_x, H * d_e, H * (1 - beta)],
                [lam, 0.0, 0.0],
                [d_x, d_e, 1 - beta]])
  return (_power(m, n - 1) @ np.array([x1, lam * x0, lam * x0]))[0]


@pytest.fixture(scope="module")
def heavy_ball():
  eps_fn = lambda x, t: jnp.asarray(LAMBDAS, jnp.float32) * x
  return jax.jit(lambda x, grid, order, beta: samplers.plms_heavy_ball(
      eps_fn, x, grid, order, beta), static_argnums=(2, 3))


@pytest.mark.parametrize("order,exact", [(1, _exact_order1), (2, _exact_order2)])
@pytest.mark.parametrize("beta", [0.3, 0.8])
def test_heavy_ball_equals_the_exact_linear_recursion(heavy_ball, order, exact, beta):
  got = np.asarray(heavy_ball(jnp.asarray(X0, jnp.float32), _grid(), order, beta))
  n = len(G) - 1
  expected = np.array([exact(lam, beta, x0, n) for lam, x0 in zip(LAMBDAS, X0)])
  np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


def test_beta_one_is_explicit_euler_at_order_one(heavy_ball):
  got = np.asarray(heavy_ball(jnp.asarray(X0, jnp.float32), _grid(), 1, 1.0))
  np.testing.assert_allclose(got, X0 * (1 + H * LAMBDAS) ** (len(G) - 1), rtol=2e-5)
