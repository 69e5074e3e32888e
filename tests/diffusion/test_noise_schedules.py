"""VP schedules against closed forms, numerical integrals and explicit products."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate

from divlab.diffusion import schedules

TIMES = np.array([1e-3, 0.05, 0.3, 0.5, 0.77, 0.99])


def test_linear_alpha_is_exp_of_integrated_beta():
  sched = schedules.linear_schedule(0.1, 20.0)
  with jax.enable_x64(True):
    log_alpha = np.asarray(sched.log_alpha(jnp.asarray(TIMES)))
  for t, value in zip(TIMES, log_alpha):
    integral, _ = scipy.integrate.quad(lambda s: 0.1 + s * (20.0 - 0.1), 0.0, t)
    assert value == pytest.approx(-0.5 * integral, rel=1e-12)


def test_cosine_alpha_matches_nichol_dhariwal():
  s = 0.008
  sched = schedules.cosine_schedule(s)
  f = lambda u: np.cos(0.5 * np.pi * (u + s) / (1 + s)) ** 2
  with jax.enable_x64(True):
    alpha2 = np.asarray(sched.alpha(jnp.asarray(TIMES))) ** 2
  np.testing.assert_allclose(alpha2, f(TIMES) / f(0.0), rtol=1e-12)


@pytest.mark.parametrize("sched", [
    schedules.linear_schedule(),
    schedules.cosine_schedule(),
    schedules.discrete_schedule(schedules.ddpm_linear_alphas_cumprod(1000)),
], ids=["linear", "cosine", "discrete"])
def test_alpha_sigma_lambda_and_inverse(sched):
  with jax.enable_x64(True):
    t = jnp.linspace(sched.t_min, sched.t_max, 37)
    alpha, sigma, lam = sched.alpha(t), sched.sigma(t), sched.lambda_t(t)
    np.testing.assert_allclose(alpha ** 2 + sigma ** 2, 1.0, atol=1e-12)
    np.testing.assert_allclose(lam, np.log(np.asarray(alpha) / np.asarray(sigma)), atol=1e-9)
    assert np.all(np.diff(np.asarray(lam)) < 0)  # lambda decreases with t
    np.testing.assert_allclose(sched.t_from_lambda(lam), t, atol=1e-9)


def test_discrete_schedule_hits_its_steps():
  n = 1000
  betas = np.linspace(1e-4, 0.02, n)
  expected = np.empty(n)
  running = 1.0
  for i in range(n):  # explicit running product, independent of np.cumprod
    running *= 1.0 - betas[i]
    expected[i] = running
  abar = schedules.ddpm_linear_alphas_cumprod(n)
  np.testing.assert_allclose(abar, expected, rtol=1e-12)
  sched = schedules.discrete_schedule(abar)
  steps = np.array([0, 1, 250, 999])
  with jax.enable_x64(True):
    alpha = np.asarray(sched.alpha(jnp.asarray((steps + 1) / n)))
  np.testing.assert_allclose(alpha ** 2, expected[steps], rtol=1e-12)
  assert (sched.t_min, sched.t_max) == (1.0 / n, 1.0)


def test_discrete_schedule_interpolates_log_alpha_linearly_between_steps():
  # The docstring's embedding: step n at t_n = (n + 1) / N, log alpha linear in
  # t between steps (the steps themselves: test_discrete_schedule_hits_its_steps).
  n = 50
  betas = np.linspace(1e-3, 0.2, n)
  half_log_abar = 0.5 * np.cumsum(np.log1p(-betas))  # log alpha at each step
  sched = schedules.discrete_schedule(np.exp(2.0 * half_log_abar))
  k = np.array([0, 3, 17, 48])  # between steps k and k + 1
  fraction = np.array([0.5, 0.25, 0.9, 0.01])
  t = (k + 1 + fraction) / n
  expected = (1 - fraction) * half_log_abar[k] + fraction * half_log_abar[k + 1]
  with jax.enable_x64(True):
    got = np.asarray(sched.log_alpha(jnp.asarray(t)))
  np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_discrete_ddpm_is_close_to_continuous_linear():
  # Sum of -log(1 - beta_m) vs the integral of beta(t): they differ by the
  # Riemann-sum offset and sum beta_m^2 / 2 (< 0.07 here), a few percent at most.
  n = 1000
  discrete = schedules.discrete_schedule(schedules.ddpm_linear_alphas_cumprod(n))
  continuous = schedules.linear_schedule(0.1, 20.0)
  with jax.enable_x64(True):
    t = jnp.linspace(0.1, 1.0, 10)
    np.testing.assert_allclose(discrete.log_alpha(t), continuous.log_alpha(t), rtol=0.02)


def test_cosine_discrete_telescopes_to_closed_form():
  n, s = 200, 0.008
  abar = schedules.cosine_alphas_cumprod(n, s=s, max_beta=0.999)
  u = np.arange(1, n + 1) / n
  f = lambda v: np.cos(0.5 * np.pi * (v + s) / (1 + s)) ** 2
  closed = f(u) / f(0.0)
  # Away from the clipped last steps the product telescopes exactly.
  np.testing.assert_allclose(abar[: n - 5], closed[: n - 5], rtol=1e-10)


def test_time_uniform_grid():
  sched = schedules.linear_schedule()
  grid = schedules.sampling_grid(sched, 8)
  t = np.asarray(grid.t)
  assert t.shape == (9,) and grid.num_steps == 8
  np.testing.assert_allclose(t[[0, -1]], [1.0, 1e-3], rtol=1e-6)
  np.testing.assert_allclose(np.diff(t), (1e-3 - 1.0) / 8, rtol=1e-5)
  np.testing.assert_allclose(grid.alpha, sched.alpha(grid.t), rtol=1e-6)
  np.testing.assert_allclose(grid.sigma, sched.sigma(grid.t), rtol=1e-6)


@pytest.mark.parametrize("sched", [schedules.linear_schedule(), schedules.cosine_schedule()],
                         ids=["linear", "cosine"])
def test_logsnr_grid_is_uniform_in_lambda(sched):
  with jax.enable_x64(True):
    grid = schedules.sampling_grid(sched, 12, "logsnr", dtype=jnp.float64)
    lam = np.asarray(grid.lambda_t)
    start, end = float(sched.lambda_t(sched.t_max)), float(sched.lambda_t(sched.t_min))
  np.testing.assert_allclose(lam, np.linspace(start, end, 13), atol=1e-9)


def test_bad_arguments_raise():
  sched = schedules.linear_schedule()
  with pytest.raises(ValueError, match="num_steps"):
    schedules.sampling_grid(sched, 0)
  with pytest.raises(ValueError, match="spacing"):
    schedules.sampling_grid(sched, 4, "quadratic")
  with pytest.raises(ValueError, match="t_end"):
    schedules.sampling_grid(sched, 4, t_start=0.2, t_end=0.5)
  with pytest.raises(ValueError, match="beta_max"):
    schedules.linear_schedule(0.1, 0.05)
  with pytest.raises(ValueError, match="t_max"):
    schedules.cosine_schedule(t_max=1.0)
  with pytest.raises(ValueError, match="alphas_cumprod"):
    schedules.discrete_schedule(np.array([0.5, 0.9]))
  with pytest.raises(ValueError, match="schedule"):
    schedules.sampling_grid("linear", 4)
  assert math.isfinite(float(sched.lambda_t(0.5)))
