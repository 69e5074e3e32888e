"""Samplers against exact solutions, an independent numpy transcription, and each other.

* Single Gaussian data N(mu, diag(v)): the probability-flow ODE keeps
  (x_t - alpha_t mu) / sqrt(alpha_t^2 v + sigma_t^2) constant, so its exact
  solution is known; errors against it give each solver's convergence order.
* A float64 numpy transcription of the authors' algorithms (PLMS with HB,
  GHVB, DPM-Solver++(2M) with HB), with their hard-coded weights and warm-up,
  must reproduce the samplers step for step.
* beta = 1 must give the base solver bit for bit.
* DDIM with many steps on a 2-D mixture must reproduce the mixture's moments.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divlab.diffusion import gmm
from divlab.diffusion import samplers
from divlab.diffusion import schedules

import numpy_solvers  # tests/diffusion/numpy_solvers.py
from numpy_solvers import MU, VAR, numpy_alpha_sigma, reference_dpmpp_2m, reference_eps_solver

SCHEDULE = schedules.linear_schedule(0.1, 20.0)
GAUSSIAN = gmm.gaussian_mixture([1.0], MU[None], VAR[None])
GAUSSIAN_EPS = gmm.mixture_eps_fn(GAUSSIAN, SCHEDULE)

_run = jax.jit(samplers.sample_on_grid,
               static_argnames=("name", "eps_fn", "lower_order_final", "return_trajectory"))
# One compiled program per grid instead of one per primitive.
_grid = jax.jit(schedules.sampling_grid, static_argnums=(0, 1, 2), static_argnames=("dtype",))


def exact_flow(x, t_start, t_end):
  a0, s0 = numpy_alpha_sigma(t_start)
  a1, s1 = numpy_alpha_sigma(t_end)
  return a1 * MU + (x - a0 * MU) * np.sqrt(a1 ** 2 * VAR + s1 ** 2) / np.sqrt(a0 ** 2 * VAR + s0 ** 2)


STEP_COUNTS = (40, 160)
_X64_CACHE = {}


@jax.jit(static_argnames="name")
def _solve_both_step_counts(name, x_T, grids):
  return [samplers.sample_on_grid(name, GAUSSIAN_EPS, x_T, grid) for grid in grids]


def run_x64(name, num_steps):
  """Samples 16 points of the Gaussian problem at float64 on a logSNR grid.

  Both step counts run in one compiled program per solver.
  """
  if name not in _X64_CACHE:
    with jax.enable_x64(True):
      grids = [_grid(SCHEDULE, n, "logsnr", dtype=jnp.float64) for n in STEP_COUNTS]
      x_T = jax.random.normal(jax.random.key(0), (16, 2), jnp.float64)
      outs = _solve_both_step_counts(name, x_T, grids)
      _X64_CACHE[name] = {n: (np.asarray(out), np.asarray(x_T), np.asarray(grid.t))
                          for n, out, grid in zip(STEP_COUNTS, outs, grids)}
  return _X64_CACHE[name][num_steps]


# ----------------------------------------------------------------------------
# Convergence order on the exact probability-flow ODE.

# Expected global orders. PLMS4 / GHVB3.8 are 4th-order formulas, but the
# lower-order warm-up (a first Euler step with local error O(h^2)) and the
# velocity starting at the first eps cap the global order at 2; the weights
# themselves are checked to order k in test_multistep_coefficients.
ORDERS = {
    "ddim": 1, "plms2": 2, "plms4": 2, "hb3.8": 1, "ghvb1.5": 2, "ghvb3.8": 2,
    "dpmpp2m": 2, "dpmpp2m_hb0.8": 1,
}


def max_error(name, num_steps):
  out, x_T, t = run_x64(name, num_steps)
  return np.max(np.abs(out - exact_flow(x_T, t[0], t[-1])))


@pytest.mark.parametrize("name", sorted(ORDERS))
def test_convergence_order(name):
  slope = math.log(max_error(name, 40) / max_error(name, 160)) / math.log(4.0)
  assert slope == pytest.approx(ORDERS[name], abs=0.25)


# ----------------------------------------------------------------------------
# Step-for-step agreement with a numpy transcription of the authors' algorithms.

# The transcriptions live in numpy_solvers.py (shared with test_padded_sampling).


@pytest.mark.parametrize("name,kind,order,beta", [
    ("plms4", "hb", 4, 1.0), ("hb3.8", "hb", 4, 0.8), ("ghvb3.8", "ghvb", 4, 0.8),
    ("ghvb1.5", "ghvb", 2, 0.5),
])
def test_eps_solvers_match_numpy_transcription(name, kind, order, beta):
  out, x_T, t = run_x64(name, 40)
  np.testing.assert_allclose(out, reference_eps_solver(kind, order, beta, x_T, t), rtol=1e-10)


@pytest.mark.parametrize("name,beta", [("dpmpp2m", 1.0), ("dpmpp2m_hb0.8", 0.8)])
def test_dpm_solver_matches_numpy_transcription(name, beta):
  out, x_T, t = run_x64(name, 40)
  np.testing.assert_allclose(out, reference_dpmpp_2m(beta, x_T, t), rtol=1e-10)


# ----------------------------------------------------------------------------
# beta = 1 reproduces the base solver bit for bit (float32, a 2-D mixture).

MIXTURE = numpy_solvers.three_component_mixture()
MIXTURE_EPS = gmm.mixture_eps_fn(MIXTURE, SCHEDULE)


X_MIXTURE = jax.random.normal(jax.random.key(1), (64, 2))
GRID_12 = _grid(SCHEDULE, 12, "time_uniform")


@pytest.mark.parametrize("base,momentum_solver", [
    ("plms4", lambda x, g: samplers.plms_heavy_ball(MIXTURE_EPS, x, g, 4, 1.0,
                                                    return_trajectory=True)),
    ("plms4", lambda x, g: samplers.ghvb(MIXTURE_EPS, x, g, 4, 1.0, return_trajectory=True)),
    ("dpmpp2m", lambda x, g: samplers.dpm_solver_pp_2m(MIXTURE_EPS, x, g, beta=1.0,
                                                       return_trajectory=True)),
], ids=["hb4", "ghvb4", "dpmpp2m_hb1"])
def test_beta_one_is_the_base_solver_bit_for_bit(base, momentum_solver):
  out_m, traj_m = jax.jit(momentum_solver)(X_MIXTURE, GRID_12)
  out_b, traj_b = _run(base, MIXTURE_EPS, X_MIXTURE, GRID_12, return_trajectory=True)
  np.testing.assert_array_equal(np.asarray(traj_m), np.asarray(traj_b))
  np.testing.assert_array_equal(np.asarray(out_m), np.asarray(out_b))
  assert traj_m.shape == (13, 64, 2)
  np.testing.assert_array_equal(np.asarray(traj_m[0]), np.asarray(X_MIXTURE))
  np.testing.assert_array_equal(np.asarray(traj_m[-1]), np.asarray(out_m))


def test_sample_builds_the_grid_from_num_steps():
  # `sample` builds the grid from num_steps (time-uniform for PLMS-type
  # solvers); built inside another compiled program, the grid may differ in its
  # last bit, hence the float32-level tolerance.
  via_sample = jax.jit(lambda x: samplers.sample("plms4", MIXTURE_EPS, x, 12))(X_MIXTURE)
  on_grid, _ = _run("plms4", MIXTURE_EPS, X_MIXTURE, GRID_12, return_trajectory=True)
  np.testing.assert_allclose(np.asarray(via_sample), np.asarray(on_grid), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------
# Many DDIM steps land on the mixture (unconditional and class-conditional).


def mixture_moments(weights):
  means, covs = np.asarray(MIXTURE.means, np.float64), np.asarray(MIXTURE.covs, np.float64)
  mean = weights @ means
  second = sum(w * (c + np.outer(m, m)) for w, m, c in zip(weights, means, covs))
  return mean, second - np.outer(mean, mean)


def assert_moments_within_standard_errors(samples, weights, num_sigmas=5.0):
  samples = np.asarray(samples, np.float64)
  n = samples.shape[0]
  mean, cov = mixture_moments(weights)
  np.testing.assert_array_less(np.abs(samples.mean(0) - mean),
                               num_sigmas * np.sqrt(np.diag(cov) / n))
  centred = samples - mean
  products = centred[:, :, None] * centred[:, None, :]
  np.testing.assert_array_less(np.abs(products.mean(0) - cov),
                               num_sigmas * products.std(axis=0) / np.sqrt(n))


@pytest.mark.parametrize("label", [None, 1])
def test_ddim_many_steps_lands_on_the_mixture(label):
  # 200 DDIM steps: the discretisation bias is well below the Monte Carlo
  # error of 20000 samples. With a label, guidance w = 1 = the class model.
  if label is None:
    eps_fn, weights = MIXTURE_EPS, np.array([0.3, 0.5, 0.2])
  else:
    eps_fn = gmm.guided_mixture_eps_fn(MIXTURE, SCHEDULE, label, 1.0)
    weights = np.array([0.0, 0.5, 0.2]) / 0.7
  grid = _grid(SCHEDULE, 200, "time_uniform")
  x_T = jax.random.normal(jax.random.key(2), (20000, 2))
  assert_moments_within_standard_errors(_run("ddim", eps_fn, x_T, grid), weights)


def test_bad_inputs_raise():
  grid = schedules.sampling_grid(SCHEDULE, 4)
  x_T = jnp.zeros((3, 2))
  with pytest.raises(ValueError, match="name"):
    samplers.sample_on_grid("rk4", MIXTURE_EPS, x_T, grid)
  with pytest.raises(ValueError, match="x_T"):
    samplers.ddim(MIXTURE_EPS, jnp.zeros((3, 2), jnp.int32), grid)
  with pytest.raises(ValueError, match="eps_fn"):
    samplers.ddim(lambda x, t: x[:, :1], x_T, grid)
  with pytest.raises(ValueError, match="grid"):
    samplers.ddim(MIXTURE_EPS, x_T, (grid.t, grid.alpha))
  with pytest.raises(ValueError, match="beta"):
    samplers.ghvb(MIXTURE_EPS, x_T, grid, 4, 1.5)
  with pytest.raises(ValueError, match="beta"):
    samplers.dpm_solver_pp_2m(MIXTURE_EPS, x_T, grid, beta=0.0)
