"""The step count as data: padded grids, `num_steps`, and one program per solver.

A grid padded to a common length with `num_steps = n` must give what the
n-step grid gives, for every solver of the sweep config and step counts below,
at and after the multistep warm-up (n < order). Checked three ways:

* float64 against a numpy transcription of the solvers (closed-form eps of a
  Gaussian, coefficients written out as fractions), rtol 1e-10 as in
  test_diffusion_samplers (a few float64 roundings per step, no cancellation);
* float32 against the same jitted solver on the unpadded grid, bit for bit:
  the padding steps are never run and the first n steps are the same
  operations on the same values, so there is no rounding to allow for;
* the sweep on the smoke config compiles one sampler per solver.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.diffusion_sampling import gmm as gmm_config
from divlab.diffusion import gmm
from divlab.diffusion import samplers
from divlab.diffusion import schedules
from experiments.diffusion_sampling import experiment

import numpy_solvers  # tests/diffusion/numpy_solvers.py
from numpy_solvers import MU, VAR, reference_dpmpp_2m, reference_eps_solver

SOLVERS = gmm_config.SOLVERS
SCHEDULE = schedules.linear_schedule(0.1, 20.0)
MAX_STEPS = 8
STEP_COUNTS = (1, 2, 3, 5, 8)  # 1-3: inside the order-4 warm-up; 8: no padding

# (kind, order k, beta) of each name, written out rather than parsed.
SPECS = {
    "ddim": ("hb", 1, 1.0), "plms4": ("hb", 4, 1.0), "hb3.8": ("hb", 4, 0.8),
    "hb3.9": ("hb", 4, 0.9), "ghvb3.8": ("ghvb", 4, 0.8), "dpmpp2m": ("dpm", 2, 1.0),
    "dpmpp2m_hb0.8": ("dpm", 2, 0.8),
}


def test_every_config_solver_is_covered():
  assert set(SOLVERS) <= set(SPECS)


def _grid(num_steps, spacing, max_steps=None, dtype=jnp.float32):
  grid = jax.jit(schedules.sampling_grid, static_argnums=(0, 1, 2),
                 static_argnames=("dtype",))(SCHEDULE, num_steps, spacing, dtype=dtype)
  return grid if max_steps is None else schedules.pad_grid(grid, max_steps)


def _padded_program(name, eps_fn, lower_order_final=False):
  """One jitted sampler whose grid and step count are arguments."""
  return jax.jit(lambda x, grid, n: samplers.sample_on_grid(
      name, eps_fn, x, grid, num_steps=n, lower_order_final=lower_order_final,
      return_trajectory=True))


# ----------------------------------------------------------------------------
# float64 against a numpy transcription.

GAUSSIAN_EPS = gmm.mixture_eps_fn(gmm.gaussian_mixture([1.0], MU[None], VAR[None]), SCHEDULE)


def _reference(name, x, t, lower_order_final=False):
  kind, order, beta = SPECS[name]
  if kind == "dpm":
    return reference_dpmpp_2m(beta, x, t, lower_order_final)
  return reference_eps_solver(kind, order, beta, x, t)


@pytest.mark.parametrize("name", SOLVERS)
def test_padded_float64_matches_numpy_transcription(name):
  lower_order_final = name == "dpmpp2m"  # its last-step switch must follow num_steps
  spacing = samplers.default_spacing(name)
  with jax.enable_x64(True):
    x_T = jax.random.normal(jax.random.key(0), (16, 2), jnp.float64)
    run = _padded_program(name, GAUSSIAN_EPS, lower_order_final)
    for n in STEP_COUNTS:
      grid = _grid(n, spacing, MAX_STEPS, jnp.float64)
      out, trajectory = run(x_T, grid, n)
      t = np.asarray(grid.t[: n + 1])
      expected = _reference(name, np.asarray(x_T), t, lower_order_final)
      np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-10, atol=1e-12)
      assert trajectory.shape == (MAX_STEPS + 1, 16, 2)
      # Rows past the last step repeat the sample.
      np.testing.assert_array_equal(np.asarray(trajectory[n:]),
                                    np.broadcast_to(np.asarray(out), (MAX_STEPS + 1 - n, 16, 2)))
    assert run._cache_size() == 1


# ----------------------------------------------------------------------------
# float32, bit for bit against the unpadded grid.

MIXTURE = numpy_solvers.three_component_mixture()
MIXTURE_EPS = gmm.mixture_eps_fn(MIXTURE, SCHEDULE)
X_MIXTURE = jax.random.normal(jax.random.key(1), (64, 2))

_unpadded = jax.jit(samplers.sample_on_grid,
                    static_argnames=("name", "eps_fn", "lower_order_final", "return_trajectory"))


@pytest.mark.parametrize("name", SOLVERS)
def test_padded_float32_is_the_unpadded_run_bit_for_bit(name):
  spacing = samplers.default_spacing(name)
  run = _padded_program(name, MIXTURE_EPS)
  for n in STEP_COUNTS:
    grid = _grid(n, spacing)
    padded = schedules.pad_grid(grid, MAX_STEPS)
    for a, b in zip(padded, grid):
      np.testing.assert_array_equal(np.asarray(a[: n + 1]), np.asarray(b))
    out, trajectory = run(X_MIXTURE, padded, n)
    ref_out, ref_trajectory = _unpadded(name, MIXTURE_EPS, X_MIXTURE, grid,
                                        return_trajectory=True)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref_out))
    np.testing.assert_array_equal(np.asarray(trajectory[: n + 1]), np.asarray(ref_trajectory))
  assert run._cache_size() == 1


@pytest.mark.parametrize("name", ["plms4", "dpmpp2m_hb0.8"])
def test_vmap_over_step_counts_matches_one_at_a_time(name):
  """A batch of step counts in one call (the loop runs to the largest; the
  others keep their state). Compared with the numpy float64 transcription at
  float32 accuracy: rtol 1e-4 covers ~1e-7 roundings over <= 8 steps amplified
  by PLMS4's warm-up at 1-3 steps."""
  spacing = samplers.default_spacing(name)
  eps_fn = gmm.mixture_eps_fn(gmm.gaussian_mixture([1.0], MU[None], VAR[None]), SCHEDULE)
  grids = [_grid(n, spacing, MAX_STEPS) for n in STEP_COUNTS]
  stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *grids)
  x_T = jax.random.normal(jax.random.key(2), (16, 2))
  batched = jax.jit(jax.vmap(lambda grid, n: samplers.sample_on_grid(
      name, eps_fn, x_T, grid, num_steps=n)))(stacked, jnp.asarray(STEP_COUNTS))
  for k, n in enumerate(STEP_COUNTS):
    expected = _reference(name, np.asarray(x_T, np.float64),
                          np.asarray(grids[k].t[: n + 1], np.float64))
    np.testing.assert_allclose(np.asarray(batched[k]), expected, rtol=1e-4, atol=1e-5)


def test_sample_and_default_spacing_unchanged():
  """`sample` still builds its own grid: 'logsnr' for DPM-Solver++, else uniform in t."""
  assert samplers.default_spacing("dpmpp2m_hb0.8") == "logsnr"
  assert samplers.default_spacing("ghvb3.8") == "time_uniform"
  with jax.enable_x64(True):
    x_T = jax.random.normal(jax.random.key(3), (8, 2), jnp.float64)
    out = samplers.sample("hb3.8", GAUSSIAN_EPS, x_T, 6, schedule=SCHEDULE)
    t = np.linspace(SCHEDULE.t_max, SCHEDULE.t_min, 7)
    np.testing.assert_allclose(np.asarray(out), _reference("hb3.8", np.asarray(x_T), t),
                               rtol=1e-10)


def test_padded_sampling_grid_is_the_time_grid_then_its_last_time():
  # Time-uniform: t_i = t_max + i (t_min - t_max) / n for i <= n, then t_min
  # repeated (zero-length padding steps); alpha and sigma of the linear
  # schedule from its closed form, log alpha = -t^2 (b1 - b0) / 4 - t b0 / 2.
  n, t_min = 5, SCHEDULE.t_min
  with jax.enable_x64(True):
    grid = schedules.padded_sampling_grid(SCHEDULE, n, MAX_STEPS, dtype=jnp.float64)
  t = np.concatenate([1.0 + np.arange(n + 1) * (t_min - 1.0) / n,
                      np.full(MAX_STEPS - n, t_min)])
  log_alpha = -0.25 * t ** 2 * (20.0 - 0.1) - 0.5 * t * 0.1
  np.testing.assert_allclose(np.asarray(grid.t), t, rtol=1e-12)
  np.testing.assert_allclose(np.asarray(grid.alpha), np.exp(log_alpha), rtol=1e-12)
  np.testing.assert_allclose(np.asarray(grid.sigma), np.sqrt(-np.expm1(2 * log_alpha)),
                             rtol=1e-12)


def test_bad_inputs_raise():
  grid = _grid(5, "time_uniform")
  with pytest.raises(ValueError, match="max_steps"):
    schedules.pad_grid(grid, 4)
  with pytest.raises(ValueError, match="max_steps"):
    schedules.pad_grid(grid, 6.0)
  with pytest.raises(ValueError, match="grid"):
    schedules.pad_grid(tuple(grid), 6)
  for bad in (0, 6, True):
    with pytest.raises(ValueError, match="num_steps"):
      samplers.sample_on_grid("plms4", MIXTURE_EPS, X_MIXTURE, grid, num_steps=bad)
  for bad in (jnp.asarray([3]), jnp.asarray(3.0)):
    with pytest.raises(ValueError, match="num_steps"):
      samplers.sample_on_grid("dpmpp2m", MIXTURE_EPS, X_MIXTURE, grid, num_steps=bad)
  with pytest.raises(ValueError, match="name"):
    samplers.default_spacing("rk4")


# ----------------------------------------------------------------------------
# The sweep compiles one sampler per solver.

def test_sweep_compiles_one_sampler_per_solver(tmp_path, monkeypatch):
  config = gmm_config.get_config("smoke")
  config.solvers = ("ddim", "plms4", "dpmpp2m")
  config.nfes = (3, 4, 5)
  created = []
  make_sampler = experiment._sampler

  def recording_sampler(problem, solver):
    program = make_sampler(problem, solver)
    created.append((problem["name"], solver, program))
    return program

  monkeypatch.setattr(experiment, "_sampler", recording_sampler)
  rows = experiment.run(config, tmp_path)
  assert len(rows) == len(config.models) * 3 * 3 * len(config.guidance)
  # One program per (problem, solver); DDIM's also computed the reference.
  assert sorted((m, s) for m, s, _ in created) == sorted(
      (m, s) for m in config.models for s in config.solvers)
  for _, _, program in created:
    assert program._cache_size() == 1
