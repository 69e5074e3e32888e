"""Unlearning objectives (GA, GradDiff, NPO, SimNPO) and the GU projection.

The losses are pure functions of per-example log-likelihoods, so they do not
care what the model is:

* for a classifier, ``logp = log p(y | x)`` (e.g. ``-softmax_cross_entropy``);
* for a language model, ``logp = sum_t log p(y_t | y_<t, x)`` over the answer
  tokens, which `sequence_log_likelihood` (from `divlab.losses.sequence`,
  re-exported here) computes from logits and a mask.

Conventions shared by every loss here:

* Every loss is written to be **minimised**. Forgetting a point means pushing
  its log-likelihood down, so the forget terms increase with ``logp``.
* The reference model (the model before unlearning) enters only through its
  log-likelihoods or logits, which are treated as constants
  (``jax.lax.stop_gradient``), so the functions stay pure.
* Per-example values come back with ``reduction='none'`` (the default);
  reducing reductions go through `divlab.losses.reduce_loss` with the given
  ``where`` masks, so padded examples never count.
* Losses with a forget and a retain term reduce each term over its own batch
  and add them, so the two batches may differ in size. With
  ``reduction='none'`` they return the per-pair sum
  ``forget_i + weight * retain_i`` and then need batches of the same shape
  (as in the released NPO code, whose loader yields one forget and one retain
  example per pair).
* Computation runs in at least float32 (bf16 inputs are upcast).

`gu_project` is the geometric-disentanglement (GU) step as an optax
`GradientTransformation`: it removes from the forget gradient its component
along the retain gradients, in the Euclidean metric or in Adam's geometry.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from divlab import _checks
from divlab import divergences
from divlab.losses.reductions import reduce_loss
# One copy, shared by every LM family; re-exported here for compatibility.
from divlab.losses.sequence import sequence_log_likelihood

__all__ = [
    "sequence_log_likelihood",
    "gradient_ascent",
    "grad_diff",
    "npo",
    "npo_rt",
    "npo_kl",
    "simnpo",
    "project_forget_gradient",
    "gu_inputs",
    "GUProjectState",
    "gu_project",
]

ArrayLike = jax.typing.ArrayLike

_METRICS = ("euclidean", "adam")


# ----------------------------------------------------------------------------
# Shared argument handling.
# ----------------------------------------------------------------------------


def _as_float(x: ArrayLike, name: str) -> jax.Array:
  """Returns `x` as an array computed in at least float32."""
  x = jnp.asarray(x)
  _checks.check_floating(x, name)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _blank(x: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  """Zeroes excluded entries before any arithmetic.

  A `where` on the output alone still lets 0 * inf = NaN into the backward
  pass when an excluded entry holds -inf (a padded log-likelihood).
  """
  return x if mask is None else jnp.where(mask, x, 0)


def _log_likelihood_pair(logp: ArrayLike, ref_logp: ArrayLike,
                         name: str, ref_name: str) -> tuple[jax.Array, jax.Array]:
  """Checks a model/reference pair; the reference becomes a constant."""
  logp = _as_float(logp, name)
  ref_logp = _as_float(ref_logp, ref_name)
  _checks.check_same_shape(logp, ref_logp, name, ref_name)
  dtype = jnp.promote_types(logp.dtype, ref_logp.dtype)
  return logp.astype(dtype), jax.lax.stop_gradient(ref_logp.astype(dtype))


def _check_weight(weight: Any, name: str) -> None:
  _checks.check_in_range(weight, name, 0.0, np.inf, high_inclusive=False)


def _forget_plus_retain(forget_values: jax.Array,
                        forget_mask: Optional[jax.Array],
                        retain_values: jax.Array,
                        retain_mask: Optional[jax.Array],
                        retain_weight: Any,
                        reduction: str,
                        normalizer: Optional[ArrayLike],
                        retain_name: str) -> jax.Array:
  """reduce(forget) + weight * reduce(retain), each over its own mask."""
  if reduction == "none" and forget_values.shape != retain_values.shape:
    raise ValueError(
        f"`{retain_name}` must give the same shape of per-example values as "
        f"`forget_logp` when reduction='none' (per-pair sums), got "
        f"{retain_values.shape} and {forget_values.shape}; use a reducing "
        "`reduction` such as 'mean'.")
  forget_term = reduce_loss(forget_values, reduction, where=forget_mask,
                            normalizer=normalizer)
  retain_term = reduce_loss(retain_values, reduction, where=retain_mask,
                            normalizer=normalizer)
  return forget_term + retain_weight * retain_term


# ----------------------------------------------------------------------------
# Forget objectives.
# ----------------------------------------------------------------------------


def gradient_ascent(forget_logp: ArrayLike,
                    *,
                    where: Optional[ArrayLike] = None,
                    reduction: str = "none",
                    normalizer: Optional[ArrayLike] = None) -> jax.Array:
  """Gradient ascent (GA) on the forget set: L = log pi_theta(y | x).

  Minimising the log-likelihood is gradient *ascent* on the usual NLL, which
  is where the name comes from. The loss is unbounded below, so GA diverges if
  run long enough (the behaviour NPO was designed to fix). Source: the GA
  baseline of Zhang et al., "Negative Preference Optimization" (2024); also
  Jang et al. (2023), "Knowledge Unlearning".

  Args:
    forget_logp: ``[...]`` log-likelihoods of the forget examples.
    where: optional ``[...]`` mask of valid forget examples.
    reduction: see `divlab.losses.reduce_loss` (default per-example).
    normalizer: divisor for ``reduction='normalizer'``.

  Returns:
    ``[...]`` per-example losses, or a scalar for a reducing ``reduction``.

  Example:
    >>> gradient_ascent(jnp.array([-1.0, -3.0]), reduction="mean")
    Array(-2., dtype=float32)
  """
  forget_logp = _as_float(forget_logp, "forget_logp")
  mask = _checks.broadcast_mask(where, forget_logp.shape, "where")
  return reduce_loss(_blank(forget_logp, mask), reduction, where=mask,
                     normalizer=normalizer)


def grad_diff(forget_logp: ArrayLike,
              retain_logp: ArrayLike,
              *,
              retain_weight: float = 1.0,
              forget_where: Optional[ArrayLike] = None,
              retain_where: Optional[ArrayLike] = None,
              reduction: str = "none",
              normalizer: Optional[ArrayLike] = None) -> jax.Array:
  """Gradient difference: GA on the forget set plus NLL on the retain set.

  Source: Liu et al. (2022), "Continual Learning and Private Unlearning"; the
  GradDiff baseline of the TOFU benchmark (Maini et al., 2024) and of NPO.

  ``L = log pi(y_f | x_f) - retain_weight * log pi(y_r | x_r)``

  Args:
    forget_logp: ``[...]`` forget log-likelihoods.
    retain_logp: ``[...]`` retain log-likelihoods (same shape as
      ``forget_logp`` when ``reduction='none'``).
    retain_weight: weight of the retain NLL (>= 0).
    forget_where: optional mask of valid forget examples.
    retain_where: optional mask of valid retain examples.
    reduction: see the module docstring: each term is reduced over its own
      mask and the two are added; ``'none'`` gives per-pair sums.
    normalizer: divisor for ``reduction='normalizer'``, used for both terms.

  Returns:
    Per-pair values ``[...]`` or a scalar.

  Example:
    >>> grad_diff(jnp.array([-1.0]), jnp.array([-0.5]))
    Array([-0.5], dtype=float32)
  """
  forget_logp = _as_float(forget_logp, "forget_logp")
  retain_logp = _as_float(retain_logp, "retain_logp")
  _check_weight(retain_weight, "retain_weight")
  forget_mask = _checks.broadcast_mask(forget_where, forget_logp.shape, "forget_where")
  retain_mask = _checks.broadcast_mask(retain_where, retain_logp.shape, "retain_where")
  return _forget_plus_retain(_blank(forget_logp, forget_mask), forget_mask,
                             -_blank(retain_logp, retain_mask), retain_mask,
                             retain_weight, reduction, normalizer, "retain_logp")


def _npo_values(logp: jax.Array, ref_logp: jax.Array, beta: Any) -> jax.Array:
  """(2/beta) softplus(beta (log pi - log pi_ref)) = -(2/beta) log sigmoid(...)."""
  return (2.0 / beta) * jax.nn.softplus(beta * (logp - ref_logp))


def npo(forget_logp: ArrayLike,
        forget_ref_logp: ArrayLike,
        *,
        beta: float = 0.1,
        where: Optional[ArrayLike] = None,
        reduction: str = "none",
        normalizer: Optional[ArrayLike] = None) -> jax.Array:
  """Negative preference optimisation (NPO) on the forget set.

  ``L = -(2/beta) log sigmoid(beta [log pi_ref(y|x) - log pi_theta(y|x)])``

  DPO with only a dispreferred answer. The gradient with respect to
  ``log pi_theta`` is ``2 sigmoid(beta [log pi_theta - log pi_ref])``: it is 1
  at the start (pi_theta = pi_ref) and vanishes once the model has forgotten,
  which is what keeps NPO from GA's collapse. As ``beta -> 0`` the gradient
  tends to 1 everywhere, i.e. to the gradient of `gradient_ascent` (scale
  exactly 1 thanks to the 2/beta factor); the value tends to
  ``(2/beta) log 2 + log pi_theta - log pi_ref``, which differs from GA by a
  constant.

  Follows the released code (Zhang et al., "Negative Preference Optimization",
  2024): ``-logsigmoid(beta * (NLL_theta - NLL_ref)) * 2 / beta`` with
  sequence-summed NLLs, which is the paper's formula.

  Args:
    forget_logp: ``[...]`` log-likelihoods under the model being unlearned.
    forget_ref_logp: ``[...]`` log-likelihoods under the reference model
      (the model before unlearning); treated as constants.
    beta: inverse temperature (> 0); the paper's default is 0.1.
    where: optional ``[...]`` mask of valid forget examples.
    reduction: see `divlab.losses.reduce_loss` (default per-example).
    normalizer: divisor for ``reduction='normalizer'``.

  Returns:
    ``[...]`` per-example losses (>= 0), or a scalar.

  Example:
    >>> npo(jnp.array([-2.0]), jnp.array([-2.0]), beta=0.5)  # (2/0.5) log 2
    Array([2.7725887], dtype=float32)
  """
  logp, ref_logp = _log_likelihood_pair(forget_logp, forget_ref_logp,
                                        "forget_logp", "forget_ref_logp")
  _checks.check_positive(beta, "beta")
  mask = _checks.broadcast_mask(where, logp.shape, "where")
  values = _npo_values(_blank(logp, mask), _blank(ref_logp, mask), beta)
  return reduce_loss(values, reduction, where=mask, normalizer=normalizer)


def npo_rt(forget_logp: ArrayLike,
           forget_ref_logp: ArrayLike,
           retain_logp: ArrayLike,
           *,
           beta: float = 0.1,
           retain_weight: float = 1.0,
           forget_where: Optional[ArrayLike] = None,
           retain_where: Optional[ArrayLike] = None,
           reduction: str = "none",
           normalizer: Optional[ArrayLike] = None) -> jax.Array:
  """NPO plus the retain-set NLL (NPO+RT; "npo_grad_diff" in the released code).

  Source: Zhang et al., "Negative Preference Optimization" (2024), Sec. 5.

  ``L = NPO(forget) - retain_weight * log pi_theta(y_r | x_r)``

  The released code adds the retain set's token-mean NLL (the model's
  ``outputs.loss``); here the retain term is whatever log-likelihood is
  passed, so pass a length-normalised ``retain_logp`` to reproduce that scale.

  Args:
    forget_logp: ``[...]`` forget log-likelihoods under the model.
    forget_ref_logp: ``[...]`` forget log-likelihoods under the reference.
    retain_logp: ``[...]`` retain log-likelihoods under the model.
    beta: NPO inverse temperature (> 0).
    retain_weight: weight of the retain NLL (>= 0).
    forget_where: optional mask of valid forget examples.
    retain_where: optional mask of valid retain examples.
    reduction: each term reduced over its own mask, then added (see module).
    normalizer: divisor for ``reduction='normalizer'``, used for both terms.

  Returns:
    Per-pair values ``[...]`` or a scalar.

  Example:
    >>> npo_rt(jnp.array([-2.0]), jnp.array([-2.0]), jnp.array([-1.0]), beta=2.0)
    Array([1.6931472], dtype=float32)
  """
  logp, ref_logp = _log_likelihood_pair(forget_logp, forget_ref_logp,
                                        "forget_logp", "forget_ref_logp")
  retain_logp = _as_float(retain_logp, "retain_logp")
  _checks.check_positive(beta, "beta")
  _check_weight(retain_weight, "retain_weight")
  forget_mask = _checks.broadcast_mask(forget_where, logp.shape, "forget_where")
  retain_mask = _checks.broadcast_mask(retain_where, retain_logp.shape, "retain_where")
  forget_values = _npo_values(_blank(logp, forget_mask),
                              _blank(ref_logp, forget_mask), beta)
  return _forget_plus_retain(forget_values, forget_mask,
                             -_blank(retain_logp, retain_mask), retain_mask,
                             retain_weight, reduction, normalizer, "retain_logp")


def npo_kl(forget_logp: ArrayLike,
           forget_ref_logp: ArrayLike,
           retain_logits: ArrayLike,
           retain_ref_logits: ArrayLike,
           *,
           beta: float = 0.1,
           kl_weight: float = 1.0,
           forget_where: Optional[ArrayLike] = None,
           retain_where: Optional[ArrayLike] = None,
           reduction: str = "none",
           normalizer: Optional[ArrayLike] = None) -> jax.Array:
  """NPO plus KL(pi_ref || pi_theta) on the retain set (NPO+KL).

  Source: Zhang et al., "Negative Preference Optimization" (2024), Sec. 5.

  ``L = NPO(forget) + kl_weight * sum_positions KL(pi_ref(.|ctx) || pi_theta(.|ctx))``

  The retain term compares the two models' predictive distributions at every
  retain position. Per example it is *summed* over positions (the
  teacher-forced KL between sequence distributions, consistent with the
  sequence-summed log-likelihoods of the NPO term). The released code
  (``F.kl_div(current, ref, log_target=True, reduction='batchmean')`` on the
  flattened positions) averages over all positions of the batch, padding
  included; with ``reduction='mean'`` this function averages over sequences
  and never counts padding, so its KL term is larger by the mean sequence
  length. For a classifier (``[B, C]`` logits) the two agree.

  Args:
    forget_logp: ``[B_f]`` (or ``[...]``) forget log-likelihoods.
    forget_ref_logp: same shape, under the reference model.
    retain_logits: ``[B_r, ..., V]`` logits of the model on retain data: batch
      axis first, optional position axes, vocabulary/class axis last.
    retain_ref_logits: same shape, from the reference model (constants).
    beta: NPO inverse temperature (> 0).
    kl_weight: weight of the retain KL (>= 0).
    forget_where: optional mask of valid forget examples.
    retain_where: optional mask broadcastable to ``retain_logits.shape[:-1]``
      of valid retain positions; an example with no valid position is
      excluded from the reduction.
    reduction: each term reduced over its own mask, then added (see module).
    normalizer: divisor for ``reduction='normalizer'``, used for both terms.

  Returns:
    Per-pair values ``[B]`` or a scalar.

  Example:
    >>> z = jnp.array([[0.0, 1.0]])
    >>> npo_kl(jnp.array([-1.0]), jnp.array([-1.0]), z, z, beta=2.0)  # log 2
    Array([0.6931472], dtype=float32)
  """
  logp, ref_logp = _log_likelihood_pair(forget_logp, forget_ref_logp,
                                        "forget_logp", "forget_ref_logp")
  retain_logits, retain_ref_logits = _log_likelihood_pair(
      retain_logits, retain_ref_logits, "retain_logits", "retain_ref_logits")
  if retain_logits.ndim < 2:
    raise ValueError("`retain_logits` must have shape [B, ..., V] (a batch axis "
                     f"and a class axis), got {retain_logits.shape}.")
  _checks.check_positive(beta, "beta")
  _check_weight(kl_weight, "kl_weight")
  forget_mask = _checks.broadcast_mask(forget_where, logp.shape, "forget_where")
  position_mask = _checks.broadcast_mask(retain_where, retain_logits.shape[:-1], "retain_where")
  forget_values = _npo_values(_blank(logp, forget_mask),
                              _blank(ref_logp, forget_mask), beta)
  if position_mask is not None:
    retain_logits = jnp.where(position_mask[..., None], retain_logits, 0)
    retain_ref_logits = jnp.where(position_mask[..., None], retain_ref_logits, 0)
  position_kl = divergences.kl(retain_ref_logits, retain_logits)
  position_kl = _blank(position_kl, position_mask)
  position_axes = tuple(range(1, position_kl.ndim))
  retain_values = position_kl.sum(axis=position_axes)
  retain_mask = (None if position_mask is None else
                 position_mask.any(axis=position_axes))
  return _forget_plus_retain(forget_values, forget_mask, retain_values,
                             retain_mask, kl_weight, reduction, normalizer,
                             "retain_logits")


def simnpo(forget_logp: ArrayLike,
           lengths: ArrayLike,
           *,
           beta: float = 2.5,
           gamma: float = 0.0,
           where: Optional[ArrayLike] = None,
           reduction: str = "none",
           normalizer: Optional[ArrayLike] = None) -> jax.Array:
  """SimNPO: reference-free, length-normalised NPO.

  ``L = -(2/beta) log sigmoid(-(beta/|y|) log pi_theta(y|x) - gamma)``

  NPO with the reference model replaced by a length-normalised reward and a
  margin ``gamma`` (Fan et al., "Simplicity Prevails: Rethinking Negative
  Preference Optimization for LLM Unlearning", 2024). This follows the
  paper's form, where ``gamma`` sits outside ``beta``. The released code
  computes ``-logsigmoid(beta * (NLL / |y| - gamma_code)) * 2 / beta``, i.e.
  the same loss with ``gamma = beta * gamma_code``; both default to 0, where
  they agree. Defaults ``beta = 2.5, gamma = 0`` are the released TOFU
  forget05 setting.

  Args:
    forget_logp: ``[...]`` sequence log-likelihoods of the forget answers.
    lengths: ``[...]`` answer lengths ``|y|`` (token counts, >= 0); a length of
      0 is treated as 1 (its summed log-likelihood is 0, so no NaN arises).
    beta: inverse temperature (> 0).
    gamma: reward margin (paper convention, see above).
    where: optional ``[...]`` mask of valid forget examples.
    reduction: see `divlab.losses.reduce_loss` (default per-example).
    normalizer: divisor for ``reduction='normalizer'``.

  Returns:
    ``[...]`` per-example losses (>= 0), or a scalar.

  Example:
    >>> simnpo(jnp.array([-4.0]), jnp.array([4]), beta=1.0, gamma=1.0)
    Array([1.3862944], dtype=float32)
  """
  logp = _as_float(forget_logp, "forget_logp")
  lengths = jnp.asarray(lengths)
  if lengths.shape != logp.shape:
    raise ValueError(f"`lengths` must have the shape of `forget_logp`, "
                     f"{logp.shape}, got {lengths.shape}.")
  if not isinstance(lengths, jax.core.Tracer) and bool(jnp.any(lengths < 0)):
    raise ValueError("`lengths` must be non-negative token counts.")
  _checks.check_positive(beta, "beta")
  _checks.check_scalar(gamma, "gamma")
  mask = _checks.broadcast_mask(where, logp.shape, "where")
  safe_lengths = jnp.maximum(lengths.astype(logp.dtype), 1)
  normalised = _blank(logp, mask) / safe_lengths
  values = (2.0 / beta) * jax.nn.softplus(beta * normalised + gamma)
  return reduce_loss(values, reduction, where=mask, normalizer=normalizer)


# ----------------------------------------------------------------------------
# Geometric-disentanglement (GU) projection.
# ----------------------------------------------------------------------------


def _tree_inner(a: Any, b: Any, weights: Optional[Any]) -> jax.Array:
  """<a, b>_H = sum over all leaves of w * a * b (w = 1 for Euclidean)."""
  if weights is None:
    terms = jax.tree.map(lambda x, y: jnp.sum(x * y), a, b)
  else:
    terms = jax.tree.map(lambda x, y, w: jnp.sum(w * x * y), a, b, weights)
  return sum(jax.tree.leaves(terms), jnp.zeros((), jnp.float32))


def _axpy(alpha: jax.Array, x: Any, y: Any) -> Any:
  """y + alpha * x, leafwise."""
  return jax.tree.map(lambda xi, yi: yi + alpha * xi, x, y)


def _split_directions(retain_directions: Any, forget_grads: Any,
                      retain_name: str = "retain",
                      forget_name: str = "forget") -> list[Any]:
  """Unstacks ``[K, ...]`` retain leaves into K trees shaped like the forget tree.

  The names are the caller's: `project_forget_gradient` reports its own
  arguments, `gu_project` the entries of its ``updates``.
  """
  forget_leaves, forget_def = jax.tree.flatten(forget_grads)
  retain_leaves, retain_def = jax.tree.flatten(retain_directions)
  if retain_def != forget_def:
    raise ValueError(f"`{retain_name}` must have the tree structure of "
                     f"`{forget_name}`, got {retain_def} and {forget_def}.")
  if not forget_leaves:
    raise ValueError(f"`{forget_name}` must hold at least one array.")
  counts = set()
  for f, r in zip(forget_leaves, retain_leaves):
    f_shape, r_shape = jnp.shape(f), jnp.shape(r)
    if r_shape[1:] != f_shape or len(r_shape) != len(f_shape) + 1:
      raise ValueError(
          f"each `{retain_name}` leaf must be the matching `{forget_name}` leaf "
          f"stacked along a new leading axis of K directions: {forget_name} "
          f"{f_shape}, {retain_name} {r_shape}. Build the input with `gu_inputs`.")
    counts.add(r_shape[0])
  if len(counts) != 1 or 0 in counts:
    raise ValueError(f"every `{retain_name}` leaf must stack the same number "
                     f"K >= 1 of directions, got {sorted(counts)}.")
  num_directions = counts.pop()
  return [jax.tree.unflatten(forget_def, [r[k] for r in retain_leaves])
          for k in range(num_directions)]


def project_forget_gradient(forget_grads: Any,
                            retain_directions: Any,
                            *,
                            metric_weights: Optional[Any] = None,
                            only_if_conflicting: bool = False,
                            rank_tolerance: float = 1e-6) -> Any:
  """Removes from a forget gradient its component along retain gradients.

  GU (default): ``g_f_perp = (I - U (U^T H U)^{-1} U^T H) g_f``, the
  H-orthogonal projection onto the complement of span(U), with
  ``U = [u_1 .. u_K]`` the retain directions and ``H = diag(metric_weights)``.
  For one direction this is ``g_f - (<g_f, g_r>_H / <g_r, g_r>_H) g_r``,
  applied whatever the sign of the inner product. Several directions are made
  H-orthonormal by Gram-Schmidt (two passes, for stability) and all are
  projected out; a direction whose residual norm falls below
  ``rank_tolerance`` times its own norm is dropped as linearly dependent, as
  in the released code's retain basis. Inner products run over the whole
  pytree (one global projection, not one per leaf).

  PCGrad (``only_if_conflicting=True``): the retain directions are visited in
  order and ``g`` is projected off ``u_k`` only when ``<g, u_k>_H < 0`` (``g``
  being the partly projected gradient), as in Yu et al., "Gradient Surgery
  for Multi-Task Learning", 2020, with the retain task never projected. With
  several directions the result need not be orthogonal to all of them.

  References: Zhou et al., "Geometric-disentanglement Unlearning", 2025; the
  formula and the Gram-Schmidt basis follow the paper and its released code.

  Args:
    forget_grads: pytree of forget gradients.
    retain_directions: the same pytree with every leaf stacked along a new
      leading axis of K retain directions (``[K, *leaf.shape]``).
    metric_weights: optional pytree like ``forget_grads`` of positive
      diagonal metric entries ``H``; None means the Euclidean metric.
    only_if_conflicting: PCGrad behaviour instead of GU's.
    rank_tolerance: relative norm below which a Gram-Schmidt residual counts
      as zero (GU mode only).

  Returns:
    The projected forget gradient, a pytree like ``forget_grads``.

  Example:
    >>> project_forget_gradient({"w": jnp.array([1.0, 1.0])},
    ...                         {"w": jnp.array([[2.0, 0.0]])})
    {'w': Array([0., 1.], dtype=float32)}
  """
  directions = _split_directions(retain_directions, forget_grads,
                                 "retain_directions", "forget_grads")
  _checks.check_positive(rank_tolerance, "rank_tolerance")
  if metric_weights is not None:
    if jax.tree.structure(metric_weights) != jax.tree.structure(forget_grads):
      raise ValueError("`metric_weights` must have the tree structure of "
                       "`forget_grads`.")
    for w, f in zip(jax.tree.leaves(metric_weights), jax.tree.leaves(forget_grads)):
      if jnp.shape(w) != jnp.shape(f):
        raise ValueError(f"each `metric_weights` leaf must have the shape of its "
                         f"`forget_grads` leaf, got {jnp.shape(w)} and "
                         f"{jnp.shape(f)}.")
  as_f32 = lambda tree: jax.tree.map(
      lambda x: jnp.asarray(x, jnp.promote_types(jnp.result_type(x),
                                                 jnp.float32)), tree)
  forget = as_f32(forget_grads)
  directions = [as_f32(d) for d in directions]
  weights = None if metric_weights is None else as_f32(metric_weights)

  if only_if_conflicting:
    projected = forget
    for direction in directions:
      dot = _tree_inner(projected, direction, weights)
      norm_sq = _tree_inner(direction, direction, weights)
      coefficient = jnp.where((dot < 0) & (norm_sq > 0),
                              dot / jnp.where(norm_sq > 0, norm_sq, 1), 0.0)
      projected = _axpy(-coefficient, direction, projected)
  else:
    basis = []
    for direction in directions:
      residual = direction
      for _ in range(2):
        for unit in basis:
          residual = _axpy(-_tree_inner(residual, unit, weights), unit, residual)
      norm = jnp.sqrt(jnp.maximum(_tree_inner(residual, residual, weights), 0))
      original_norm = jnp.sqrt(jnp.maximum(
          _tree_inner(direction, direction, weights), 0))
      keep = (norm > rank_tolerance * original_norm) & (norm > 0)
      scale = jnp.where(keep, 1.0 / jnp.where(keep, norm, 1.0), 0.0)
      basis.append(jax.tree.map(lambda x: scale * x, residual))
    projected = forget
    for unit in basis:
      projected = _axpy(-_tree_inner(forget, unit, weights), unit, projected)
  return jax.tree.map(lambda p, f: p.astype(jnp.result_type(f)), projected,
                      forget_grads)


def gu_inputs(forget_grads: Any, *retain_grads: Any) -> dict[str, Any]:
  """Packs gradients into the input `gu_project` expects.

  Args:
    forget_grads: pytree of forget-loss gradients.
    *retain_grads: one or more pytrees of retain-loss gradients (e.g. one per
      retain micro-batch), each shaped like ``forget_grads``. Gradients that
      are already stacked (say by ``jax.vmap(jax.grad(...))``) can be passed
      directly as ``{'forget': g_f, 'retain': stacked}`` instead.

  Returns:
    ``{'forget': forget_grads, 'retain': stacked}`` where every retain leaf has
    a new leading axis of length ``len(retain_grads)``.

  Example:
    >>> gu_inputs({"w": jnp.ones(2)}, {"w": jnp.zeros(2)})["retain"]["w"].shape
    (1, 2)
  """
  if not retain_grads:
    raise ValueError("`gu_inputs` needs at least one retain gradient in "
                     "`retain_grads`.")
  structure = jax.tree.structure(forget_grads)
  forget_shapes = [jnp.shape(f) for f in jax.tree.leaves(forget_grads)]
  for i, grads in enumerate(retain_grads):
    if jax.tree.structure(grads) != structure:
      raise ValueError(f"`retain_grads`[{i}] does not have the tree structure of "
                       "`forget_grads`.")
    shapes = [jnp.shape(r) for r in jax.tree.leaves(grads)]
    if shapes != forget_shapes:
      raise ValueError(f"`retain_grads`[{i}] must have the leaf shapes of "
                       f"`forget_grads`, got {shapes} and {forget_shapes}.")
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *retain_grads)
  return {"forget": forget_grads, "retain": stacked}


class GUProjectState(NamedTuple):
  """State of `gu_project`.

  Attributes:
    count: number of updates seen (int32), for Adam's bias correction.
    nu: EMA of squared gradients (a pytree like the params) for
      ``metric='adam'``; an empty tuple for ``metric='euclidean'``.
  """
  count: jax.Array
  nu: Any


def gu_project(*,
               metric: str = "euclidean",
               only_if_conflicting: bool = False,
               b2: float = 0.999,
               eps: float = 1e-8,
               rank_tolerance: float = 1e-6) -> optax.GradientTransformation:
  """GU projection of the forget gradient, as an optax transformation.

  Input: ``updates = {'forget': g_f, 'retain': R}`` (build it with
  `gu_inputs`), where ``g_f`` is a params-shaped gradient of the forget loss
  (GA, NPO, SimNPO, ...) and every leaf of ``R`` stacks K retain-loss
  gradients along a new leading axis. Output: the params-shaped update

  ``g = mean_k(R_k) + g_f_perp``,  ``g_f_perp`` from `project_forget_gradient`,

  i.e. descend the retain loss and move on the forget loss only in directions
  that leave every retain gradient unchanged to first order (the released
  code applies ``retain_weight * retain_mean + forget_weight * projected``;
  scale the losses to get other weights). Chain it *before* the optimizer:
  ``optax.chain(gu_project(metric='adam'), optax.adam(lr))``; ``init`` takes
  the params as usual.

  Metric ``'adam'``: ``<a, b>_H = sum a b / (sqrt(v_hat) + eps)``, i.e. the
  Euclidean product of the coordinates divided by ``sqrt(sqrt(v_hat) + eps)``.
  Then Adam's preconditioned step ``P g_f_perp`` (``P = H``) is Euclidean-
  orthogonal to the retain gradients, which is the point of GU. The paper and
  released code read ``v_hat`` from the optimizer's second moment; an optax
  transform cannot see a later transform's state, so this one keeps its own
  EMA ``nu <- b2 nu + (1 - b2) (g_f + mean_k R_k)^2`` (bias-corrected), updated
  with the current gradients *before* projecting so that ``v_hat`` exists at
  step 1. Pass the downstream Adam's ``b2`` and ``eps`` to mirror it; the
  mirror is exact up to the projection's change to the forget part. With
  Adam's first moment on (``b1 > 0``) the guarantee holds for the current
  gradient only (the released code's Adam surgery requires ``b1 = 0``).

  Args:
    metric: ``'euclidean'`` or ``'adam'``.
    only_if_conflicting: PCGrad behaviour (project only against retain
      directions with a negative inner product) instead of GU's "always".
    b2: EMA decay of the squared-gradient estimate (``metric='adam'``).
    eps: Adam's epsilon added to ``sqrt(v_hat)`` (``metric='adam'``).
    rank_tolerance: Gram-Schmidt drop threshold, see
      `project_forget_gradient`.

  Returns:
    An ``optax.GradientTransformation`` whose state is a `GUProjectState`.

  Example:
    >>> tx = optax.chain(gu_project(), optax.sgd(1.0))
    >>> params = {"w": jnp.zeros(2)}
    >>> grads = gu_inputs({"w": jnp.array([1.0, 1.0])}, {"w": jnp.array([1.0, 0.0])})
    >>> tx.update(grads, tx.init(params), params)[0]  # -(g_r + g_f_perp)
    {'w': Array([-1., -1.], dtype=float32)}
  """
  if metric not in _METRICS:
    raise ValueError(f"`metric` must be one of {_METRICS}, got {metric!r}.")
  _checks.check_in_range(b2, "b2", 0.0, 1.0, high_inclusive=False)
  _checks.check_positive(eps, "eps")
  _checks.check_positive(rank_tolerance, "rank_tolerance")

  def init_fn(params: optax.Params) -> GUProjectState:
    if metric == "adam":
      nu = jax.tree.map(
          lambda p: jnp.zeros(jnp.shape(p),
                              jnp.promote_types(jnp.result_type(p), jnp.float32)),
          params)
    else:
      nu = ()
    return GUProjectState(count=jnp.zeros((), jnp.int32), nu=nu)

  def update_fn(updates: Mapping[str, Any], state: GUProjectState,
                params: Optional[optax.Params] = None):
    del params
    if not isinstance(updates, Mapping) or set(updates) != {"forget", "retain"}:
      raise ValueError("`updates` of `gu_project` must be {'forget': g_f, 'retain': "
                       "stacked retain gradients}; build them with `gu_inputs`.")
    forget = updates["forget"]
    retain = updates["retain"]
    _split_directions(retain, forget)  # Checks shapes before any arithmetic.
    retain_mean = jax.tree.map(lambda r: jnp.mean(r, axis=0), retain)
    count = state.count + 1
    weights = None
    nu = state.nu
    if metric == "adam":
      raw = jax.tree.map(lambda f, r: f + r, forget, retain_mean)
      nu = jax.tree.map(lambda n, g: b2 * n + (1 - b2) * jnp.square(g).astype(
          n.dtype), state.nu, raw)
      bias_correction = 1 - b2 ** count.astype(jnp.float32)
      weights = jax.tree.map(
          lambda n: 1.0 / (jnp.sqrt(n / bias_correction) + eps), nu)
    projected = project_forget_gradient(
        forget, retain, metric_weights=weights,
        only_if_conflicting=only_if_conflicting, rank_tolerance=rank_tolerance)
    new_updates = jax.tree.map(
        lambda r, p: (r + p).astype(jnp.result_type(p)), retain_mean, projected)
    return new_updates, GUProjectState(count=count, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)
