"""Deterministic diffusion samplers: DDIM, PLMS, heavy-ball PLMS, GHVB, DPM-Solver++(2M).

Every sampler is a pure `lax.scan` (a `lax.while_loop` when the step count is
data, below) over the steps of a `SamplingGrid` and calls
a noise predictor `eps_fn(x, t)`: `x` has the shape of `x_T` (`[B, ...]`) and
`t` is the grid's continuous time, a 0-d float array shared by the batch (see
`schedules`). It returns the sample at the last grid time and, on request, the
trajectory `[N + 1, *x_T.shape]` (x_T first).

The eps-based multistep solvers work on the ODE dx_bar/dg = eps with
x_bar = x / alpha_t and g_t = sigma_t / alpha_t (Song et al. 2021; the "sigma
ODE" of Wizadwongsa et al. 2023). With s = alpha, one step from s to t is

    x_t = (x_s / alpha_s + (g_t - g_s) d) alpha_t,

where d is the combined direction of the method:
  DDIM / PLMS1: d = eps_n (exactly DDIM with eta = 0).
  PLMS k:       d = sum_i c_i eps_{n-i}, Adams-Bashforth weights.
  HB (k, beta): v <- (1 - beta) v + beta sum_i c_i eps_{n-i}; d = v.
  GHVB (k, beta): v <- (1 - beta) v + beta eps_n; d = sum_i c_i^GHVB(beta) v_{n-i}.
The velocity starts at the first eps. The first k - 1 steps (too few past
values) use the same family at order 1, 2, ... (lower-order warm-up, as in the
authors' code; `multistep.multistep_coefficients`). The weights assume equal
steps in the integration variable, as PLMS does; on a grid that is not uniform
in g (e.g. uniform in t) the global order is at most 2.

DPM-Solver++(2M) (Lu et al. 2022) uses the data prediction m = (x - sigma eps)/alpha
and h = lambda_t - lambda_s:

    D = m_n + (m_n - m_{n-1}) / (2 r),  r = h_{n-1} / h_n,
    x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) D,

with a first-order first step (D = m_0). Its heavy-ball variant replaces D by
v <- (1 - beta) v + beta D on the second-order steps, v starting at the first
such D (the authors' `MomentumDPMSolverMultistepScheduler`).

The step count can be data: `sample_on_grid(..., num_steps=n)` on a grid padded
to a common length (`schedules.padded_sampling_grid`) runs the step function
in a `lax.while_loop` over the first n steps only, so one compiled program
serves every n and reproduces the n-step grid bit for bit (the warm-up rows
and velocity starts are indexed by the step number, which padding at the end
leaves unchanged). A masked `lax.scan` over the padded grid (`jnp.where` on
the carry) would also be exact but evaluates eps on the padding; a `lax.cond`
per step skips it but changes XLA's fusion of eps_fn and its last bits.

beta = 1 runs exactly the arithmetic of the base solver: the momentum update is
skipped by a static Python branch and GHVB's weights at beta = 1 are the same
floats as Adams-Bashforth's.

References:
  Song, Meng, Ermon. Denoising Diffusion Implicit Models (2021).
  Liu et al. Pseudo Numerical Methods for Diffusion Models on Manifolds (2022).
  Lu et al. DPM-Solver++: Fast Solver for Guided Sampling (2022).
  Wizadwongsa et al. Diffusion Sampling with Momentum for Mitigating Divergence
  Artifacts (ICLR 2024), Algorithms 1-2 and the released schedulers.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from divlab.diffusion import multistep
from divlab.diffusion import schedules as schedules_lib

__all__ = [
    "ddim",
    "plms",
    "plms_heavy_ball",
    "ghvb",
    "dpm_solver_pp_2m",
    "sample_on_grid",
    "sample",
    "default_spacing",
]

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]


def _prepare(eps_fn: EpsFn, x_T: jax.typing.ArrayLike,
             grid: schedules_lib.SamplingGrid):
  if not callable(eps_fn):
    raise ValueError(f"`eps_fn` must be callable, got {type(eps_fn).__name__}.")
  if not isinstance(grid, schedules_lib.SamplingGrid):
    raise ValueError(f"`grid` must be a SamplingGrid, got {type(grid).__name__}.")
  x_T = jnp.asarray(x_T)
  if not jnp.issubdtype(x_T.dtype, jnp.floating):
    raise ValueError(f"`x_T` must have a floating dtype, got {x_T.dtype}.")
  if grid.t.ndim != 1 or grid.t.shape[0] < 2:
    raise ValueError(f"`grid` must hold at least 2 times, got shape {grid.t.shape}.")
  grid = jax.tree_util.tree_map(lambda a: jnp.asarray(a, x_T.dtype), grid)
  out = jax.eval_shape(eps_fn, x_T, grid.t[0])
  if out.shape != x_T.shape:
    raise ValueError(
        f"`eps_fn` must return the shape of x, {x_T.shape}, got {out.shape}.")
  return x_T, grid


def _active_steps(num_steps, grid_steps: int):
  """`num_steps` checked: None (take every grid step) or a 0-d integer, maybe traced."""
  if num_steps is None:
    return None
  if isinstance(num_steps, (bool, np.bool_)):
    raise ValueError(f"`num_steps` must be an integer, got {num_steps!r}.")
  if isinstance(num_steps, (int, np.integer)):
    if not 1 <= num_steps <= grid_steps:
      raise ValueError(
          f"`num_steps` must lie in [1, {grid_steps}] (the grid's steps), got {num_steps!r}.")
    return jnp.asarray(num_steps, jnp.int32)
  num_steps = jnp.asarray(num_steps)
  if num_steps.ndim != 0 or not jnp.issubdtype(num_steps.dtype, jnp.integer):
    raise ValueError(
        f"`num_steps` must be a 0-d integer, got shape {num_steps.shape} {num_steps.dtype}.")
  return num_steps


def _scan_steps(advance, carry0, inputs, num_steps, return_trajectory):
  """Runs `advance(carry, inp) -> carry` over the steps; carry[0] is x.

  With `num_steps` None: a `lax.scan` over every row of `inputs`. With
  `num_steps` (possibly traced): a `lax.while_loop` over the first num_steps
  rows only -- the same per-step arithmetic (a scan is this loop with a
  static trip count), nothing evaluated on the padding; the trajectory rows
  from num_steps on repeat the final state. Under a vmap over num_steps the
  loop runs to the largest count and keeps each member's carry once it is done.
  """
  if num_steps is None:

    def step(carry, inp):
      carry = advance(carry, inp)
      return carry, (carry[0] if return_trajectory else None)

    return jax.lax.scan(step, carry0, inputs)

  length = inputs[0].shape[0]
  x0 = carry0[0]
  trajectory0 = (jnp.zeros((length,) + x0.shape, x0.dtype) if return_trajectory else None)

  def body(state):
    i, carry, trajectory = state
    inp = jax.tree_util.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False),
                                 inputs)
    carry = advance(carry, inp)
    if return_trajectory:
      trajectory = jax.lax.dynamic_update_index_in_dim(trajectory, carry[0], i, 0)
    return i + 1, carry, trajectory

  last = jnp.minimum(num_steps, length)
  _, carry, trajectory = jax.lax.while_loop(lambda state: state[0] < last, body,
                                            (jnp.zeros((), last.dtype), carry0, trajectory0))
  if return_trajectory:
    done = (jnp.arange(length) >= last).reshape((length,) + (1,) * x0.ndim)
    trajectory = jnp.where(done, carry[0][None], trajectory)
  return carry, trajectory


def _finish(x, trajectory, x_T, return_trajectory):
  if not return_trajectory:
    return x
  return x, jnp.concatenate([x_T[None], trajectory], axis=0)


def _eps_multistep(eps_fn: EpsFn, x_T, grid, family: str, order: int, beta: float,
                   return_trajectory: bool, num_steps=None):
  """The shared scan of DDIM / PLMS / HB / GHVB (module docstring)."""
  x_T, grid = _prepare(eps_fn, x_T, grid)
  num_active = _active_steps(num_steps, grid.t.shape[0] - 1)
  dtype = x_T.dtype
  # Static: beta = 1 takes exactly the base solver's arithmetic.
  momentum = beta != 1.0
  if family == "ghvb" and not momentum:
    family = "plms"
  if family == "hb" and not momentum:
    family = "plms"
  table = jnp.asarray(multistep.multistep_coefficients(family, order, beta), dtype)
  beta_arr = jnp.asarray(beta, dtype)

  g = grid.sigma / grid.alpha
  num_steps = grid.t.shape[0] - 1
  inputs = (jnp.arange(num_steps), grid.t[:-1], grid.alpha[:-1], grid.alpha[1:], g[1:] - g[:-1])

  def advance(carry, inp):
    x, history, velocity = carry
    i, t, alpha_s, alpha_t, delta_g = inp
    eps = eps_fn(x, t)
    if family == "ghvb":
      velocity = jnp.where(i == 0, eps, (1 - beta_arr) * velocity + beta_arr * eps)
      newest = velocity
    else:
      newest = eps
    # Newest first, so row r of the warm-up table lines up with it.
    history = jnp.concatenate([newest[None], history[:-1]], axis=0)
    weights = table[jnp.minimum(i, order - 1)]
    direction = jnp.tensordot(weights, history, axes=1)
    if family == "hb":
      velocity = jnp.where(i == 0, direction, (1 - beta_arr) * velocity + beta_arr * direction)
      direction = velocity
    x_next = (x / alpha_s + delta_g * direction) * alpha_t
    return x_next, history, velocity

  history0 = jnp.zeros((order,) + x_T.shape, dtype)
  (x, _, _), trajectory = _scan_steps(advance, (x_T, history0, jnp.zeros_like(x_T)), inputs,
                                      num_active, return_trajectory)
  return _finish(x, trajectory, x_T, return_trajectory)


def ddim(eps_fn: EpsFn, x_T: jax.typing.ArrayLike, grid: schedules_lib.SamplingGrid, *,
         return_trajectory: bool = False):
  """Deterministic DDIM (eta = 0): x_t = alpha_t x0_hat + sigma_t eps.

  Written as x_t = (x_s / alpha_s + (g_t - g_s) eps(x_s, s)) alpha_t with
  g = sigma / alpha, which is the same update (Song et al. 2021) and PLMS order 1.

  Args:
    eps_fn: noise predictor `eps_fn(x, t)`, t a 0-d continuous time.
    x_T: `[B, ...]` starting noise at grid.t[0].
    grid: the `SamplingGrid`.
    return_trajectory: also return `[N + 1, B, ...]` states.

  Returns:
    `[B, ...]` sample at grid.t[-1] (and the trajectory when asked).
  """
  return _eps_multistep(eps_fn, x_T, grid, "plms", 1, 1.0, return_trajectory)


def plms(eps_fn: EpsFn, x_T: jax.typing.ArrayLike, grid: schedules_lib.SamplingGrid,
         order: int = 4, *, return_trajectory: bool = False):
  """PLMS: Adams-Bashforth of order k on eps, d = sum_i c_i eps_{n-i} (Liu et al. 2022).

  Warm-up: step n < k - 1 uses Adams-Bashforth of order n + 1 (not PNDM's
  pseudo Runge-Kutta steps), as the momentum paper's code does. Order 1 is DDIM.

  Args:
    eps_fn: noise predictor `eps_fn(x, t)`.
    x_T: `[B, ...]` starting noise.
    grid: the `SamplingGrid`.
    order: k in [1, MAX_ORDER].
    return_trajectory: also return the `[N + 1, B, ...]` states.

  Returns:
    `[B, ...]` sample (and the trajectory when asked).
  """
  return _eps_multistep(eps_fn, x_T, grid, "plms", order, 1.0, return_trajectory)


def plms_heavy_ball(eps_fn: EpsFn, x_T: jax.typing.ArrayLike, grid: schedules_lib.SamplingGrid,
                    order: int, beta: float, *, return_trajectory: bool = False):
  """PLMS with Polyak heavy ball (HB): v <- (1 - beta) v + beta AB_k(eps); d = v.

  The velocity starts at the first eps; beta = 1 is exactly `plms`. For
  beta < 1 the method is first order (Wizadwongsa et al. 2023, Theorem 1) with
  a larger stability region.

  Args:
    eps_fn: noise predictor `eps_fn(x, t)`.
    x_T: `[B, ...]` starting noise.
    grid: the `SamplingGrid`.
    order: k, the Adams-Bashforth order.
    beta: damping in (0, 1].
    return_trajectory: also return the `[N + 1, B, ...]` states.

  Returns:
    `[B, ...]` sample (and the trajectory when asked).
  """
  multistep.ghvb_coefficients(order, beta)  # validates order and beta
  return _eps_multistep(eps_fn, x_T, grid, "hb", order, float(beta), return_trajectory)


def ghvb(eps_fn: EpsFn, x_T: jax.typing.ArrayLike, grid: schedules_lib.SamplingGrid,
         order: int, beta: float, *, return_trajectory: bool = False):
  """Generalised heavy ball: v <- (1 - beta) v + beta eps_n; d = sum_i c_i(beta) v_{n-i}.

  Order k for any beta (Wizadwongsa et al. 2023, Theorem 2); beta = 1 is
  exactly `plms` of order k and beta -> 0 tends to order k - 1. Weights from
  `multistep.ghvb_coefficients`; the warm-up uses lower-order GHVB.

  Args:
    eps_fn: noise predictor `eps_fn(x, t)`.
    x_T: `[B, ...]` starting noise.
    grid: the `SamplingGrid`.
    order: k.
    beta: damping in (0, 1].
    return_trajectory: also return the `[N + 1, B, ...]` states.

  Returns:
    `[B, ...]` sample (and the trajectory when asked).
  """
  multistep.ghvb_coefficients(order, beta)  # validates order and beta
  return _eps_multistep(eps_fn, x_T, grid, "ghvb", order, float(beta), return_trajectory)


def dpm_solver_pp_2m(eps_fn: EpsFn, x_T: jax.typing.ArrayLike,
                     grid: schedules_lib.SamplingGrid, *, beta: float = 1.0,
                     lower_order_final: bool = False, return_trajectory: bool = False,
                     num_steps=None):
  """DPM-Solver++(2M), optionally with heavy-ball momentum on D (module docstring).

  x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) D with D = D0 + D1 / 2,
  D0 = m_n, D1 = (m_n - m_{n-1}) / r. With beta < 1, D is replaced by
  v <- (1 - beta) v + beta D on second-order steps (v starts at the first D).

  Args:
    eps_fn: noise predictor `eps_fn(x, t)`.
    x_T: `[B, ...]` starting noise.
    grid: the `SamplingGrid` (DPM-Solver uses 'logsnr' spacing).
    beta: heavy-ball damping in (0, 1]; 1 is plain DPM-Solver++(2M).
    lower_order_final: take the last step at first order too (diffusers'
      `lower_order_final`, which it applies below 15 steps). Off by default;
      with `num_steps` the last step is step num_steps - 1.
    return_trajectory: also return the `[N + 1, B, ...]` states.
    num_steps: take only the first `num_steps` grid steps (see `sample_on_grid`).

  Returns:
    `[B, ...]` sample (and the trajectory when asked).
  """
  if not 0 < beta <= 1:
    raise ValueError(f"`beta` must lie in (0, 1], got {beta!r}.")
  x_T, grid = _prepare(eps_fn, x_T, grid)
  dtype = x_T.dtype
  momentum = beta != 1.0
  beta_arr = jnp.asarray(beta, dtype)
  grid_steps = grid.t.shape[0] - 1
  num_active = _active_steps(num_steps, grid_steps)
  lam = grid.lambda_t
  h = lam[1:] - lam[:-1]
  ratio = jnp.concatenate([h[:1], h[:-1]]) / h  # r_n = h_{n-1} / h_n (unused at n = 0)
  index = jnp.arange(grid_steps)
  second_order = index >= 1
  if lower_order_final:
    last = grid_steps if num_active is None else num_active
    second_order = second_order & (index < last - 1)
  inputs = (index, second_order, grid.t[:-1], grid.alpha[:-1], grid.sigma[:-1],
            grid.alpha[1:], grid.sigma[1:], h, ratio)

  def advance(carry, inp):
    x, data_prev, velocity = carry
    i, use_second, t, alpha_s, sigma_s, alpha_t, sigma_t, h_n, r_n = inp
    eps = eps_fn(x, t)
    data = (x - sigma_s * eps) / alpha_s
    direction = jnp.where(use_second, data + 0.5 * ((data - data_prev) / r_n), data)
    if momentum:
      blended = jnp.where(i == 1, direction, (1 - beta_arr) * velocity + beta_arr * direction)
      velocity = jnp.where(use_second, blended, velocity)
      direction = jnp.where(use_second, blended, direction)
    x_next = (sigma_t / sigma_s) * x - (alpha_t * jnp.expm1(-h_n)) * direction
    return x_next, data, velocity

  carry0 = (x_T, jnp.zeros_like(x_T), jnp.zeros_like(x_T))
  (x, _, _), trajectory = _scan_steps(advance, carry0, inputs, num_active, return_trajectory)
  return _finish(x, trajectory, x_T, return_trajectory)


def sample_on_grid(name: str, eps_fn: EpsFn, x_T: jax.typing.ArrayLike,
                   grid: schedules_lib.SamplingGrid, *, lower_order_final: bool = False,
                   return_trajectory: bool = False, num_steps=None):
  """Runs the solver called `name` (see `multistep.parse_solver`) on a given grid.

  The step count as data: with `num_steps`, only the first `num_steps` steps
  of the grid are taken and the rest are skipped, leaving x, the multistep
  history and the velocity unchanged. On a grid from
  `schedules.padded_sampling_grid(schedule, n, max_steps, ...)` with
  `num_steps=n` this gives bit for bit the result of the unpadded n-step grid
  (the warm-up orders depend on the step index, which padding at the end
  leaves alone), and `num_steps` may be a traced integer: one compiled program
  serves every n <= max_steps, e.g.

    run = jax.jit(lambda grid, n: sample_on_grid('plms4', eps_fn, x_T, grid, num_steps=n))
    for n in (5, 10, 20):
      x0 = run(schedules.padded_sampling_grid(schedule, n, 20), n)

  Args:
    name: 'ddim', 'plms<k>', 'hb<o>', 'ghvb<o>', 'dpmpp2m' or 'dpmpp2m_hb<beta>'.
    eps_fn: noise predictor `eps_fn(x, t)`.
    x_T: `[B, ...]` starting noise.
    grid: the `SamplingGrid`.
    lower_order_final: passed to the DPM-Solver++ ones.
    return_trajectory: also return the `[N + 1, B, ...]` states (with
      `num_steps`, the rows after num_steps repeat the final state).
    num_steps: None (every grid step) or a 0-d integer, possibly traced, in
      [1, N]; a Python int outside that range raises ValueError (a traced
      one is clipped to N, and one below 1 returns x_T).

  Returns:
    `[B, ...]` sample (and the trajectory when asked).
  """
  spec = multistep.parse_solver(name)
  if spec.family in ("dpmpp2m", "dpmpp2m_hb"):
    return dpm_solver_pp_2m(eps_fn, x_T, grid, beta=spec.beta,
                            lower_order_final=lower_order_final,
                            return_trajectory=return_trajectory, num_steps=num_steps)
  return _eps_multistep(eps_fn, x_T, grid, spec.family, spec.order, spec.beta,
                        return_trajectory, num_steps)


def default_spacing(name: str) -> str:
  """The grid spacing `sample` uses for solver `name`: 'logsnr' for the
  DPM-Solver++ ones, 'time_uniform' for the others (their usual settings)."""
  spec = multistep.parse_solver(name)
  return "logsnr" if spec.family.startswith("dpmpp2m") else "time_uniform"


def sample(name: str, eps_fn: EpsFn, x_T: jax.typing.ArrayLike, num_steps: int, *,
           schedule: Optional[schedules_lib.VPSchedule] = None,
           spacing: Optional[str] = None, t_start: Optional[float] = None,
           t_end: Optional[float] = None, lower_order_final: bool = False,
           return_trajectory: bool = False):
  """Samples with the solver called `name` in `num_steps` steps.

  Example:
    x0 = sample('ghvb3.8', eps_fn, jax.random.normal(key, (512, 2)), 10)

  Args:
    name: 'ddim', 'plms<k>', 'hb<o>', 'ghvb<o>', 'dpmpp2m' or 'dpmpp2m_hb<beta>'.
    eps_fn: noise predictor `eps_fn(x, t)`, t a 0-d continuous time.
    x_T: `[B, ...]` starting noise.
    num_steps: N, the number of steps (= noise-predictor calls).
    schedule: the `VPSchedule`; defaults to `schedules.linear_schedule()`.
    spacing: grid spacing; defaults to 'logsnr' for the DPM-Solver++ ones and
      'time_uniform' for the others (their usual settings).
    t_start: first time (default schedule.t_max).
    t_end: last time (default schedule.t_min).
    lower_order_final: passed to the DPM-Solver++ ones.
    return_trajectory: also return the `[N + 1, B, ...]` states.

  Returns:
    `[B, ...]` sample at t_end (and the trajectory when asked).
  """
  schedule = schedules_lib.linear_schedule() if schedule is None else schedule
  if spacing is None:
    spacing = default_spacing(name)
  dtype = jnp.promote_types(jnp.result_type(x_T), jnp.float32)
  grid = schedules_lib.sampling_grid(schedule, num_steps, spacing, t_start=t_start,
                                     t_end=t_end, dtype=dtype)
  return sample_on_grid(name, eps_fn, x_T, grid, lower_order_final=lower_order_final,
                        return_trajectory=return_trajectory)
