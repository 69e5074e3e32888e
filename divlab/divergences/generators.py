"""Csiszar f-divergence generators for `divlab.divergences.f_divergence`.

A generator is a convex f on u >= 0 with f(1) = 0; it defines
D_f(P || Q) = sum_x q(x) f(p(x) / q(x)), the convention of TensorFlow
Probability's `tfp.vi` (E_q[f(p/q)], p the first argument) and of
Csiszar (1967) / Ali & Silvey (1966).

Each `Generator` carries f in log space, `f_of_log(x) = f(e^x)`, together with
the log-space form of its dual (perspective) f_dual(v) = v f(1/v), which
satisfies D_{f_dual}(P || Q) = D_f(Q || P). `f_divergence` evaluates
q f(p/q) as q f(e^r) when p <= q and as p f_dual(e^-r) when p > q
(r = log(p/q)), so both log forms are only ever asked for x <= 0, where they
are written not to overflow. The limits f(0+) and f_dual(0+) = lim f(u)/u
handle entries where one probability is zero.

Every generator here is normalised to f(1) = 0, so D_f(P || P) = 0. Where
that differs from TFP's default (non-self-normalised) function, or by a
constant factor, the constructor says so; adding c (u - 1) to f never changes
D_f between normalised distributions, so those differences do not matter.

`conjugate` is the convex (Fenchel) conjugate f*(t) = sup_{u >= 0} (u t - f(u))
used by variational (f-GAN) bounds (Nguyen, Wainwright & Jordan 2010;
Nowozin, Cseke & Tomioka 2016); it is None where no closed form exists.
It returns +inf outside its domain.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from divlab import _checks

__all__ = [
    "Generator",
    "kl_forward",
    "kl_reverse",
    "jensen_shannon",
    "amari_alpha",
    "pearson",
    "chi_square",
    "squared_hellinger",
    "total_variation",
    "jeffreys",
    "triangular",
    "t_power",
    "log1p_abs",
    "modified_gan",
    "arithmetic_geometric",
    "dual",
    "symmetrized",
]

ArrayLike = jax.typing.ArrayLike
LogForm = Callable[[jax.Array], jax.Array]

_INF = math.inf
_LOG2 = math.log(2.0)


@dataclasses.dataclass(frozen=True)
class Generator:
  """A convex f with f(1) = 0, in the forms `f_divergence` needs.

  Attributes:
    name: a readable name, e.g. "kl_forward" or "dual(pearson)".
    f_of_log: x -> f(e^x), elementwise; accurate and overflow-free for x <= 0.
    dual_f_of_log: y -> f_dual(e^y) with f_dual(v) = v f(1/v), same guarantees.
    f_at_zero: f(0+), possibly +inf.
    dual_at_zero: f_dual(0+) = lim_{u -> inf} f(u) / u, possibly +inf.
    conjugate: t -> f*(t) = sup_{u >= 0} (u t - f(u)), or None.
    dual_conjugate: the conjugate of f_dual, or None.

  Instances are hashable, so they can be static arguments of `jax.jit`.
  """
  name: str
  f_of_log: LogForm
  dual_f_of_log: LogForm
  f_at_zero: float
  dual_at_zero: float
  conjugate: Optional[Callable[[jax.Array], jax.Array]] = None
  dual_conjugate: Optional[Callable[[jax.Array], jax.Array]] = None

  def f(self, u: ArrayLike) -> jax.Array:
    """f(u) for u >= 0, elementwise, with f(0) the limit `f_at_zero`."""
    u = jnp.asarray(u)
    u = u.astype(jnp.promote_types(u.dtype, jnp.float32))
    positive = u > 0
    values = self.f_of_log(jnp.log(jnp.where(positive, u, 1.0)))
    return jnp.where(positive, values, jnp.asarray(self.f_at_zero, u.dtype))


def _as_float(value, name: str) -> float:
  if not _checks.is_concrete_number(value):
    raise ValueError(f"`{name}` must be a concrete Python number, got {value!r}.")
  value = float(value)
  if not math.isfinite(value):
    raise ValueError(f"`{name}` must be finite, got {value!r}.")
  return value


def _weighted_expm1_ratio(log_w: jax.Array, w: jax.Array, t: jax.Array,
                          eps) -> jax.Array:
  """w * expm1(eps * t) / eps, tending to w * t as eps -> 0.

  `eps` may be a Python number or a traced scalar. Neither branch of a `where`
  overflows: for eps * t > 1 the product w * exp(eps * t) is formed in log
  space, so a tiny weight times a huge exponential stays finite.
  """
  is_zero = eps == 0
  x = jnp.where(is_zero, 0.0, eps * t)
  big = x > 1.0
  x_small = jnp.where(big, 0.0, x)
  x_big = jnp.where(big, x, 0.0)
  numerator = jnp.where(big, jnp.exp(log_w + x_big) - w, w * jnp.expm1(x_small))
  ratio = numerator / jnp.where(is_zero, 1.0, eps)
  return jnp.where(is_zero, w * jnp.where(is_zero, t, 0.0), ratio)


def _expm1_ratio(x: jax.Array, scale: float) -> jax.Array:
  """expm1(scale * x) / scale, equal to x at scale 0."""
  return _weighted_expm1_ratio(jnp.zeros_like(x), jnp.ones_like(x), x, scale)


def _log_cosh(z: jax.Array) -> jax.Array:
  z = jnp.abs(z)
  return z + jnp.log1p(jnp.exp(-2.0 * z)) - _LOG2


# ----------------------------------------------------------------------------
# Kullback-Leibler.


def _kl_conjugate(t):
  return jnp.exp(t - 1.0)


def _reverse_kl_conjugate(t):
  negative = t < 0
  return jnp.where(negative, -1.0 - jnp.log(jnp.where(negative, -t, 1.0)), _INF)


@functools.lru_cache(maxsize=None)
def kl_forward() -> Generator:
  """f(u) = u log u: D_f(P || Q) = KL(P || Q) (Kullback & Leibler 1951).

  Matches TFP's `kl_forward` (self_normalized=False); f(0) = 0, f(u)/u -> inf.
  Conjugate f*(t) = exp(t - 1).

  Example:
    >>> round(float(kl_forward().f(2.0)), 4)  # 2 log 2
    1.3863
  """
  return Generator("kl_forward", lambda x: x * jnp.exp(x), lambda y: -y,
                   0.0, _INF, _kl_conjugate, _reverse_kl_conjugate)


@functools.lru_cache(maxsize=None)
def kl_reverse() -> Generator:
  """f(u) = -log u: D_f(P || Q) = KL(Q || P), the dual of `kl_forward`.

  Matches TFP's `kl_reverse` (self_normalized=False). Conjugate
  f*(t) = -1 - log(-t) for t < 0.

  Example:
    >>> round(float(kl_reverse().f(2.0)), 4)
    -0.6931
  """
  return dataclasses.replace(dual(kl_forward()), name="kl_reverse")


# ----------------------------------------------------------------------------
# Jensen-Shannon.


def _js_log_form(beta: float) -> LogForm:
  log_beta = math.log(beta)
  log_rest = math.log1p(-beta)

  def f_of_log(x):
    log_m = jnp.logaddexp(log_beta + x, log_rest)
    return beta * x * jnp.exp(x) - jnp.exp(log_m) * log_m
  return f_of_log


def _js_conjugate(beta: float):
  bound = -beta * math.log(beta)  # sup of f'(u) = beta log(u / m(u))

  def conjugate(t):
    inside = t < bound
    safe = jnp.where(inside, t, 0.0)
    value = -(1.0 - beta) * jnp.log1p(-beta * jnp.expm1(safe / beta) / (1.0 - beta))
    return jnp.where(inside, value, _INF)
  return conjugate


def jensen_shannon(beta: float = 0.5) -> Generator:
  """f(u) = beta u log u - m log m, m = beta u + 1 - beta: D_f = JS_beta(P, Q).

  JS_beta(P, Q) = beta KL(P || M) + (1 - beta) KL(Q || M), M = beta P + (1-beta) Q
  (Lin 1991), the same value as `divlab.divergences.js`; at beta = 1/2 it is the
  standard JS divergence, at most log 2.

  TFP's `jensen_shannon` is 2x this: with self_normalized=True its f is
  u log u - (1 + u) log((1 + u) / 2) = 2 f, and with its default
  self_normalized=False it is 2 f - 2 log 2 (so its D_f is 2 JS - 2 log 2).
  The dual is `jensen_shannon(1 - beta)`. Conjugate
  f*(t) = -(1 - beta) log((1 - beta e^(t / beta)) / (1 - beta)) for
  t < -beta log beta (Nowozin et al. 2016 list 2x this at beta = 1/2).

  Args:
    beta: weight of P in the mixture, strictly between 0 and 1.

  Example:
    >>> round(float(jensen_shannon().f(0.0)), 4)  # (1/2) log 2
    0.3466
  """
  beta = _as_float(beta, "beta")
  if not 0.0 < beta < 1.0:
    raise ValueError(f"`beta` must lie in (0, 1), got {beta!r}.")
  return _jensen_shannon(beta)


@functools.lru_cache(maxsize=None)
def _jensen_shannon(beta: float) -> Generator:
  return Generator(
      f"jensen_shannon({beta:g})", _js_log_form(beta), _js_log_form(1.0 - beta),
      -(1.0 - beta) * math.log1p(-beta), -beta * math.log(beta),
      _js_conjugate(beta), _js_conjugate(1.0 - beta))


# ----------------------------------------------------------------------------
# Amari alpha and t-power.


def _amari_log_form(alpha: float) -> LogForm:
  """x -> (u^a - 1 - a (u - 1)) / (a (a - 1)) at u = e^x, stable near a in {0, 1}."""
  if alpha >= 0.5:
    eps = 1.0 - alpha

    def f_of_log(x):
      # (u^a - u) / (1 - a) = u^a expm1((1 - a) x) / (1 - a), weighted in log space.
      ax = alpha * x
      return (_weighted_expm1_ratio(ax, jnp.exp(ax), x, eps) - jnp.expm1(x)) / alpha
    return f_of_log

  def f_of_log(x):
    return (_expm1_ratio(x, alpha) - jnp.expm1(x)) / (alpha - 1.0)
  return f_of_log


def _amari_conjugate(alpha: float):
  """f*(t) = ((1 + (a - 1) t)^(a / (a - 1)) - 1) / a on 1 + (a - 1) t > 0."""
  if alpha == 1.0:
    return lambda t: jnp.expm1(t)
  if alpha == 0.0:
    def reverse(t):
      inside = t < 1
      return jnp.where(inside, -jnp.log1p(-jnp.where(inside, t, 0.0)), _INF)
    return reverse

  def conjugate(t):
    base = 1.0 + (alpha - 1.0) * t
    inside = base > 0
    value = jnp.expm1(alpha / (alpha - 1.0) * jnp.log(jnp.where(inside, base, 1.0)))
    # Past the domain the supremum sits at u = 0 (a > 1) or is infinite.
    outside = -1.0 / alpha if alpha > 1.0 else _INF
    return jnp.where(inside, value / alpha, outside)
  return conjugate


def _amari_at_zero(alpha: float) -> float:
  return 1.0 / alpha if alpha > 0 else _INF


def _scaled(log_form: LogForm, scale: float) -> LogForm:
  return lambda x: scale * log_form(x)


def amari_alpha(alpha: float) -> Generator:
  """f(u) = (u^a - 1 - a (u - 1)) / (a (a - 1)): D_f = Amari alpha-divergence.

  D_f(P || Q) = (1 - sum p^a q^(1-a)) / (a (1 - a)), as
  `divlab.divergences.alpha_divergence` (Amari 1985; Amari 2009); a = 1 gives
  u log u - u + 1 (KL(P || Q)), a = 0 gives -log u + u - 1 (KL(Q || P)).
  This is TFP's `amari_alpha` with self_normalized=True; its default drops the
  affine term, which leaves D_f unchanged. The dual is `amari_alpha(1 - a)`.
  Conjugate f*(t) = ((1 + (a - 1) t)^(a / (a - 1)) - 1) / a where
  1 + (a - 1) t > 0.

  Args:
    alpha: any finite real.

  Example:
    >>> round(float(amari_alpha(2.0).f(3.0)), 4)  # (9 - 1 - 2 * 2) / 2
    2.0
  """
  return _amari_alpha(_as_float(alpha, "alpha"))


@functools.lru_cache(maxsize=None)
def _amari_alpha(alpha: float) -> Generator:
  return Generator(
      f"amari_alpha({alpha:g})", _amari_log_form(alpha), _amari_log_form(1.0 - alpha),
      _amari_at_zero(alpha), _amari_at_zero(1.0 - alpha),
      _amari_conjugate(alpha), _amari_conjugate(1.0 - alpha))


def _scaled_conjugate(conjugate, scale: float):
  # (c f)*(t) = c f*(t / c) for c > 0.
  return lambda t: scale * conjugate(t / scale)


def t_power(t: float) -> Generator:
  """f(u) = s (u^t - 1 - t (u - 1)), s = -1 for 0 < t < 1 and +1 otherwise.

  D_f(P || Q) = s (sum p^t q^(1-t) - 1), the t-power divergence of TFP's
  `t_power` (self_normalized=True; its default drops s t (u - 1), leaving D_f
  unchanged). It equals |t (t - 1)| times `amari_alpha(t)`. The dual is
  `t_power(1 - t)`.

  Args:
    t: finite real, not 0 or 1 (where f vanishes identically).

  Example:
    >>> round(float(t_power(2.0).f(3.0)), 4)  # 9 - 1 - 2 * 2
    4.0
  """
  t = _as_float(t, "t")
  if t in (0.0, 1.0):
    raise ValueError(f"`t` must not be 0 or 1 (f would be identically zero), got {t!r}.")
  return _t_power(t)


@functools.lru_cache(maxsize=None)
def _t_power(t: float) -> Generator:
  scale = abs(t * (t - 1.0))
  amari = amari_alpha(t)
  return Generator(
      f"t_power({t:g})", _scaled(amari.f_of_log, scale),
      _scaled(amari.dual_f_of_log, scale),
      scale * amari.f_at_zero, scale * amari.dual_at_zero,
      _scaled_conjugate(amari.conjugate, scale),
      _scaled_conjugate(amari.dual_conjugate, scale))


# ----------------------------------------------------------------------------
# Squared-difference families.


def _pearson_conjugate(t):
  # The maximiser u = 1 + t / 2 hits the boundary u = 0 for t < -2.
  return jnp.where(t >= -2.0, t + 0.25 * t * t, -1.0)


def _neyman_conjugate(t):
  inside = t <= 1.0
  return jnp.where(inside, 2.0 - 2.0 * jnp.sqrt(1.0 - jnp.where(inside, t, 0.0)), _INF)


@functools.lru_cache(maxsize=None)
def pearson() -> Generator:
  """f(u) = (u - 1)^2: D_f = Pearson chi^2 = sum (p - q)^2 / q (Pearson 1900).

  Matches TFP's `pearson` and `divlab.divergences.chi_squared`. The dual
  (1 - v)^2 / v is Neyman's chi^2. Conjugate over u >= 0:
  f*(t) = t + t^2 / 4 for t >= -2, -1 below.

  Example:
    >>> round(float(pearson().f(3.0)), 4)
    4.0
  """
  return Generator(
      "pearson", lambda x: jnp.square(jnp.expm1(x)),
      lambda y: -jnp.expm1(y) * jnp.expm1(-y), 1.0, _INF,
      _pearson_conjugate, _neyman_conjugate)


def _chi_square_conjugate(t):
  # sup_{u >= 0} u t - u^2 + 1: u = t / 2 for t >= 0, the boundary u = 0 below.
  return jnp.where(t >= 0.0, 1.0 + 0.25 * t * t, 1.0)


def _chi_square_dual_conjugate(t):
  # f_dual(v) = 1/v - v; sup_{v >= 0} v (t + 1) - 1/v is finite only for t <= -1.
  inside = t <= -1.0
  return jnp.where(inside, -2.0 * jnp.sqrt(-(1.0 + jnp.where(inside, t, -1.0))), _INF)


@functools.lru_cache(maxsize=None)
def chi_square() -> Generator:
  """f(u) = u^2 - 1, TensorFlow Probability's `tfp.vi.chi_square` generator.

  D_f = sum_i q_i ((p_i / q_i)^2 - 1) = sum_i p_i^2 / q_i - 1, which for
  normalised P and Q equals Pearson's chi^2 (`pearson`, whose f = (u - 1)^2
  differs from this one by the linear term 2 (u - 1), invisible to an
  f-divergence). f(0) = -1; the dual is f_dual(v) = 1/v - v. Conjugate over
  u >= 0: f*(t) = 1 + t^2 / 4 for t >= 0, 1 below.

  Example:
    >>> round(float(chi_square().f(3.0)), 4)
    8.0
  """
  return Generator(
      "chi_square", lambda x: jnp.expm1(2.0 * x), lambda y: -2.0 * jnp.sinh(y), -1.0, _INF,
      _chi_square_conjugate, _chi_square_dual_conjugate)


def _hellinger_conjugate(t):
  inside = t < 1.0
  safe = jnp.where(inside, t, 0.0)
  return jnp.where(inside, safe / (1.0 - safe), _INF)


@functools.lru_cache(maxsize=None)
def squared_hellinger() -> Generator:
  """f(u) = (sqrt(u) - 1)^2: D_f = sum (sqrt p - sqrt q)^2 (Hellinger 1909).

  Matches TFP's `squared_hellinger` and `divlab.divergences.squared_hellinger`
  (no 1/2 factor). Self-dual. Conjugate f*(t) = t / (1 - t) for t < 1.

  Example:
    >>> round(float(squared_hellinger().f(4.0)), 4)
    1.0
  """
  log_form = lambda x: jnp.square(jnp.expm1(0.5 * x))
  return Generator("squared_hellinger", log_form, log_form, 1.0, 1.0,
                   _hellinger_conjugate, _hellinger_conjugate)


def _tv_conjugate(t):
  return jnp.where(t <= 0.5, jnp.maximum(t, -0.5), _INF)


@functools.lru_cache(maxsize=None)
def total_variation() -> Generator:
  """f(u) = |u - 1| / 2: D_f = TV(P, Q) = sum |p - q| / 2.

  Matches TFP's `total_variation` and `divlab.divergences.total_variation`.
  Self-dual. Conjugate over u >= 0: max(t, -1/2) for t <= 1/2.

  Example:
    >>> round(float(total_variation().f(3.0)), 4)
    1.0
  """
  log_form = lambda x: 0.5 * jnp.abs(jnp.expm1(x))
  return Generator("total_variation", log_form, log_form, 0.5, 0.5,
                   _tv_conjugate, _tv_conjugate)


def _triangular_conjugate(t):
  inside = t <= 1.0
  root = jnp.sqrt(1.0 - jnp.where(inside, t, 0.0))
  # f'(0) = -3: below that the supremum sits at u = 0, giving -f(0) = -1.
  value = jnp.where(t >= -3.0, 4.0 - t - 4.0 * root, -1.0)
  return jnp.where(inside, value, _INF)


@functools.lru_cache(maxsize=None)
def triangular() -> Generator:
  """f(u) = (u - 1)^2 / (1 + u): D_f = sum (p - q)^2 / (p + q).

  The triangular discrimination (Le Cam 1986), as TFP's `triangular`.
  Self-dual. Conjugate f*(t) = 4 - t - 4 sqrt(1 - t) for -3 <= t <= 1, -1
  below.

  Example:
    >>> round(float(triangular().f(3.0)), 4)  # 4 / 4
    1.0
  """
  log_form = lambda x: jnp.square(jnp.expm1(x)) / (1.0 + jnp.exp(x))
  return Generator("triangular", log_form, log_form, 1.0, 1.0,
                   _triangular_conjugate, _triangular_conjugate)


# ----------------------------------------------------------------------------
# Log-ratio families.


@functools.lru_cache(maxsize=None)
def jeffreys() -> Generator:
  """f(u) = (u - 1) log(u) / 2: D_f = (KL(P || Q) + KL(Q || P)) / 2.

  Matches TFP's `jeffreys`, which carries the 1/2, and equals
  `symmetrized(kl_forward())`; Jeffreys' (1946) own divergence is the plain
  sum, twice this.
  Self-dual; no closed-form conjugate (it needs the Lambert W function).

  Example:
    >>> round(float(jeffreys().f(1.0)), 4)
    0.0
  """
  log_form = lambda x: 0.5 * x * jnp.expm1(x)
  return Generator("jeffreys", log_form, log_form, _INF, _INF)


def _log1p_abs_dual(y):
  positive = y > 0
  y_pos = jnp.where(positive, y, 0.0)
  return jnp.where(positive, jnp.exp(y_pos) * jnp.expm1(y_pos),
                   -jnp.expm1(jnp.where(positive, 0.0, y)))


def _log1p_abs_conjugate(t):
  below = t < -1.0
  value = jnp.where(below, 1.0 - 2.0 * jnp.sqrt(-jnp.where(below, t, -1.0)), t)
  return jnp.where(t <= 1.0, value, _INF)


def _log1p_abs_dual_conjugate(t):
  return jnp.where(t < -1.0, -1.0, jnp.where(t <= 1.0, t, 0.25 * jnp.square(t + 1.0)))


@functools.lru_cache(maxsize=None)
def log1p_abs() -> Generator:
  """f(u) = u^sign(u - 1) - 1, i.e. f(e^x) = expm1(|x|).

  As TFP's `log1p_abs`: 1/u - 1 below 1, u - 1 above. Its dual is 1 - v below
  1 and v (v - 1) above. Conjugate f*(t) = t on [-1, 1], 1 - 2 sqrt(-t) below.

  Example:
    >>> round(float(log1p_abs().f(0.5)), 4)
    1.0
  """
  return Generator("log1p_abs", lambda x: jnp.expm1(jnp.abs(x)), _log1p_abs_dual,
                   _INF, 1.0, _log1p_abs_conjugate, _log1p_abs_dual_conjugate)


@functools.lru_cache(maxsize=None)
def modified_gan() -> Generator:
  """f(u) = log(1 + u) - log(u) - log 2: D_f = sum q log((p + q) / (2 p)).

  The modified-GAN generator of TFP's `modified_gan`, shifted by -log 2 so that
  f(1) = 0: TFP's f(u) = log(1 + u) - log(u) (self_normalized=False; its
  self-normalised version adds (u - 1)/2) gives D_f(P || P) = log 2, this one 0.
  Dual: v log((1 + v) / 2). No conjugate is provided.

  Example:
    >>> round(float(modified_gan().f(1.0)), 4)
    0.0
  """
  return Generator(
      "modified_gan", lambda x: jax.nn.softplus(-x) - _LOG2,
      lambda y: jnp.exp(y) * (jax.nn.softplus(y) - _LOG2), _INF, 0.0)


@functools.lru_cache(maxsize=None)
def arithmetic_geometric() -> Generator:
  """f(u) = (1 + u) log((1 + u) / (2 sqrt(u))): D_f = KL(M || P) + KL(M || Q).

  With M = (P + Q) / 2: sum (p + q) log((p + q) / (2 sqrt(p q))) (Taneja 1995).
  This is TFP's `arithmetic_geometric` with self_normalized=True; its default
  omits the -(1 + u) log 2 term and so adds 2 log 2 to D_f. Self-dual;
  evaluated as (1 + e^x) log cosh(x / 2). No conjugate is provided.

  Example:
    >>> round(float(arithmetic_geometric().f(1.0)), 4)
    0.0
  """
  log_form = lambda x: (1.0 + jnp.exp(x)) * _log_cosh(0.5 * x)
  return Generator("arithmetic_geometric", log_form, log_form, _INF, _INF)


# ----------------------------------------------------------------------------
# Combinators.


def _check_generator(g) -> None:
  if not isinstance(g, Generator):
    raise ValueError(f"`g` must be a Generator, got {type(g).__name__}.")


def dual(g: Generator) -> Generator:
  """The dual (perspective) generator f_dual(v) = v f(1/v).

  D_{f_dual}(P || Q) = D_f(Q || P): the dual swaps the arguments, e.g.
  dual(kl_forward()) is the reverse KL. dual(dual(g)) == g.

  Args:
    g: a generator, e.g. `pearson()`.

  Returns:
    The generator of D_f(Q || P).

  Example:
    >>> round(float(dual(pearson()).f(0.5)), 4)  # (1 - v)^2 / v
    0.5
  """
  _check_generator(g)
  return _dual(g)


@functools.lru_cache(maxsize=None)
def _dual(g: Generator) -> Generator:
  if g.name.startswith("dual(") and g.name.endswith(")"):
    name = g.name[len("dual("):-1]
  else:
    name = f"dual({g.name})"
  return Generator(name, g.dual_f_of_log, g.f_of_log, g.dual_at_zero, g.f_at_zero,
                   g.dual_conjugate, g.conjugate)


def symmetrized(g: Generator) -> Generator:
  """(f + f_dual) / 2: D = (D_f(P || Q) + D_f(Q || P)) / 2, symmetric in P and Q.

  The same 1/2 as TFP's `symmetrized_csiszar_function`, so
  symmetrized(kl_forward()) is `jeffreys()` (half of Jeffreys' 1946 sum) and
  symmetrized(pearson()) is half of Pearson plus Neyman chi^2. Self-dual; no
  conjugate is provided.

  Args:
    g: a generator, e.g. `kl_forward()`.

  Returns:
    The generator of (D_f(P || Q) + D_f(Q || P)) / 2.

  Example:
    >>> round(float(symmetrized(kl_forward()).f(2.0)), 4)  # (2 - 1) log(2) / 2
    0.3466
  """
  _check_generator(g)
  return _symmetrized(g)


@functools.lru_cache(maxsize=None)
def _symmetrized(g: Generator) -> Generator:
  log_form = lambda x: 0.5 * (g.f_of_log(x) + g.dual_f_of_log(x))
  at_zero = 0.5 * (g.f_at_zero + g.dual_at_zero)
  return Generator(f"symmetrized({g.name})", log_form, log_form, at_zero, at_zero)
