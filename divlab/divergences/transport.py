"""Optimal-transport distances between sample sets: Sinkhorn (ott-jax) and sliced W_p.

The Sinkhorn quantities are thin wrappers around ott-jax (`PointCloud` geometry
with the squared Euclidean cost `c(a, b) = ||a - b||^2`, a `LinearProblem`, the
`Sinkhorn` solver). `epsilon` is always the **absolute** entropic regularisation
strength, in the units of the cost (squared distance): divlab passes it to ott
with `relative_epsilon=None`, where ott then uses it as is. (ott's own default,
`epsilon=None`, would instead pick 0.05 times the standard deviation of the cost
matrix; divlab never relies on that.)

Three things the wrappers add to ott:

* **Non-convergence is visible.** When the solver stops at `max_iterations`
  with a marginal error above `threshold` (or diverges), the result is NaN,
  value and gradient, unless `accept_unconverged=True`. The check reads the
  last error ott recorded, not ott's `converged` flag, which also reports True
  when the loop stopped on an unevaluated (infinite) error entry.
* **Epsilon annealing** (`anneal_start`, `anneal_decay`): ott's geometric
  epsilon schedule, starting at `anneal_start * epsilon` and shrinking by
  `anneal_decay` per iteration down to `epsilon`. No convergence test is made
  before the schedule has reached `epsilon`, so a stop always happens at the
  requested regularisation. Small epsilon (say 1e-4 on unit-scale data)
  converges this way where plain iterations stall.
* **Gradients at every epsilon.** `sinkhorn` differentiates through the
  iterations; `sinkhorn_divergence` uses the envelope theorem (see each
  docstring for which quantity is differentiated and why).

The sliced Wasserstein distance needs no solver: it sorts random 1-D
projections, which is exact for every direction.

Bad inputs: empty sample sets, mismatched dimensions, weights that are
negative, non-finite, all zero or of the wrong shape, and non-positive or
infinite `epsilon` / `threshold` raise a ValueError naming the argument. A NaN
or infinite sample gives NaN (the transport cost to a point at infinity has no
finite value, and two infinite samples are at distance inf - inf); so do, under
`jit`, a traced `epsilon`, `p` or weight vector outside its domain.
"""
from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from divlab import _checks
from divlab.divergences import _samples
from divlab.divergences import kernel

__all__ = ["sinkhorn", "sinkhorn_divergence", "sliced_wasserstein"]

# At most this many checkpoints of the potentials are kept for differentiating
# through the iterations: the error check interval grows with `max_iterations`
# instead, so the memory of `grad(sinkhorn)` does not grow with it.
_MAX_CHECKPOINTS = 200


def _prepare(x, y, epsilon, a, b, threshold):
  """Checked samples, normalised weights and the traced validity flag."""
  _samples.check_positive_finite(epsilon, "epsilon")
  _samples.check_positive_finite(threshold, "threshold")
  x = _samples.float_samples(x, "x")
  y = _samples.float_samples(y, "y")
  _samples.check_same_dim(x, y, "x", "y")
  dtype = jnp.promote_types(x.dtype, y.dtype)
  x, y = x.astype(dtype), y.astype(dtype)
  a, a_ok = _samples.normalised_weights(a, x.shape[0], dtype, "a")
  b, b_ok = _samples.normalised_weights(b, y.shape[0], dtype, "b")
  ok = _samples.all_finite(x, y) & _samples.positive_finite(epsilon) & a_ok & b_ok
  return x, y, a, b, ok


def _schedule(epsilon, max_iterations, anneal_start, anneal_decay):
  """ott epsilon (plain or annealed) and the loop settings that go with it.

  Returns `(epsilon_or_scheduler, solver_kwargs)`. The error is checked every
  `inner_iterations` (10, more when `max_iterations` > 2000, to bound the
  checkpoints). With annealing, `min_iterations` holds the loop until the
  schedule has reached `epsilon`. It is set one past a multiple of
  `inner_iterations` on purpose: ott skips the error computation before
  `min_iterations` and its divergence test then reads that skipped block's
  infinite entry, which would end the loop at once; one iteration later,
  the block that is read has a real error.
  """
  _checks.check_count(max_iterations, "max_iterations")
  inner_iterations = max(10, -(-int(max_iterations) // _MAX_CHECKPOINTS))
  settings = {"max_iterations": int(max_iterations),
              "inner_iterations": inner_iterations}
  if anneal_start is None:
    return epsilon, settings
  if not (_checks.is_concrete_number(anneal_start)
          and 1.0 <= float(anneal_start) < np.inf):
    raise ValueError(
        f"`anneal_start` must be a Python number >= 1 (a multiple of epsilon), "
        f"got {anneal_start!r}.")
  if not (_checks.is_concrete_number(anneal_decay)
          and 0.0 < float(anneal_decay) < 1.0):
    raise ValueError(f"`anneal_decay` must be a Python number in (0, 1), got "
                     f"{anneal_decay!r}.")
  from ott.geometry import epsilon_scheduler  # pylint: disable=g-import-not-at-top
  steps = math.ceil(math.log(float(anneal_start)) / -math.log(float(anneal_decay)))
  if steps > 0:
    blocks = -(-steps // inner_iterations)
    settings["min_iterations"] = blocks * inner_iterations + 1
    if settings["min_iterations"] + inner_iterations > max_iterations:
      raise ValueError(
          f"`max_iterations`={max_iterations} leaves no iterations after the "
          f"annealing schedule, which needs {steps} to reach epsilon; raise it "
          "or shorten the schedule (`anneal_start`, `anneal_decay`).")
  scheduler = epsilon_scheduler.Epsilon(
      target=epsilon, init=float(anneal_start), decay=float(anneal_decay))
  return scheduler, settings


def _converged(errors: jax.Array, threshold) -> jax.Array:
  """True when the last marginal error ott recorded is finite and below threshold.

  ott fills `errors` with -1 past the last check, and with inf where it skipped
  the computation.
  """
  recorded = jnp.sum(errors != -1)
  last = errors[jnp.maximum(recorded - 1, 0)]
  return (recorded > 0) & jnp.isfinite(last) & (last >= 0) & (last < threshold)


def sinkhorn(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike,
             epsilon: jax.typing.ArrayLike, *,
             a: Optional[jax.typing.ArrayLike] = None,
             b: Optional[jax.typing.ArrayLike] = None,
             max_iterations: int = 2000,
             threshold: float = 1e-3,
             anneal_start: Optional[float] = None,
             anneal_decay: float = 0.99,
             accept_unconverged: bool = False) -> jax.Array:
  """Transport cost <P, C> of the entropic OT plan between two point clouds.

  Solves `P = argmin_{P in U(a, b)} <P, C> - epsilon H(P)` with
  `C_ij = ||x_i - y_j||^2` by Sinkhorn's algorithm (ott-jax, log domain) and
  returns the primal transport cost `sum_ij P_ij C_ij`, without the entropy
  term. As `epsilon -> 0` it tends to the squared 2-Wasserstein distance
  `W_2^2`; for positive epsilon it is biased (and is not 0 for identical
  clouds: see `sinkhorn_divergence`).

  Convergence: if the marginal error (L1, ott's measure) is still above
  `threshold` after `max_iterations`, the result is NaN (value and gradient),
  so an unconverged number is never mistaken for a cost; `accept_unconverged`
  returns it anyway. Small epsilon needs annealing (`anneal_start`) and, in
  float32, a threshold no tighter than about 1e-3 once epsilon is below ~1e-3
  times the cost scale (round-off in the potentials then dominates the
  marginal error); float64 reaches 1e-9.

  Gradient: the exact derivative of the returned `<P, C>`, obtained by
  differentiating through the Sinkhorn iterations (ott's checkpointed
  backward loop: at most 200 checkpoints of the potentials, each block of
  iterations recomputed once). The envelope theorem does not apply to the
  primal cost (it gives the gradient of the regularised objective
  `<P, C> + epsilon KL(P || a b^T)`, which is what `sinkhorn_divergence`
  differentiates), and ott's default implicit differentiation solves a linear
  system that is nearly singular once the plan is close to a permutation: with
  x, y of shape [64, 16] it fails ("operator was not well-posed") already at
  epsilon = 0.1. Value and gradient together take about three times the
  forward solve (x, y of shape [1000, 16], epsilon 0.1, on a CPU).

  References:
    Cuturi, "Sinkhorn distances: lightspeed computation of optimal transport",
    NeurIPS 2013; Cuturi et al., "Optimal Transport Tools (OTT)", 2022;
    Schmitzer, "Stabilized sparse scaling algorithms for entropy regularized
    transport problems", SIAM J. Sci. Comput. 2019 (epsilon scaling).

  Args:
    x: source samples `[n, d]` (or `[n]`), n >= 1.
    y: target samples `[m, d]` (or `[m]`), m >= 1.
    epsilon: positive, finite absolute entropic regularisation, in
      squared-distance units (see the module docstring); no default, since it
      depends on scale.
    a: optional non-negative weights `[n]` of x with a positive sum,
      normalised to sum to one; default uniform.
    b: optional non-negative weights `[m]` of y, normalised; default uniform.
    max_iterations: Sinkhorn iteration cap (ott's default, 2000).
    threshold: stopping tolerance on the L1 marginal error (ott's default,
      1e-3); tighten it when the cost must be accurate.
    anneal_start: None (default) for plain iterations at `epsilon`; otherwise a
      Python number >= 1: the iterations start at `anneal_start * epsilon`.
    anneal_decay: factor in (0, 1) by which the annealed epsilon shrinks per
      iteration (default 0.99: 930 iterations from 1e4 x epsilon).
    accept_unconverged: Python bool; return the cost even when the solver did
      not converge (default False: NaN).

  Returns:
    Scalar transport cost; NaN when the solver did not converge (unless
    accepted), for a NaN or infinite sample, and for a traced `epsilon` or
    weight vector outside its domain under `jit`.

  Example:
    >>> x = jnp.array([[0.], [1.]]); y = x + 2.0
    >>> round(float(sinkhorn(x, y, 0.01)), 2)  # every point moves by 2
    4.0
    >>> z = jnp.array([[0.], [0.3], [1.]])
    >>> round(float(sinkhorn(z, z + 0.1, 1e-4, anneal_start=1e4)), 4)
    0.01
  """
  x, y, a, b, ok = _prepare(x, y, epsilon, a, b, threshold)
  schedule, settings = _schedule(epsilon, max_iterations, anneal_start, anneal_decay)
  # ott is imported on first use: it is two thirds of `import divlab`'s time,
  # which every subprocess, notebook kernel and test worker pays otherwise.
  from ott.geometry import geometry  # pylint: disable=g-import-not-at-top
  from ott.problems.linear import linear_problem  # pylint: disable=g-import-not-at-top
  from ott.solvers.linear import sinkhorn as ott_sinkhorn  # pylint: disable=g-import-not-at-top
  # The cost matrix comes from differences (divlab's squared distances), not
  # ott's |x|^2 + |y|^2 - 2 x.y: that form goes through a matmul, which on GPUs
  # defaults to TF32 and moved the plan visibly (gradients 10% off on an H200),
  # also in the backward pass, where no precision context reaches.
  geom = geometry.Geometry(cost_matrix=kernel.squared_distances(x, y), epsilon=schedule,
                           relative_epsilon=None)
  problem = linear_problem.LinearProblem(geom, a=a, b=b)
  # implicit_diff=None: differentiate through the iterations (see docstring).
  solver = ott_sinkhorn.Sinkhorn(threshold=threshold, implicit_diff=None, **settings)
  out = solver(problem)
  cost = out.primal_cost
  if not accept_unconverged:
    ok = ok & _converged(out.errors, threshold)
  return _samples.nan_unless(cost, ok)


def sinkhorn_divergence(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike,
                        epsilon: jax.typing.ArrayLike, *,
                        a: Optional[jax.typing.ArrayLike] = None,
                        b: Optional[jax.typing.ArrayLike] = None,
                        max_iterations: int = 2000,
                        threshold: float = 1e-3,
                        anneal_start: Optional[float] = None,
                        anneal_decay: float = 0.99,
                        accept_unconverged: bool = False) -> jax.Array:
  """Debiased Sinkhorn divergence between two point clouds (squared Euclidean cost).

  `S_eps(x, y) = OT_eps(x, y) - (OT_eps(x, x) + OT_eps(y, y)) / 2`, where the
  debiased quantity is the **regularised** cost
  `OT_eps = min_P <P, C> + epsilon KL(P || a b^T)` (ott's `reg_ot_cost`), not the
  primal cost returned by `sinkhorn`. With this choice S_eps is non-negative,
  0 for identical clouds, and interpolates between `W_2^2` (epsilon -> 0) and an
  energy-distance MMD (epsilon -> infinity). Computed by
  `ott.tools.sinkhorn_divergence` with the symmetric updates of Feydy et al.
  for the two self terms.

  Gradient: by the envelope (Danskin) theorem, each `OT_eps` term is
  differentiated with its optimal dual potentials held fixed, e.g.
  `d OT_eps(x, y) / d x_i = sum_j P_ij d c(x_i, y_j) / d x_i`; no linear system
  is solved, so it works at every epsilon, and it is exact once the solver has
  converged (which the NaN rule below guarantees).

  Convergence: NaN (value and gradient) unless all three problems reach
  `threshold` within `max_iterations`, or `accept_unconverged=True`; annealing
  as in `sinkhorn` (the self terms share the schedule).

  References:
    Feydy et al., "Interpolating between optimal transport and MMD using
    Sinkhorn divergences", AISTATS 2019; Genevay, Peyre, Cuturi, "Learning
    generative models with Sinkhorn divergences", AISTATS 2018.

  Args:
    x: samples `[n, d]` (or `[n]`), n >= 1.
    y: samples `[m, d]` (or `[m]`), m >= 1.
    epsilon: positive, finite absolute entropic regularisation
      (squared-distance units).
    a: optional non-negative weights `[n]` with a positive sum (normalised);
      default uniform.
    b: optional non-negative weights `[m]` (normalised); default uniform.
    max_iterations: Sinkhorn iteration cap for each of the three problems.
    threshold: stopping tolerance on the marginal error (L1).
    anneal_start: None, or the multiple of `epsilon` to anneal from (see
      `sinkhorn`).
    anneal_decay: per-iteration factor of the annealing schedule, in (0, 1).
    accept_unconverged: return the value even when a problem did not converge.

  Returns:
    Scalar divergence (>= 0 up to the solver tolerance); NaN when a problem
    did not converge (unless accepted), for a NaN or infinite sample, and for
    a traced `epsilon` or weight vector outside its domain under `jit`.

  Example:
    >>> x = jnp.array([[0.], [1.]])
    >>> abs(float(sinkhorn_divergence(x, x, 0.1))) < 1e-4
    True
  """
  x, y, a, b, ok = _prepare(x, y, epsilon, a, b, threshold)
  schedule, settings = _schedule(epsilon, max_iterations, anneal_start, anneal_decay)
  from ott.geometry import pointcloud  # pylint: disable=g-import-not-at-top
  from ott.tools import sinkhorn_divergence as ott_divergence  # pylint: disable=g-import-not-at-top
  with jax.default_matmul_precision("float32"):  # as in `sinkhorn`
    value, out = ott_divergence.sinkhorn_divergence(
        pointcloud.PointCloud, x, y, a=a, b=b, epsilon=schedule,
        relative_epsilon=None,
        solve_kwargs={"threshold": threshold, "use_danskin": True, **settings})
  if not accept_unconverged:
    for errors in out.errors:
      ok = ok & _converged(errors, threshold)
  return _samples.nan_unless(value, ok)


def _quantile_grid(n: int, m: int):
  """Static merge of the quantile breakpoints {i/n} and {j/m} of two samples.

  Returns, for each interval of (0, 1] on which both empirical quantile
  functions are constant, its length and the order-statistic index of each
  sample there. Levels are integers in units of 1/(n m), so the merge is exact.
  """
  levels = np.union1d(np.arange(1, n + 1) * m, np.arange(1, m + 1) * n)
  widths = np.diff(levels, prepend=0) / (n * m)
  index_x = -(-levels // m) - 1  # ceil(level / m) - 1
  index_y = -(-levels // n) - 1
  return widths, index_x, index_y


def sliced_wasserstein(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike,
                       key: jax.Array, *, num_projections: int = 128,
                       p: float = 2) -> jax.Array:
  """Monte-Carlo sliced p-Wasserstein distance between two point clouds.

  `SW_p(x, y) = (mean_l W_p^p(<theta_l, x>, <theta_l, y>))^(1/p)` over
  `num_projections` directions `theta_l` drawn uniformly on the unit sphere
  (normalised Gaussian vectors from `key`). Each 1-D distance is exact:
  `W_p^p = int_0^1 |F^-1(t) - G^-1(t)|^p dt` between the empirical quantile
  functions of the projected samples (uniform weights). With equal sizes this
  is the mean of `|x_(i) - y_(i)|^p` over sorted projections; unequal sizes
  n != m are handled exactly by merging the quantile breakpoints i/n and j/m.
  In 1-D every direction is +-1, so the result is the exact `W_p`. The returned
  value is the distance (p-th root taken), with a zero gradient when it is 0.

  References:
    Rabin, Peyre, Delon, Bernot, "Wasserstein barycenter and its application
    to texture mixing", 2011; Bonneel et al., "Sliced and Radon Wasserstein
    barycenters of measures", 2015.

  Args:
    x: samples `[n, d]` (or `[n]`), n >= 1.
    y: samples `[m, d]` (or `[m]`), m >= 1.
    key: PRNG key for the projection directions.
    num_projections: number of random directions (default 128).
    p: finite order, `p >= 1` (default 2).

  Returns:
    Scalar distance; NaN for a NaN or infinite sample, and for a traced `p`
    outside [1, inf) under `jit`.

  Example:
    >>> key = jax.random.PRNGKey(0)
    >>> float(sliced_wasserstein(jnp.array([0., 1.]), jnp.array([2., 3.]), key))
    2.0
  """
  if jnp.ndim(p) != 0:
    raise ValueError(f"`p` must be a scalar, got shape {jnp.shape(p)}.")
  _checks.check_in_range(p, "p", 1.0, np.inf, high_inclusive=False)
  _checks.check_count(num_projections, "num_projections")
  x = _samples.float_samples(x, "x")
  y = _samples.float_samples(y, "y")
  _samples.check_same_dim(x, y, "x", "y")
  ok = _samples.all_finite(x, y) & (jnp.asarray(p) >= 1) & jnp.isfinite(p)
  dtype = jnp.promote_types(x.dtype, y.dtype)
  directions = jax.random.normal(key, (num_projections, x.shape[1]), dtype)
  directions = directions / jnp.linalg.norm(directions, axis=1, keepdims=True)
  x_sorted = jnp.sort(x.astype(dtype) @ directions.T, axis=0)  # [n, L]
  y_sorted = jnp.sort(y.astype(dtype) @ directions.T, axis=0)  # [m, L]
  widths, index_x, index_y = _quantile_grid(x.shape[0], y.shape[0])
  gaps = jnp.abs(x_sorted[index_x] - y_sorted[index_y])
  w_pp = jnp.asarray(widths, dtype) @ gaps ** p  # [L]: W_p^p per direction
  mean_w_pp = jnp.mean(w_pp)
  positive = mean_w_pp > 0
  distance = jnp.where(positive, jnp.where(positive, mean_w_pp, 1.0) ** (1.0 / p), 0.0)
  return _samples.nan_unless(distance, ok)
