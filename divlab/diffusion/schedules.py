"""Variance-preserving noise schedules and the time grids samplers walk along.

A VP diffusion noises data as `x_t = alpha_t x_0 + sigma_t eps` with
`alpha_t^2 + sigma_t^2 = 1`. Every schedule here is written in **continuous
time** `t in (0, 1]` through `log alpha_t`; the half log-SNR
`lambda_t = log(alpha_t / sigma_t)` decreases strictly in `t` and has an
inverse, which DPM-Solver uses to place its steps.

Time convention (one for the whole package): the time passed to a noise
predictor `eps_fn(x, t)` is the continuous `t`, a 0-d float array shared by the
whole batch. A discrete DDPM schedule with `N` training steps is embedded in
continuous time as DPM-Solver does ("type-1" labels): training step
`n in {0, ..., N-1}` sits at `t = (n + 1) / N`, and `log alpha_t` is linearly
interpolated in between. A model trained on integer steps `n` is wrapped as
`eps_fn(x, t) = model(x, t * N - 1)`.

References:
  Ho, Jain, Abbeel. Denoising Diffusion Probabilistic Models (2020): the linear
  beta schedule 1e-4 ... 0.02 over 1000 steps.
  Nichol, Dhariwal. Improved DDPM (2021): the cosine schedule, s = 0.008.
  Song et al. Score-Based Generative Modeling through SDEs (2021): the
  continuous linear VP-SDE, beta(t) = beta_min + t (beta_max - beta_min).
  Lu et al. DPM-Solver (2022): lambda_t, its inverse, logSNR-uniform steps.
"""
from __future__ import annotations

import abc
import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "VPSchedule",
    "LinearVPSchedule",
    "CosineVPSchedule",
    "DiscreteVPSchedule",
    "SamplingGrid",
    "linear_schedule",
    "cosine_schedule",
    "discrete_schedule",
    "ddpm_linear_alphas_cumprod",
    "cosine_alphas_cumprod",
    "sampling_grid",
    "pad_grid",
    "padded_sampling_grid",
]

SPACINGS = ("time_uniform", "logsnr")


def _float_array(t: jax.typing.ArrayLike) -> jax.Array:
  t = jnp.asarray(t)
  return t.astype(jnp.promote_types(t.dtype, jnp.float32))


@dataclasses.dataclass(frozen=True, eq=False)
class VPSchedule(abc.ABC):
  """Base class: subclasses define `log_alpha(t)` and `t_from_lambda(lam)`.

  `t_min` and `t_max` bound the times a sampler should visit: sampling runs
  from `t_max` (almost pure noise) down to `t_min` (almost clean data).
  Instances hash by identity so that they can be static arguments of `jit`.
  """

  t_min: float
  t_max: float

  @abc.abstractmethod
  def log_alpha(self, t: jax.typing.ArrayLike) -> jax.Array:
    """log alpha_t, elementwise over `t` of any shape."""

  @abc.abstractmethod
  def t_from_lambda(self, lam: jax.typing.ArrayLike) -> jax.Array:
    """The time t whose half log-SNR equals `lam` (inverse of `lambda_t`)."""

  def alpha(self, t: jax.typing.ArrayLike) -> jax.Array:
    """alpha_t = sqrt(abar_t), the signal scale."""
    return jnp.exp(self.log_alpha(t))

  def sigma(self, t: jax.typing.ArrayLike) -> jax.Array:
    """sigma_t = sqrt(1 - alpha_t^2), computed with expm1 so small t keeps precision."""
    return jnp.sqrt(-jnp.expm1(2.0 * self.log_alpha(t)))

  def lambda_t(self, t: jax.typing.ArrayLike) -> jax.Array:
    """Half log-SNR lambda_t = log(alpha_t / sigma_t)."""
    log_alpha = self.log_alpha(t)
    return log_alpha - 0.5 * jnp.log(-jnp.expm1(2.0 * log_alpha))


def _log_alpha_from_lambda(lam: jax.Array) -> jax.Array:
  # alpha^2 = sigmoid(2 lambda)  =>  log alpha = -0.5 log(1 + exp(-2 lambda)).
  return -0.5 * jnp.logaddexp(-2.0 * lam, 0.0)


@dataclasses.dataclass(frozen=True, eq=False)
class LinearVPSchedule(VPSchedule):
  """Continuous linear VP-SDE: beta(t) = beta_min + t (beta_max - beta_min).

  log alpha_t = -(beta_max - beta_min) t^2 / 4 - beta_min t / 2, i.e.
  alpha_t^2 = exp(-int_0^t beta(s) ds). With the defaults (0.1, 20) it is the
  continuous-time limit of DDPM's 1000-step linear schedule (1e-4 ... 0.02).
  """

  beta_min: float = 0.1
  beta_max: float = 20.0

  def log_alpha(self, t):
    t = _float_array(t)
    return -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

  def t_from_lambda(self, lam):
    # Solve a t^2 + b t + c = 0 with a = (beta_max - beta_min) / 4,
    # b = beta_min / 2 and c = log alpha < 0 for its positive root, in the form
    # 2|c| / (b + sqrt(b^2 + 4 a |c|)) that does not cancel when beta_min is small.
    lam = _float_array(lam)
    neg_log_alpha = -_log_alpha_from_lambda(lam)
    a = 0.25 * (self.beta_max - self.beta_min)
    b = 0.5 * self.beta_min
    return 2.0 * neg_log_alpha / (b + jnp.sqrt(b * b + 4.0 * a * neg_log_alpha))


@dataclasses.dataclass(frozen=True, eq=False)
class CosineVPSchedule(VPSchedule):
  """Continuous cosine schedule: abar_t = f(t) / f(0), f(t) = cos^2(pi/2 (t + s)/(1 + s)).

  alpha_t reaches 0 at t = 1, so sampling starts at `t_max` < 1 (DPM-Solver's
  0.9946 by default).
  """

  s: float = 0.008

  def log_alpha(self, t):
    t = _float_array(t)
    angle = 0.5 * math.pi * (t + self.s) / (1.0 + self.s)
    return jnp.log(jnp.cos(angle)) - math.log(math.cos(0.5 * math.pi * self.s / (1.0 + self.s)))

  def t_from_lambda(self, lam):
    log_alpha = _log_alpha_from_lambda(_float_array(lam))
    cos0 = math.cos(0.5 * math.pi * self.s / (1.0 + self.s))
    return jnp.arccos(jnp.exp(log_alpha) * cos0) * 2.0 * (1.0 + self.s) / math.pi - self.s


@dataclasses.dataclass(frozen=True, eq=False)
class DiscreteVPSchedule(VPSchedule):
  """A discrete schedule abar_0 ... abar_{N-1} embedded in continuous time.

  Step n sits at t_n = (n + 1) / N; log alpha is piecewise linear in t between
  the steps (DPM-Solver's discrete wrapper), and `t_from_lambda` inverts that
  same piecewise-linear map.
  """

  alphas_cumprod: np.ndarray

  @property
  def num_train_steps(self) -> int:
    return int(self.alphas_cumprod.shape[0])

  def _table(self):
    n = self.num_train_steps
    times = np.arange(1, n + 1, dtype=np.float64) / n
    return times, 0.5 * np.log(self.alphas_cumprod)

  def log_alpha(self, t):
    t = _float_array(t)
    times, log_alphas = self._table()
    return jnp.interp(t, jnp.asarray(times, t.dtype), jnp.asarray(log_alphas, t.dtype))

  def t_from_lambda(self, lam):
    # lambda -> log alpha is a bijection, so inverting the piecewise-linear
    # log alpha table makes this the exact inverse of lambda_t (as in DPM-Solver).
    lam = _float_array(lam)
    times, log_alphas = self._table()
    # jnp.interp needs increasing abscissae; log alpha decreases with t.
    return jnp.interp(_log_alpha_from_lambda(lam), jnp.asarray(log_alphas[::-1].copy(), lam.dtype),
                      jnp.asarray(times[::-1].copy(), lam.dtype))


def linear_schedule(beta_min: float = 0.1, beta_max: float = 20.0, *,
                    t_min: float = 1e-3, t_max: float = 1.0) -> LinearVPSchedule:
  """Continuous linear VP schedule (Song et al. 2021), see `LinearVPSchedule`.

  Args:
    beta_min: beta(0), > 0.
    beta_max: beta(1), > beta_min.
    t_min: the last time a sampler visits (DPM-Solver's default 1e-3).
    t_max: the first time a sampler visits.

  Returns:
    A `LinearVPSchedule`.
  """
  if not beta_min > 0:
    raise ValueError(f"`beta_min` must be positive, got {beta_min!r}.")
  if not beta_max > beta_min:
    raise ValueError(f"`beta_max` must exceed beta_min={beta_min}, got {beta_max!r}.")
  _check_time_range(t_min, t_max, 1.0)
  return LinearVPSchedule(t_min=float(t_min), t_max=float(t_max),
                          beta_min=float(beta_min), beta_max=float(beta_max))


def cosine_schedule(s: float = 0.008, *, t_min: float = 1e-3,
                    t_max: float = 0.9946) -> CosineVPSchedule:
  """Continuous cosine schedule (Nichol & Dhariwal 2021), see `CosineVPSchedule`.

  Args:
    s: the small offset that keeps beta_t finite near t = 0, >= 0.
    t_min: the last time a sampler visits.
    t_max: the first time a sampler visits, < 1 because alpha_1 = 0.

  Returns:
    A `CosineVPSchedule`.
  """
  if not s >= 0:
    raise ValueError(f"`s` must be non-negative, got {s!r}.")
  _check_time_range(t_min, t_max, 1.0, t_max_inclusive=False)
  return CosineVPSchedule(t_min=float(t_min), t_max=float(t_max), s=float(s))


def discrete_schedule(alphas_cumprod: jax.typing.ArrayLike) -> DiscreteVPSchedule:
  """A discrete (DDPM-style) schedule embedded in continuous time.

  Args:
    alphas_cumprod: `[N]` cumulative products abar_n, strictly decreasing in
      (0, 1). Step n sits at t = (n + 1) / N.

  Returns:
    A `DiscreteVPSchedule` with t_min = 1/N and t_max = 1.
  """
  abar = np.asarray(alphas_cumprod, dtype=np.float64)
  if abar.ndim != 1 or abar.shape[0] < 2:
    raise ValueError(
        f"`alphas_cumprod` must be a 1-D array of at least 2 steps, got shape {abar.shape}.")
  if not (np.all(abar > 0) and np.all(abar < 1) and np.all(np.diff(abar) < 0)):
    raise ValueError("`alphas_cumprod` must lie in (0, 1) and decrease strictly.")
  n = abar.shape[0]
  return DiscreteVPSchedule(t_min=1.0 / n, t_max=1.0, alphas_cumprod=abar)


def ddpm_linear_alphas_cumprod(num_train_steps: int = 1000, beta_start: float = 1e-4,
                               beta_end: float = 0.02) -> np.ndarray:
  """DDPM's discrete linear schedule: abar_n = prod_{m<=n} (1 - beta_m), betas linear.

  Args:
    num_train_steps: N, the number of training steps.
    beta_start: beta_0.
    beta_end: beta_{N-1}.

  Returns:
    `[N]` float64 numpy array abar_n.
  """
  if num_train_steps < 2:
    raise ValueError(f"`num_train_steps` must be >= 2, got {num_train_steps!r}.")
  if not 0 < beta_start < beta_end < 1:
    raise ValueError(
        f"need 0 < `beta_start` < `beta_end` < 1, got {beta_start!r}, {beta_end!r}.")
  betas = np.linspace(beta_start, beta_end, num_train_steps, dtype=np.float64)
  return np.cumprod(1.0 - betas)


def cosine_alphas_cumprod(num_train_steps: int = 1000, s: float = 0.008,
                          max_beta: float = 0.999) -> np.ndarray:
  """Improved DDPM's discrete cosine schedule with betas clipped at `max_beta`.

  beta_n = min(1 - f((n+1)/N) / f(n/N), max_beta), f(u) = cos^2(pi/2 (u + s)/(1 + s)).

  Args:
    num_train_steps: N.
    s: the cosine offset.
    max_beta: the clip that keeps the last steps finite.

  Returns:
    `[N]` float64 numpy array abar_n.
  """
  if num_train_steps < 2:
    raise ValueError(f"`num_train_steps` must be >= 2, got {num_train_steps!r}.")
  if not 0 < max_beta < 1:
    raise ValueError(f"`max_beta` must lie in (0, 1), got {max_beta!r}.")
  u = np.arange(num_train_steps + 1, dtype=np.float64) / num_train_steps
  f = np.cos(0.5 * np.pi * (u + s) / (1.0 + s)) ** 2
  betas = np.minimum(1.0 - f[1:] / f[:-1], max_beta)
  return np.cumprod(1.0 - betas)


def _check_time_range(t_min, t_max, upper, *, t_max_inclusive=True):
  ok_upper = t_max <= upper if t_max_inclusive else t_max < upper
  if not (0 < t_min < t_max and ok_upper):
    raise ValueError(
        f"need 0 < `t_min` < `t_max` {'<=' if t_max_inclusive else '<'} {upper}, "
        f"got t_min={t_min!r}, t_max={t_max!r}.")


class SamplingGrid(NamedTuple):
  """The N + 1 times a sampler visits, noisiest first, with alpha and sigma there.

  A pytree of arrays, so a grid can be an ordinary (traced) argument of a
  jitted sampler. Step i goes from index i to index i + 1.

  Attributes:
    t: `[N + 1]` decreasing continuous times, passed to `eps_fn`.
    alpha: `[N + 1]` alpha_t.
    sigma: `[N + 1]` sigma_t.
  """

  t: jax.Array
  alpha: jax.Array
  sigma: jax.Array

  @property
  def num_steps(self) -> int:
    return self.t.shape[0] - 1

  @property
  def lambda_t(self) -> jax.Array:
    """`[N + 1]` half log-SNR log(alpha / sigma), increasing along the grid."""
    return jnp.log(self.alpha) - jnp.log(self.sigma)


def sampling_grid(schedule: VPSchedule, num_steps: int, spacing: str = "time_uniform",
                  *, t_start: float | None = None, t_end: float | None = None,
                  dtype=jnp.float32) -> SamplingGrid:
  """Times for `num_steps` sampling steps from `t_start` down to `t_end`.

  Spacings:
    'time_uniform': t_i = t_start + i (t_end - t_start) / N, the DDIM / PLMS
      choice (uniformly spaced timesteps).
    'logsnr': lambda_i uniform between lambda(t_start) and lambda(t_end), then
      t_i = t_from_lambda(lambda_i); the DPM-Solver choice (Lu et al. 2022).

  Args:
    schedule: a `VPSchedule`.
    num_steps: N >= 1.
    spacing: 'time_uniform' or 'logsnr'.
    t_start: first time, defaults to `schedule.t_max`.
    t_end: last time, defaults to `schedule.t_min`.
    dtype: floating dtype of the grid.

  Returns:
    A `SamplingGrid` with `[N + 1]` arrays.
  """
  if not isinstance(schedule, VPSchedule):
    raise ValueError(f"`schedule` must be a VPSchedule, got {type(schedule).__name__}.")
  if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f"`num_steps` must be a positive integer, got {num_steps!r}.")
  if spacing not in SPACINGS:
    raise ValueError(f"`spacing` must be one of {SPACINGS}, got {spacing!r}.")
  t_start = schedule.t_max if t_start is None else float(t_start)
  t_end = schedule.t_min if t_end is None else float(t_end)
  if not 0 < t_end < t_start:
    raise ValueError(f"need 0 < `t_end` < `t_start`, got t_end={t_end!r}, t_start={t_start!r}.")
  if spacing == "time_uniform":
    t = jnp.linspace(t_start, t_end, num_steps + 1, dtype=dtype)
  else:
    lam_start = schedule.lambda_t(jnp.asarray(t_start, dtype))
    lam_end = schedule.lambda_t(jnp.asarray(t_end, dtype))
    lams = jnp.linspace(lam_start, lam_end, num_steps + 1, dtype=dtype)
    t = schedule.t_from_lambda(lams)
    t = t.at[0].set(t_start).at[-1].set(t_end)
  t = t.astype(dtype)
  return SamplingGrid(t=t, alpha=schedule.alpha(t).astype(dtype),
                      sigma=schedule.sigma(t).astype(dtype))


def pad_grid(grid: SamplingGrid, max_steps: int) -> SamplingGrid:
  """`grid` lengthened to `max_steps` steps by repeating its last time.

  The padding steps go from t_end to t_end (zero length). A sampler run with
  `num_steps=grid.num_steps` skips them (`samplers.sample_on_grid`), so grids
  of different step counts padded to one length share one compiled program
  while each runs the arithmetic of its own unpadded grid: the first N + 1
  entries are the original arrays, bit for bit.

  Args:
    grid: a `SamplingGrid` of N steps.
    max_steps: the padded number of steps, >= N.

  Returns:
    A `SamplingGrid` with `[max_steps + 1]` arrays.
  """
  if not isinstance(grid, SamplingGrid):
    raise ValueError(f"`grid` must be a SamplingGrid, got {type(grid).__name__}.")
  num_steps = grid.t.shape[0] - 1
  if not isinstance(max_steps, (int, np.integer)) or max_steps < num_steps:
    raise ValueError(
        f"`max_steps` must be an integer >= the grid's {num_steps} steps, got {max_steps!r}.")
  extra = int(max_steps) - num_steps

  def pad(a):
    a = jnp.asarray(a)
    return jnp.concatenate([a, jnp.broadcast_to(a[-1:], (extra,))]) if extra else a

  return SamplingGrid(*(pad(a) for a in grid))


def padded_sampling_grid(schedule: VPSchedule, num_steps: int, max_steps: int,
                         spacing: str = "time_uniform", *, t_start: float | None = None,
                         t_end: float | None = None, dtype=jnp.float32) -> SamplingGrid:
  """`sampling_grid(schedule, num_steps, ...)` padded to `max_steps` (`pad_grid`).

  Grids for several step counts padded to their largest one can be stacked
  and passed, with their step counts, as data to one compiled sampler.

  Args:
    schedule: a `VPSchedule`.
    num_steps: N >= 1, the steps actually taken.
    max_steps: the padded length, >= N.
    spacing: 'time_uniform' or 'logsnr'.
    t_start: first time, defaults to `schedule.t_max`.
    t_end: last time, defaults to `schedule.t_min`.
    dtype: floating dtype of the grid.

  Returns:
    A `SamplingGrid` with `[max_steps + 1]` arrays whose first N + 1 entries
    are `sampling_grid`'s.
  """
  grid = sampling_grid(schedule, num_steps, spacing, t_start=t_start, t_end=t_end, dtype=dtype)
  return pad_grid(grid, max_steps)
