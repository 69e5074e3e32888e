"""Knowledge-distillation losses built on `divlab.divergences`.

Conventions shared by every loss here:

* Inputs are logits with the class axis last: ``student_logits`` and
  ``teacher_logits`` of shape ``[..., C]``. They are normalised inside (a masked
  log-softmax), so log-probabilities work too.
* The teacher is a constant: every loss applies ``jax.lax.stop_gradient`` to the
  teacher logits, so no gradient ever reaches the teacher.
* ``where`` marks the valid positions (examples), e.g. non-padding tokens. Its
  shape is exactly ``[...]`` or ``[..., 1]``, never broadcast, so a class mask
  cannot be read as an example mask; when the last batch axis has the size of
  the class axis only ``[..., 1]`` is accepted (see `divlab._checks.example_mask`).
  A padded position gives exactly 0 and a zero gradient, whatever its logits
  hold (they are replaced by zeros before any arithmetic).
* ``class_where`` (broadcastable to ``[..., C]``) marks the classes (vocabulary
  entries) to include; an excluded class behaves exactly like a ``-inf`` logit
  in both the student and the teacher. This is what ``where`` means in
  `divlab.divergences`. A hard label in an excluded class is refused
  (ValueError) for concrete inputs and gives NaN under ``jit``.
* Per-example losses return ``[...]`` and take ``reduction=`` ('none' by
  default), which is delegated to `divlab.losses.reduce_loss`. The two
  batch-relational losses (`sinkhorn_kd`, `dist`) need the whole batch and
  return a scalar.
* Computation runs in at least float32 (bf16 inputs are upcast); outputs carry
  that computation dtype (float32, or float64 for float64 inputs).
* ``temperature`` divides the logits before the softmax; whether the loss is
  multiplied by ``T**2`` is stated in each docstring.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from divlab import _checks
from divlab import divergences
from divlab.losses.reductions import reduce_loss

__all__ = [
    "kd",
    "reverse_kl_kd",
    "js_kd",
    "tv_kd",
    "fused_linear_distill",
    "alpha_kd",
    "sinkhorn_kd_plan",
    "sinkhorn_kd",
    "plackett_luce",
    "pld",
    "listmle",
    "dist",
    "dual_head_kd",
    "ofa_target",
    "ofa_kd",
]

ArrayLike = jax.typing.ArrayLike

# Branches of the AlphaNet estimator: alphas this close to 0 or 1 use the
# closed-form KL limits, as the released code does.
_ALPHA_LIMIT_TOLERANCE = 1e-3


# ----------------------------------------------------------------------------
# Shared argument handling.
# ----------------------------------------------------------------------------


def _as_float(x: ArrayLike, name: str) -> jax.Array:
  """Returns `x` as an array computed in at least float32."""
  x = jnp.asarray(x)
  _checks.check_floating(x, name)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _logit_pair(student_logits: ArrayLike, teacher_logits: ArrayLike,
                student_name: str = "student_logits",
                teacher_name: str = "teacher_logits"
                ) -> tuple[jax.Array, jax.Array]:
  """Checks and upcasts two logit arrays; the teacher becomes a constant."""
  student = _as_float(student_logits, student_name)
  teacher = _as_float(teacher_logits, teacher_name)
  _checks.check_same_shape(student, teacher, student_name, teacher_name)
  if student.ndim < 1:
    raise ValueError(f"`{student_name}` must have a class axis, shape "
                     f"[..., C]; got a scalar.")
  dtype = jnp.promote_types(student.dtype, teacher.dtype)
  return student.astype(dtype), jax.lax.stop_gradient(teacher.astype(dtype))


def _blank_padding(logits: jax.Array,
                   position_mask: Optional[jax.Array]) -> jax.Array:
  """Zeroes the logits of padded positions.

  Padded rows may hold anything (-inf, NaN); replacing them before any
  arithmetic is what keeps their gradient exactly zero, since a `where` on the
  output alone still lets 0 * inf = NaN through the backward pass.
  """
  if position_mask is None:
    return logits
  return jnp.where(position_mask[..., None], logits, 0)


def _check_labels(labels: ArrayLike, logits: jax.Array,
                  position_mask: Optional[jax.Array]) -> jax.Array:
  """Checks integer labels of shape [...]; padded positions get label 0."""
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(
        f"`labels` must be integer class indices, got {labels.dtype}.")
  if labels.shape != logits.shape[:-1]:
    raise ValueError(f"`labels` must have shape {logits.shape[:-1]} (the "
                     f"logits without the class axis), got {labels.shape}.")
  if position_mask is not None:
    # An ignore index such as -100 at a padded position must not be gathered.
    labels = jnp.where(position_mask, labels, 0)
  return labels.astype(jnp.int32)


def _label_nll(student: jax.Array, labels: jax.Array,
               class_where: Optional[ArrayLike],
               position_mask: Optional[jax.Array] = None) -> jax.Array:
  """-log softmax(student)_y with the class mask applied (hard-label CE).

  A label in a class that ``class_where`` excludes has probability 0, so its
  cross-entropy would be a silent ``inf``: with concrete inputs it is refused
  (ValueError naming ``labels``), under ``jit`` the value is NaN instead.
  """
  log_probs = divergences.masked_log_softmax(student, where=class_where)
  nll = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
  if class_where is None:
    return nll
  class_mask = jnp.broadcast_to(jnp.asarray(class_where, bool), student.shape)
  label_kept = jnp.take_along_axis(class_mask, labels[..., None], axis=-1)[..., 0]
  if position_mask is not None:  # padded positions may carry any label
    label_kept = label_kept | ~position_mask
  if not isinstance(label_kept, jax.core.Tracer) and not bool(jnp.all(label_kept)):
    first = tuple(int(i) for i in np.argwhere(~np.asarray(label_kept))[0])
    raise ValueError(
        f"`labels` at position {first} is class {int(labels[first])}, which "
        "`class_where` excludes (its probability is 0, the loss would be inf).")
  return jnp.where(label_kept, nll, jnp.nan)


def _very_negative(dtype) -> float:
  """A finite stand-in for -inf: its exp() is 0, yet x - it cannot overflow."""
  return float(jnp.finfo(dtype).min) / 8


def _check_weight(value, name: str) -> None:
  """A loss term's weight: a finite scalar >= 0 (a negative one flips the term)."""
  _checks.check_in_range(value, name, 0.0, np.inf, high_inclusive=False)


def _require_concrete_float(value, name: str) -> float:
  if not _checks.is_concrete_number(value):
    raise ValueError(f"`{name}` must be a concrete Python number (it selects a "
                     f"branch of the estimator), got a traced value.")
  return float(value)


# ----------------------------------------------------------------------------
# Hinton KD and its divergence swaps.
# ----------------------------------------------------------------------------


def _hard_plus_soft(student_logits, teacher_logits, labels, soft_fn, *,
                    temperature, alpha, where, class_where, reduction):
  """(1 - alpha) CE(y, s) + alpha * soft_fn(student / T, teacher / T)."""
  student, teacher = _logit_pair(student_logits, teacher_logits)
  _checks.check_positive_finite(temperature, "temperature")
  _checks.check_in_range(alpha, "alpha", 0.0, 1.0)
  position_mask = _checks.example_mask(where, student.shape)
  _checks.broadcast_mask(class_where, student.shape, "class_where")
  student = _blank_padding(student, position_mask)
  teacher = _blank_padding(teacher, position_mask)
  alpha_is_one = _checks.is_concrete_number(alpha) and float(alpha) == 1.0
  alpha_is_zero = _checks.is_concrete_number(alpha) and float(alpha) == 0.0
  if labels is None and not alpha_is_one:
    raise ValueError("`labels` must be given when `alpha` < 1 (the hard-label "
                     "cross-entropy term has weight 1 - alpha).")
  if labels is not None:  # checked even when unused, so a wrong batch shows up
    labels = _check_labels(labels, student, position_mask)
  soft = None
  if not alpha_is_zero:
    soft = soft_fn(student / temperature, teacher / temperature,
                   class_where) * jnp.square(temperature)
  if alpha_is_one:
    values = soft
  else:
    labels = _check_labels(labels, student, position_mask)
    hard = _label_nll(student, labels, class_where, position_mask)
    values = (1 - alpha) * hard if alpha_is_zero else (
        (1 - alpha) * hard + alpha * soft)
  return reduce_loss(values, reduction, where=position_mask)


def kd(student_logits: ArrayLike,
       teacher_logits: ArrayLike,
       labels: Optional[ArrayLike] = None,
       *,
       temperature: float = 1.0,
       alpha: float = 1.0,
       where: Optional[ArrayLike] = None,
       class_where: Optional[ArrayLike] = None,
       reduction: str = "none") -> jax.Array:
  """Hinton knowledge distillation: soft teacher targets plus hard labels.

  ``L = (1 - alpha) CE(y, softmax(s))
  + alpha T^2 KL(softmax(t/T) || softmax(s/T))``

  The ``T^2`` factor is applied (as in Hinton et al. 2015), so the gradient
  with respect to the student logits is
  ``alpha T (softmax(s/T) - softmax(t/T))``,
  which tends to ``alpha (s - t - mean(s - t)) / C`` as ``T`` grows: gradient
  magnitudes stay comparable across temperatures. The hard-label term uses
  ``T = 1``. The teacher is a constant (stop-gradient inside).

  Reference: Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural
  Network", 2015 [paper].

  Args:
    student_logits: ``[..., C]`` student logits.
    teacher_logits: ``[..., C]`` teacher logits (same shape).
    labels: optional ``[...]`` integer labels; required when ``alpha < 1``.
    temperature: softmax temperature ``T > 0`` of the soft term.
    alpha: weight in ``[0, 1]`` of the soft term; ``alpha = 0`` is plain CE.
    where: optional ``[...]`` mask of valid positions.
    class_where: optional ``[..., C]`` mask of included classes.
    reduction: see `divlab.losses.reduce_loss`; 'none' keeps ``[...]``.

  Returns:
    ``[...]`` per-example losses, or a scalar for a reducing ``reduction``.

  Example:
    >>> s, t = jnp.array([[0., 1.]]), jnp.array([[1., 0.]])
    >>> jnp.round(kd(s, t), 4)  # tanh(1/2)
    Array([0.4621], dtype=float32)
  """
  def soft_fn(student, teacher, class_where):
    return divergences.kl(teacher, student, where=class_where)
  return _hard_plus_soft(student_logits, teacher_logits, labels, soft_fn,
                         temperature=temperature, alpha=alpha, where=where,
                         class_where=class_where, reduction=reduction)


def reverse_kl_kd(student_logits: ArrayLike,
                  teacher_logits: ArrayLike,
                  labels: Optional[ArrayLike] = None,
                  *,
                  temperature: float = 1.0,
                  alpha: float = 1.0,
                  where: Optional[ArrayLike] = None,
                  class_where: Optional[ArrayLike] = None,
                  reduction: str = "none") -> jax.Array:
  """Reverse-KL (mode-seeking) distillation.

  ``L = (1 - alpha) CE(y, softmax(s))
  + alpha T^2 KL(softmax(s/T) || softmax(t/T))``

  The divergence is taken from the student to the teacher, so the student is
  pushed to put its mass where the teacher has mass (mode seeking) instead of
  covering all of it. ``T^2`` is applied exactly as in `kd`, so the two are
  directly comparable. Teacher treated as a constant.

  Reference: the divergence-swap baselines of Sinkhorn KD (Cui et al. 2024)
  and of MiniLLM-style reverse-KL distillation [paper].

  Args:
    student_logits: ``[..., C]`` student logits.
    teacher_logits: ``[..., C]`` teacher logits.
    labels: optional ``[...]`` integer labels; required when ``alpha < 1``.
    temperature: ``T > 0``.
    alpha: weight in ``[0, 1]`` of the divergence term.
    where: optional ``[...]`` mask of valid positions.
    class_where: optional ``[..., C]`` mask of included classes.
    reduction: see `divlab.losses.reduce_loss`.

  Returns:
    ``[...]`` per-example losses (or a scalar when reduced).

  Example:
    >>> s, t = jnp.array([[0., 2.]]), jnp.zeros((1, 2))
    >>> jnp.round(reverse_kl_kd(s, t), 4)  # KL(softmax([0, 2]) || uniform)
    Array([0.3278], dtype=float32)
  """
  def soft_fn(student, teacher, class_where):
    return divergences.reverse_kl(teacher, student, where=class_where)
  return _hard_plus_soft(student_logits, teacher_logits, labels, soft_fn,
                         temperature=temperature, alpha=alpha, where=where,
                         class_where=class_where, reduction=reduction)


def js_kd(student_logits: ArrayLike,
          teacher_logits: ArrayLike,
          labels: Optional[ArrayLike] = None,
          *,
          temperature: float = 1.0,
          alpha: float = 1.0,
          beta: float = 0.5,
          where: Optional[ArrayLike] = None,
          class_where: Optional[ArrayLike] = None,
          reduction: str = "none") -> jax.Array:
  """Jensen-Shannon distillation (bounded by ``T^2 log 2`` for beta = 0.5).

  ``L = (1 - alpha) CE(y, softmax(s)) + alpha T^2 JS_beta(P_t, P_s)`` with
  ``JS_beta(P, Q) = beta KL(P || M) + (1 - beta) KL(Q || M)``,
  ``M = beta P + (1 - beta) Q``, ``P_t = softmax(t/T)``, ``P_s = softmax(s/T)``.
  This is the standard JS (at most ``log 2``), not TensorFlow Probability's
  twice-as-large generator. ``T^2`` applied as in `kd`. Teacher constant.

  Reference: divergence-swap baseline of Sinkhorn KD (Cui et al. 2024) [paper].

  Args:
    student_logits: ``[..., C]``.
    teacher_logits: ``[..., C]``.
    labels: optional ``[...]`` integer labels; required when ``alpha < 1``.
    temperature: ``T > 0``.
    alpha: weight in ``[0, 1]`` of the divergence term.
    beta: mixture weight of the teacher in ``M`` (0.5: symmetric JS).
    where: optional ``[...]`` mask of valid positions.
    class_where: optional ``[..., C]`` mask of included classes.
    reduction: see `divlab.losses.reduce_loss`.

  Returns:
    ``[...]`` per-example losses (or a scalar when reduced).

  Example:
    >>> js_kd(jnp.array([[0., 50.]]), jnp.array([[50., 0.]]))  # disjoint: log 2
    Array([0.6931472], dtype=float32)
  """
  _checks.check_in_range(beta, "beta", 0.0, 1.0)

  def soft_fn(student, teacher, class_where):
    return divergences.js(teacher, student, beta=beta, where=class_where)
  return _hard_plus_soft(student_logits, teacher_logits, labels, soft_fn,
                         temperature=temperature, alpha=alpha, where=where,
                         class_where=class_where, reduction=reduction)


def tv_kd(student_logits: ArrayLike,
          teacher_logits: ArrayLike,
          labels: Optional[ArrayLike] = None,
          *,
          temperature: float = 1.0,
          alpha: float = 1.0,
          where: Optional[ArrayLike] = None,
          class_where: Optional[ArrayLike] = None,
          reduction: str = "none") -> jax.Array:
  """Total-variation distillation.

  ``L = (1 - alpha) CE(y, softmax(s)) + alpha T^2 TV(P_t, P_s)``,
  ``TV(P, Q) = 0.5 sum_c |p_c - q_c|`` (symmetric, at most 1). ``T^2`` is
  applied for uniformity with `kd`; note that the TV gradient shrinks like
  ``1/T`` (not ``1/T^2``), so at high temperature this term grows like ``T``.
  Teacher constant.

  Reference: divergence-swap baseline of Sinkhorn KD (Cui et al. 2024) [paper].

  Args:
    student_logits: ``[..., C]``.
    teacher_logits: ``[..., C]``.
    labels: optional ``[...]`` integer labels; required when ``alpha < 1``.
    temperature: ``T > 0``.
    alpha: weight in ``[0, 1]`` of the divergence term.
    where: optional ``[...]`` mask of valid positions.
    class_where: optional ``[..., C]`` mask of included classes.
    reduction: see `divlab.losses.reduce_loss`.

  Returns:
    ``[...]`` per-example losses (or a scalar when reduced).

  Example:
    >>> tv_kd(jnp.array([[0., 50.]]), jnp.array([[50., 0.]]))
    Array([1.], dtype=float32)
  """
  def soft_fn(student, teacher, class_where):
    return divergences.total_variation(teacher, student, where=class_where)
  return _hard_plus_soft(student_logits, teacher_logits, labels, soft_fn,
                         temperature=temperature, alpha=alpha, where=where,
                         class_where=class_where, reduction=reduction)


def fused_linear_distill(student_hidden: ArrayLike,
                         student_weight: ArrayLike,
                         teacher_hidden: ArrayLike,
                         teacher_weight: ArrayLike,
                         *,
                         divergence: str = "kl",
                         temperature: float = 1.0,
                         beta: float = 0.5,
                         where: Optional[ArrayLike] = None,
                         chunk_size: Optional[int] = None,
                         reduction: str = "mean",
                         normalizer: Optional[ArrayLike] = None,
                         student_bias: Optional[ArrayLike] = None,
                         teacher_bias: Optional[ArrayLike] = None,
                         accumulation_dtype=None) -> jax.Array:
  """Vocabulary-scale distillation from hidden states, never materialising the logits.

  ``L = T^2 reduce_i D(softmax(z_t,i / T), softmax(z_s,i / T))`` with
  ``z = h W + b`` per token: the soft term of `kd` (``divergence="kl"``,
  KL(P_t || P_s)), `reverse_kl_kd` (``"reverse_kl"``, KL(P_s || P_t)), `js_kd`
  (``"js"``, beta weighs the teacher) or `tv_kd` (``"tv"``), with ``T^2``
  applied as there. It equals ``reduce_loss(kd(z_s, z_t, temperature=T),
  reduction, where=where)`` (and likewise for the others) without ever
  forming the ``[B*T, V]`` logits: `divlab.divergences.fused_linear_divergence`
  (which this multiplies by ``T^2``) walks over chunks of tokens and forms
  the gradient as it goes. Teacher constant; gradients reach `student_hidden`,
  `student_weight` and `student_bias`.

  Reference: the chunked fused-linear distillation losses of Liger-Kernel
  (Hsu et al. 2024) [code]; the divergences as in the KD losses above.

  Args:
    student_hidden: ``[..., H]`` student hidden states (e.g. ``[B, T, H]``).
    student_weight: ``[H, V]`` student output projection.
    teacher_hidden: ``[..., H_t]`` teacher hidden states, same leading shape.
    teacher_weight: ``[H_t, V]`` teacher output projection.
    divergence: ``"kl"``, ``"reverse_kl"``, ``"js"`` or ``"tv"``.
    temperature: ``T > 0`` (not differentiated).
    beta: the teacher's JS mixture weight in ``[0, 1]`` (``"js"`` only).
    where: optional ``[...]`` token mask (e.g. non-padding tokens).
    chunk_size: tokens per chunk; None sizes it from a memory budget.
    reduction: see `divlab.losses.reduce_loss` (``"mean"``: token mean).
    normalizer: divisor for ``reduction="normalizer"``, e.g. the global token
      count, so that gradient-accumulation micro-batches add up exactly.
    student_bias: optional ``[V]`` student output bias.
    teacher_bias: optional ``[V]`` teacher output bias.
    accumulation_dtype: dtype of the running dL/dW sum over token groups
      (None: the weight's; ``jnp.float32`` for one rounding at the end).

  Returns:
    A scalar (``[...]`` per-token losses for ``reduction="none"``), float32.

  Example:
    >>> h_s, w_s = jnp.ones((2, 1)), jnp.array([[0., 1.]])
    >>> h_t, w_t = jnp.ones((2, 1)), jnp.array([[1., 0.]])
    >>> jnp.round(fused_linear_distill(h_s, w_s, h_t, w_t), 4)  # kd: tanh(1/2)
    Array(0.4621, dtype=float32)
  """
  loss = divergences.fused_linear_divergence(
      student_hidden, student_weight, teacher_hidden, teacher_weight,
      divergence=divergence, temperature=temperature, beta=beta, where=where,
      chunk_size=chunk_size, reduction=reduction, normalizer=normalizer,
      student_bias=student_bias, teacher_bias=teacher_bias,
      accumulation_dtype=accumulation_dtype)
  return jnp.square(jax.lax.stop_gradient(temperature)) * loss


# ----------------------------------------------------------------------------
# Alpha-divergence KD (AlphaNet "adaptive loss soft").
# ----------------------------------------------------------------------------


def _alpha_divergence_terms(log_p: jax.Array, log_q: jax.Array,
                            support: jax.Array, alpha: float,
                            iw_clip: float) -> tuple[jax.Array, jax.Array]:
  """Clipped D_alpha(p || q) per example and the weights q * rho per class.

  Inputs are constants (stop-gradient): this builds the value and the
  coefficients of the surrogate gradient, not a differentiable expression.
  """
  q = jnp.exp(log_q)
  p = jnp.exp(log_p)
  # Outside the student's support q = 0 and every term vanishes; zeroing the
  # log-ratio there keeps -inf - (-inf) out of the arithmetic.
  log_ratio = jnp.where(support, log_p - log_q, 0.0)
  if abs(alpha) < _ALPHA_LIMIT_TOLERANCE:
    # alpha -> 0: KL(Q || P) with the ratio p / q clipped from above.
    clipped_log_ratio = jnp.minimum(log_ratio, np.log(iw_clip))
    value_terms = -q * clipped_log_ratio
    weights = q * (clipped_log_ratio - 1.0)
  elif abs(alpha - 1.0) < _ALPHA_LIMIT_TOLERANCE:
    # alpha -> 1: KL(P || Q). The released code applies no clip in this branch;
    # q * (p/q) log(p/q) = p log(p/q) avoids forming p/q itself.
    value_terms = jnp.where(p > 0, p * log_ratio, 0.0)
    weights = p
  else:
    ratio_pow = jnp.minimum(jnp.exp(alpha * log_ratio), iw_clip)
    base = 1.0 / (alpha * (alpha - 1.0))
    value_terms = q * (ratio_pow - 1.0) * base
    weights = q * (ratio_pow / alpha + base)
  value = jnp.sum(jnp.where(support, value_terms, 0.0), axis=-1)
  weights = jnp.where(support, weights, 0.0)
  return value, weights


def alpha_kd(student_logits: ArrayLike,
             teacher_logits: ArrayLike,
             *,
             alpha_min: float = -1.0,
             alpha_max: float = 1.0,
             iw_clip: float = 5.0,
             where: Optional[ArrayLike] = None,
             class_where: Optional[ArrayLike] = None,
             reduction: str = "none") -> jax.Array:
  """Adaptive alpha-divergence distillation (AlphaNet's "adaptive loss soft").

  With teacher ``p = softmax(t)`` (a constant) and student ``q = softmax(s)``,
  ``D_a(p || q) = 1/(a(a-1)) sum_c q_c [(p_c/q_c)^a - 1]``, which is the Amari
  alpha-divergence ``divlab.divergences.alpha_divergence(t, s, a)`` (limits:
  ``a -> 1`` gives KL(P||Q), ``a -> 0`` gives KL(Q||P)). Per example the loss
  uses whichever of ``D_{alpha_min}``, ``D_{alpha_max}`` is larger (ties go to
  ``alpha_max``), with the importance weight ``(p/q)^a`` clipped at ``iw_clip``
  (for ``a`` near 0 the ratio ``p/q`` itself is clipped; for ``a`` near 1 the
  released code applies no clip, and neither does this function).

  Gradient. The loss is trained through the surrogate
  ``-sum_c stop_grad(q_c rho_c) log q_c`` with
  ``rho = (p/q)^a / a + 1/(a(a-1))`` (clipped ratio; ``rho = p/q`` at
  ``a = 1``). Without clipping this is exactly the gradient of ``D_a`` (the
  constant part of ``rho`` multiplies ``sum_c grad q_c = 0``); with clipping it
  is the bounded-variance gradient of the paper.

  Value. The returned value is the selected (clipped-ratio) divergence itself,
  ``max(D_{alpha_min}, D_{alpha_max})``, which equals the exact Amari divergence
  whenever no ratio reaches the clip. It is returned as
  ``value + (surrogate - stop_grad(surrogate))``, so its forward value is the
  divergence and its gradient is the surrogate's. (The released code instead
  returns the surrogate's value, a cross-entropy-like number; the gradients
  are the same.)

  Reference: Wang et al., "AlphaNet: Improved Training of Supernets with
  Alpha-Divergence", ICML 2021 [code: `loss_ops.py`, ``AdaptiveLossSoft`` with
  alpha_min = -1, alpha_max = 1, iw_clip = 5 from its training config]. No
  temperature: the paper uses none (scale the logits yourself if wanted).

  Args:
    student_logits: ``[..., C]`` student logits (q).
    teacher_logits: ``[..., C]`` teacher logits (p), treated as a constant.
    alpha_min: the negative alpha (a finite concrete float, < alpha_max).
    alpha_max: the positive alpha (a finite concrete float).
    iw_clip: upper clip of the importance weights, ``> 0``.
    where: optional ``[...]`` mask of valid positions.
    class_where: optional ``[..., C]`` mask of included classes.
    reduction: see `divlab.losses.reduce_loss`.

  Returns:
    ``[...]`` per-example divergences (or a scalar when reduced).

  Example:
    >>> s, t = jnp.array([[0., 1.]]), jnp.array([[1., 0.]])
    >>> jnp.round(alpha_kd(s, t), 4)  # D_{-1} = 0.543 beats KL = 0.462 here
    Array([0.5431], dtype=float32)
  """
  alpha_min = _require_concrete_float(alpha_min, "alpha_min")
  alpha_max = _require_concrete_float(alpha_max, "alpha_max")
  for value, name in ((alpha_min, "alpha_min"), (alpha_max, "alpha_max")):
    if not np.isfinite(value):
      raise ValueError(f"`{name}` must be finite, got {value!r}.")
  if not alpha_min < alpha_max:
    raise ValueError(f"`alpha_min` must be smaller than `alpha_max`, got "
                     f"{alpha_min} and {alpha_max}.")
  _checks.check_positive(iw_clip, "iw_clip")
  student, teacher = _logit_pair(student_logits, teacher_logits)
  position_mask = _checks.example_mask(where, student.shape)
  _checks.broadcast_mask(class_where, student.shape, "class_where")
  student = _blank_padding(student, position_mask)
  teacher = _blank_padding(teacher, position_mask)

  log_q = divergences.masked_log_softmax(student, where=class_where)
  log_p = divergences.masked_log_softmax(teacher, where=class_where)
  log_q_const = jax.lax.stop_gradient(log_q)
  support = log_q_const > -jnp.inf
  value_min, weights_min = _alpha_divergence_terms(
      log_p, log_q_const, support, alpha_min, iw_clip)
  value_max, weights_max = _alpha_divergence_terms(
      log_p, log_q_const, support, alpha_max, iw_clip)
  use_min = value_min > value_max
  value = jnp.where(use_min, value_min, value_max)
  weights = jnp.where(use_min[..., None], weights_min, weights_max)
  # -inf log q outside the support would give 0 * -inf = NaN.
  surrogate = -jnp.sum(jnp.where(support, weights * log_q, 0.0), axis=-1)
  values = value + (surrogate - jax.lax.stop_gradient(surrogate))
  return reduce_loss(values, reduction, where=position_mask)


# ----------------------------------------------------------------------------
# Sinkhorn KD (batch-wise optimal transport between student and teacher).
# ----------------------------------------------------------------------------


def _sinkhorn_cost_and_plan(student_logits, teacher_logits, *, temperature,
                            epsilon, num_iters, where, class_where):
  """Returns (cost W [B, B], plan P [B, B]) of Sinkhorn KD."""
  student, teacher = _logit_pair(student_logits, teacher_logits)
  if student.ndim != 2:
    raise ValueError(f"`student_logits` must have shape [B, C] (Sinkhorn KD "
                     f"couples the examples of a batch), got {student.shape}.")
  _checks.check_positive_finite(temperature, "temperature")
  _checks.check_positive(epsilon, "epsilon")
  _checks.check_count(num_iters, "num_iters")
  batch = student.shape[0]
  position_mask = _checks.example_mask(where, student.shape)
  _checks.broadcast_mask(class_where, student.shape, "class_where")
  student = _blank_padding(student, position_mask)
  teacher = _blank_padding(teacher, position_mask)

  p_student = jnp.exp(divergences.masked_log_softmax(student / temperature,
                                                     where=class_where))
  p_teacher = jnp.exp(divergences.masked_log_softmax(teacher / temperature,
                                                     where=class_where))
  # W_ij = || p_s,i - p_t,j ||_1: every student row against every teacher row.
  cost = jnp.sum(jnp.abs(p_student[:, None, :] - p_teacher[None, :, :]),
                 axis=-1)

  if position_mask is None:
    valid_pair = jnp.ones((batch, batch), dtype=bool)
  else:
    valid_pair = position_mask[:, None] & position_mask[None, :]
  # Pairs with a padded example carry a finite stand-in for -inf, re-imposed
  # after every normalisation: a fully padded row would otherwise be set back
  # to -log B and leak mass into the valid columns.
  neg = _very_negative(cost.dtype)
  log_plan = jnp.where(valid_pair, -cost / epsilon, neg)

  def normalise_rows_then_columns(_, log_plan):
    log_plan = log_plan - jax.nn.logsumexp(log_plan, axis=1, keepdims=True)
    log_plan = jnp.where(valid_pair, log_plan, neg)
    log_plan = log_plan - jax.nn.logsumexp(log_plan, axis=0, keepdims=True)
    return jnp.where(valid_pair, log_plan, neg)

  log_plan = jax.lax.fori_loop(0, num_iters, normalise_rows_then_columns,
                               log_plan)
  plan = jnp.where(valid_pair, jnp.exp(log_plan), 0.0)
  return cost, plan


def sinkhorn_kd_plan(student_logits: ArrayLike,
                     teacher_logits: ArrayLike,
                     *,
                     temperature: float = 2.0,
                     epsilon: float = 0.1,
                     num_iters: int = 20,
                     where: Optional[ArrayLike] = None,
                     class_where: Optional[ArrayLike] = None) -> jax.Array:
  """The B x B entropic transport plan of Sinkhorn KD.

  ``K = exp(-W / epsilon)`` with
  ``W_ij = ||softmax(s_i/T) - softmax(t_j/T)||_1``,
  then ``num_iters`` rounds of "divide every row by its sum, then every column
  by its sum", computed in log space (a `lax.fori_loop`). The result is doubly
  stochastic up to the convergence of the last row step: columns sum to
  exactly 1, rows to 1 within the Sinkhorn tolerance. ``P / B`` is therefore a
  transport plan between the uniform empirical measures of the student and
  teacher batches. Padded examples (``where``) get zero rows and columns, and
  the marginals become 1 over the valid examples.

  The plan is differentiable with respect to the student (it is not
  detached); the teacher is a constant.

  Reference: Cui et al., "Sinkhorn Distance Minimization for Knowledge
  Distillation", LREC-COLING 2024 [code: the alternating normalisation of its
  ``sinkhorn_normalized``, run here in log space].

  Args:
    student_logits: ``[B, C]``.
    teacher_logits: ``[B, C]``.
    temperature: softmax temperature ``T > 0`` (2 in the released script).
    epsilon: entropic regularisation ``> 0``.
    num_iters: number of row-then-column rounds (Python int >= 1).
    where: optional ``[B]`` mask of valid (non-padding) examples.
    class_where: optional ``[B, C]`` mask of included classes.

  Returns:
    ``[B, B]`` plan; entry ``(i, j)`` couples student example ``i`` with
    teacher example ``j``.

  Example:
    >>> sinkhorn_kd_plan(jnp.zeros((2, 3)), jnp.zeros((2, 3))).sum(0)
    Array([1., 1.], dtype=float32)
  """
  _, plan = _sinkhorn_cost_and_plan(
      student_logits, teacher_logits, temperature=temperature, epsilon=epsilon,
      num_iters=num_iters, where=where, class_where=class_where)
  return plan


def sinkhorn_kd(student_logits: ArrayLike,
                teacher_logits: ArrayLike,
                *,
                temperature: float = 2.0,
                epsilon: float = 0.1,
                num_iters: int = 20,
                weight: float = 1e-3,
                where: Optional[ArrayLike] = None,
                class_where: Optional[ArrayLike] = None) -> jax.Array:
  """Sinkhorn KD: batch-wise entropic optimal transport, student to teacher.

  ``L = weight * sum_ij P_ij W_ij`` with the cost
  ``W_ij = ||softmax(s_i/T) - softmax(t_j/T)||_1`` and the plan ``P`` of
  `sinkhorn_kd_plan`. The loss couples the examples of the batch, so it needs
  the whole batch at once and returns a scalar (no per-example values, no
  ``reduction``). No ``T^2`` factor (the released code has none). Because the
  plan's rows and columns sum to 1, the loss grows with the batch size, as in
  the released code; ``weight ~ 1e-3`` is calibrated for that. The cost is
  formed densely, so memory is ``O(B^2 C)``.

  This is the intended loss: ``P`` is not detached, so the gradient flows
  through both the cost and the plan. (The released GLUE script computes this
  term but never adds it to the objective.) The paper's full objective is
  ``(1 - a) CE + a KD + b L``; compose it with `kd`. The released code's KD
  term is ``-sum p_t log p_s`` with no ``T^2``, while `kd` applies ``T^2``:
  to keep the official ratio of the two terms, pass ``weight * T^2`` (with
  the KD temperature ``T``) when adding this to `kd`.

  Reference: Cui et al., "Sinkhorn Distance Minimization for Knowledge
  Distillation", LREC-COLING 2024 [code, intended loss; defaults T = 2,
  epsilon = 0.1, 20 rounds].

  Args:
    student_logits: ``[B, C]``.
    teacher_logits: ``[B, C]``; treated as a constant.
    temperature: softmax temperature ``T > 0``.
    epsilon: entropic regularisation ``> 0``.
    num_iters: row-then-column normalisation rounds.
    weight: multiplier ``w >= 0`` of the transport cost.
    where: optional ``[B]`` mask of valid examples; padded examples neither
      send nor receive mass and get zero gradient.
    class_where: optional ``[B, C]`` mask of included classes.

  Returns:
    A scalar loss.

  Example:
    >>> sinkhorn_kd(jnp.zeros((2, 3)), jnp.zeros((2, 3)))  # identical: no cost
    Array(0., dtype=float32)
  """
  _check_weight(weight, "weight")
  cost, plan = _sinkhorn_cost_and_plan(
      student_logits, teacher_logits, temperature=temperature, epsilon=epsilon,
      num_iters=num_iters, where=where, class_where=class_where)
  return weight * jnp.sum(plan * cost)


# ----------------------------------------------------------------------------
# Plackett-Luce distillation and ListMLE.
# ----------------------------------------------------------------------------


def plackett_luce(student_logits: ArrayLike,
                  ranking: ArrayLike,
                  weights: ArrayLike,
                  *,
                  where: Optional[ArrayLike] = None,
                  class_where: Optional[ArrayLike] = None,
                  reduction: str = "none") -> jax.Array:
  """Weighted Plackett-Luce negative log-likelihood of a ranking.

  ``L = sum_k w_k [logsumexp_{l >= k} s_{pi_l} - s_{pi_k}]``: the k-th term is
  the cross-entropy of picking item ``pi_k`` among those not ranked yet.
  Computed by gathering the scores in ranking order and a reverse
  log-cumsum-exp. With ``w = 1`` this is ``-log P_PL(pi | s)`` (ListMLE); with
  ``w = e_1`` it is the cross-entropy of the first item. The shared core of
  `pld` and `listmle`; the weights are used as given (no stop-gradient here).

  Reference: Plackett (1975), Luce (1959); ListMLE: Xia et al., ICML 2008.

  Args:
    student_logits: ``[..., C]`` scores ``s``.
    ranking: ``[..., C]`` integer permutation of ``0..C-1`` (``pi``, best
      first).
    weights: ``[..., C]`` weight ``w_k`` of position ``k`` (indexed by
      position in the ranking, not by class).
    where: optional ``[...]`` mask of valid positions.
    class_where: optional ``[..., C]`` mask of included classes (by class
      index); excluded classes leave every log-sum-exp and add no term, so they
      should sit at the end of the ranking.
    reduction: see `divlab.losses.reduce_loss`.

  Returns:
    ``[...]`` per-example losses (or a scalar when reduced).

  Example:
    >>> scores, ranking = jnp.array([[0., 0.]]), jnp.array([[1, 0]])
    >>> plackett_luce(scores, ranking, jnp.ones((1, 2)))  # log 2! = log 2
    Array([0.6931472], dtype=float32)
  """
  scores = _as_float(student_logits, "student_logits")
  if scores.ndim < 1:
    raise ValueError("`student_logits` must have a class axis, shape [..., C].")
  ranking = jnp.asarray(ranking)
  if not jnp.issubdtype(ranking.dtype, jnp.integer):
    raise ValueError(
        f"`ranking` must hold integer class indices, got {ranking.dtype}.")
  _checks.check_same_shape(scores, ranking, "student_logits", "ranking")
  weights = _as_float(weights, "weights")
  _checks.check_same_shape(scores, weights, "student_logits", "weights")
  position_mask = _checks.example_mask(where, scores.shape)
  class_mask = _checks.broadcast_mask(class_where, scores.shape, "class_where")
  ranking = ranking.astype(jnp.int32)
  weights = weights.astype(scores.dtype)
  if position_mask is not None:
    # Padded rows may carry garbage weights or rankings; NaN * 0 in the
    # backward pass would otherwise reach the valid scores' gradient.
    scores = _blank_padding(scores, position_mask)
    weights = _blank_padding(weights, position_mask)
    identity = jnp.broadcast_to(jnp.arange(scores.shape[-1], dtype=jnp.int32),
                                ranking.shape)
    ranking = jnp.where(position_mask[..., None], ranking, identity)
  ranked_scores = jnp.take_along_axis(scores, ranking, axis=-1)
  if class_mask is None:
    terms = jax.lax.cumlogsumexp(ranked_scores, axis=ranked_scores.ndim - 1,
                                 reverse=True) - ranked_scores
  else:
    ranked_valid = jnp.take_along_axis(class_mask, ranking, axis=-1)
    # A finite stand-in for -inf keeps excluded items out of every tail sum
    # without producing -inf - -inf in the terms or NaN in the gradient.
    ranked_scores = jnp.where(ranked_valid, ranked_scores,
                              _very_negative(scores.dtype))
    tail_lse = jax.lax.cumlogsumexp(ranked_scores, axis=ranked_scores.ndim - 1,
                                    reverse=True)
    terms = jnp.where(ranked_valid, tail_lse - ranked_scores, 0.0)
    weights = jnp.where(ranked_valid, weights, 0.0)
  values = jnp.sum(weights * terms, axis=-1)
  return reduce_loss(values, reduction, where=position_mask)


def _teacher_optimal_ranking(teacher: jax.Array, labels: jax.Array,
                             class_where: Optional[ArrayLike]) -> jax.Array:
  """pi* = (true label, then the other classes by descending teacher logit).

  Excluded classes go last; ties keep class order (stable sort).
  """
  num_classes = teacher.shape[-1]
  is_label = jax.nn.one_hot(labels, num_classes, dtype=bool)
  sort_key = jnp.where(is_label, jnp.inf, teacher)
  if class_where is not None:
    class_mask = jnp.broadcast_to(jnp.asarray(class_where, bool), teacher.shape)
    sort_key = jnp.where(class_mask | is_label, sort_key, -jnp.inf)
  return jnp.argsort(sort_key, axis=-1, stable=True, descending=True)


def _ranking_inputs(student_logits, teacher_logits, labels, where, class_where):
  student, teacher = _logit_pair(student_logits, teacher_logits)
  position_mask = _checks.example_mask(where, student.shape)
  _checks.broadcast_mask(class_where, student.shape, "class_where")
  student = _blank_padding(student, position_mask)
  teacher = _blank_padding(teacher, position_mask)
  labels = _check_labels(labels, student, position_mask)
  ranking = _teacher_optimal_ranking(teacher, labels, class_where)
  return student, teacher, ranking, position_mask


def pld(student_logits: ArrayLike,
        teacher_logits: ArrayLike,
        labels: ArrayLike,
        *,
        temperature: float = 1.0,
        where: Optional[ArrayLike] = None,
        class_where: Optional[ArrayLike] = None,
        reduction: str = "none") -> jax.Array:
  """Plackett-Luce distillation (PLD): a teacher-weighted listwise loss.

  ``L = sum_k alpha_k [logsumexp_{l >= k} s_{pi*_l} - s_{pi*_k}]`` where
  ``pi*`` is the teacher-optimal ranking (the true label first, then the other
  classes by descending teacher logit) and
  ``alpha_k = softmax(t / tau)_{pi*_k}`` is the teacher's probability of the
  class ranked ``k``. The temperature ``tau`` enters the teacher weights only;
  the student logits are used as they are. No ``T^2`` factor and no extra
  cross-entropy term (the first term is already a label cross-entropy with
  weight ``alpha_1``). The teacher is a constant.

  Reference: "PLD: A Choice-Theoretic List-Wise Knowledge Distillation"
  [paper, appendix; tau = 1 default, 4 on CIFAR].

  Args:
    student_logits: ``[..., C]``.
    teacher_logits: ``[..., C]``.
    labels: ``[...]`` integer labels.
    temperature: ``tau > 0`` of the teacher weights.
    where: optional ``[...]`` mask of valid positions.
    class_where: optional ``[..., C]`` mask of included classes (excluded
      classes are ranked last with weight 0).
    reduction: see `divlab.losses.reduce_loss`.

  Returns:
    ``[...]`` per-example losses (or a scalar when reduced).

  Example:
    >>> pld(jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.array([0]))  # 0.5 log 2
    Array([0.3465736], dtype=float32)
  """
  _checks.check_positive_finite(temperature, "temperature")
  student, teacher, ranking, position_mask = _ranking_inputs(
      student_logits, teacher_logits, labels, where, class_where)
  teacher_probs = jnp.exp(divergences.masked_log_softmax(
      teacher / temperature, where=class_where))
  weights = jnp.take_along_axis(teacher_probs, ranking, axis=-1)
  return plackett_luce(student, ranking, weights, where=position_mask,
                       class_where=class_where, reduction=reduction)


def listmle(student_logits: ArrayLike,
            teacher_logits: ArrayLike,
            labels: ArrayLike,
            *,
            normalize: bool = False,
            where: Optional[ArrayLike] = None,
            class_where: Optional[ArrayLike] = None,
            reduction: str = "none") -> jax.Array:
  """ListMLE on the teacher-optimal ranking: PLD with uniform weights.

  ``L = w sum_k [logsumexp_{l >= k} s_{pi*_l} - s_{pi*_k}] = -w log P_PL(pi* | s)``
  with ``pi*`` as in `pld`. With ``normalize=False`` the weight is ``w = 1``,
  the exact Plackett-Luce negative log-likelihood of the ranking; with
  ``normalize=True`` it is ``w = 1/C`` (``C`` counting the included classes
  of the row), the uniform distribution that PLD's ablation puts in place of
  the teacher's ``softmax(t / tau)``, so the two losses have the same scale.

  Reference: Xia et al., "Listwise Approach to Learning to Rank", ICML 2008;
  the uniform-weight (``1/C``) case of PLD [paper, ablation].

  Args:
    student_logits: ``[..., C]``.
    teacher_logits: ``[..., C]`` (only its ordering is used).
    labels: ``[...]`` integer labels.
    normalize: weight every position by ``1/C`` (PLD's ablation) instead of 1.
    where: optional ``[...]`` mask of valid positions.
    class_where: optional ``[..., C]`` mask of included classes.
    reduction: see `divlab.losses.reduce_loss`.

  Returns:
    ``[...]`` per-example losses (or a scalar when reduced).

  Example:
    >>> listmle(jnp.zeros((1, 3)), jnp.zeros((1, 3)), jnp.array([0]))  # log 3!
    Array([1.7917595], dtype=float32)
    >>> listmle(jnp.zeros((1, 3)), jnp.zeros((1, 3)), jnp.array([0]),
    ...         normalize=True)  # log(3!) / 3
    Array([0.5972532], dtype=float32)
  """
  student, _, ranking, position_mask = _ranking_inputs(
      student_logits, teacher_logits, labels, where, class_where)
  weights = jnp.ones(student.shape, student.dtype)
  if normalize:
    if class_where is None:
      included = jnp.asarray(student.shape[-1], student.dtype)
    else:
      included = jnp.sum(jnp.broadcast_to(jnp.asarray(class_where, bool),
                                          student.shape), axis=-1, keepdims=True)
      # A row with no included class adds no term; avoid 1/0 there.
      included = jnp.maximum(included, 1).astype(student.dtype)
    weights = weights / included
  return plackett_luce(student, ranking, weights, where=position_mask,
                       class_where=class_where, reduction=reduction)


# ----------------------------------------------------------------------------
# DIST: correlation-based relational distillation.
# ----------------------------------------------------------------------------


def _masked_pearson(a: jax.Array, b: jax.Array, mask: jax.Array, axis: int,
                    eps: float) -> jax.Array:
  """Pearson correlation of a and b along `axis` over the masked entries.

  Uses the DIST code's ``<a_c, b_c> / (|a_c| |b_c| + eps)``. Norms of all-zero
  lines are taken as 0 with a zero gradient (sqrt'(0) would be infinite).
  """
  count = jnp.maximum(jnp.sum(mask, axis=axis, keepdims=True), 1)
  a = jnp.where(mask, a, 0.0)
  b = jnp.where(mask, b, 0.0)
  a_c = jnp.where(mask, a - jnp.sum(a, axis=axis, keepdims=True) / count, 0.0)
  b_c = jnp.where(mask, b - jnp.sum(b, axis=axis, keepdims=True) / count, 0.0)

  def safe_norm(x):
    squared = jnp.sum(jnp.square(x), axis=axis)
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)

  return jnp.sum(a_c * b_c, axis=axis) / (safe_norm(a_c) * safe_norm(b_c) + eps)


def dist(student_logits: ArrayLike,
         teacher_logits: ArrayLike,
         *,
         beta: float = 1.0,
         gamma: float = 1.0,
         temperature: float = 1.0,
         eps: float = 1e-8,
         where: Optional[ArrayLike] = None,
         class_where: Optional[ArrayLike] = None) -> jax.Array:
  """DIST: match inter-class and intra-class correlations of the predictions.

  With ``Y_s = softmax(s/T)``, ``Y_t = softmax(t/T)`` (``[B, C]``) and the
  Pearson correlation ``rho``:
  ``inter = 1 - mean_i rho(Y_s[i, :], Y_t[i, :])`` (across classes, per
  example), ``intra = 1 - mean_c rho(Y_s[:, c], Y_t[:, c])`` (across the batch,
  per class), and ``L = T^2 (beta * inter + gamma * intra)``. The ``T^2``
  factor follows the released code. Pearson uses
  ``<a_c, b_c> / (|a_c| |b_c| + eps)`` as the code does. The intra-class term
  needs the whole batch, so the loss returns a scalar. Teacher constant.

  Masks: a padded example (``where``) takes part in neither term. An excluded
  class (``class_where``) is left out of the correlation of its example and out
  of its class column; lines with no entry left are skipped in the means.

  Reference: Huang et al., "Knowledge Distillation from A Stronger Teacher",
  NeurIPS 2022 [code; beta = gamma = 1, tau = 1 on ImageNet].

  Args:
    student_logits: ``[B, C]`` (flatten tokens or pixels into ``B`` first).
    teacher_logits: ``[B, C]``.
    beta: weight (>= 0) of the inter-class relation.
    gamma: weight (>= 0) of the intra-class relation.
    temperature: ``T > 0``.
    eps: stabiliser (>= 0) of the correlation's denominator.
    where: optional ``[B]`` mask of valid examples.
    class_where: optional ``[B, C]`` mask of included classes.

  Returns:
    A scalar loss.

  Example:
    >>> x = jnp.array([[0., 1., 2.], [2., 0., 1.]])
    >>> bool(dist(x, x) < 1e-6)  # perfectly correlated: 0 up to eps
    True
  """
  student, teacher = _logit_pair(student_logits, teacher_logits)
  if student.ndim != 2:
    raise ValueError(f"`student_logits` must have shape [B, C] (DIST "
                     f"correlates across the batch), got {student.shape}.")
  _checks.check_positive_finite(temperature, "temperature")
  _check_weight(beta, "beta")
  _check_weight(gamma, "gamma")
  _check_weight(eps, "eps")
  position_mask = _checks.example_mask(where, student.shape)
  class_mask = _checks.broadcast_mask(class_where, student.shape, "class_where")
  student = _blank_padding(student, position_mask)
  teacher = _blank_padding(teacher, position_mask)
  probs_student = jnp.exp(divergences.masked_log_softmax(student / temperature,
                                                         where=class_where))
  probs_teacher = jnp.exp(divergences.masked_log_softmax(teacher / temperature,
                                                         where=class_where))
  entry_mask = jnp.ones(student.shape, dtype=bool)
  if class_mask is not None:
    entry_mask = entry_mask & class_mask
  if position_mask is not None:
    entry_mask = entry_mask & position_mask[:, None]
  inter_corr = _masked_pearson(probs_student, probs_teacher, entry_mask, 1, eps)
  intra_corr = _masked_pearson(probs_student, probs_teacher, entry_mask, 0, eps)
  inter = 1.0 - reduce_loss(inter_corr, "mean", where=entry_mask.any(axis=1))
  intra = 1.0 - reduce_loss(intra_corr, "mean", where=entry_mask.any(axis=0))
  return jnp.square(temperature) * (beta * inter + gamma * intra)


# ----------------------------------------------------------------------------
# Dual-head KD.
# ----------------------------------------------------------------------------

LOGIT_LOSSES = ("mse", "binary_kl", "binary_kl_norm")


def _binary_kl_per_class(p_logit: jax.Array, q_logit: jax.Array) -> jax.Array:
  """KL(Bernoulli(sigmoid(p)) || Bernoulli(sigmoid(q))) for every class.

  A Bernoulli with success logit z is the 2-class softmax of [z, 0], so the
  categorical KL of `divlab.divergences` gives it directly.
  """
  zeros = jnp.zeros_like(p_logit)
  return divergences.kl(jnp.stack([p_logit, zeros], axis=-1),
                        jnp.stack([q_logit, zeros], axis=-1))


def dual_head_kd(prob_head_logits: ArrayLike,
                 logit_head_logits: ArrayLike,
                 teacher_logits: ArrayLike,
                 labels: Optional[ArrayLike] = None,
                 *,
                 temperature: float = 1.0,
                 alpha: float = 1.0,
                 logit_loss: str = "mse",
                 logit_weight: float = 1.0,
                 where: Optional[ArrayLike] = None,
                 class_where: Optional[ArrayLike] = None,
                 reduction: str = "none") -> jax.Array:
  """Dual-head KD: probability-level loss on one head, logit-level on another.

  The student's classifier is split into two linear heads on a shared
  backbone. The probability head gets `kd`:
  ``(1 - alpha) CE(y, s_prob)
  + alpha T^2 KL(softmax(t/T) || softmax(s_prob/T))``;
  the logit head gets ``logit_weight`` times one of

  * ``'mse'``: ``mean_c (s_logit,c - t_c)^2`` (no temperature);
  * ``'binary_kl'``:
    ``T^2 sum_c KL(Bern(sigmoid(t_c/T)) || Bern(sigmoid(s_logit,c/T)))``;
  * ``'binary_kl_norm'``:
    ``T^2 sum_c KL(Bern(1/2) || Bern(sigmoid((s_logit,c - t_c)/T)))``
    (the released dual-head code's default).

  The returned value is the sum of both, so the backbone receives both
  gradients while each head sees only its own loss. Predict with the
  probability head: the logit head only shapes the shared features (logit
  matching alone can make a head's softmax collapse, which is why the two
  losses are kept on separate heads). ``alpha = 0`` puts only CE on the
  probability head, as the released code does. Teacher constant.

  Reference: Yang et al., "Dual-Head Knowledge Distillation: Enhancing Logits
  Utilization with an Auxiliary Head", 2024 [paper; the binary-KL variants
  checked in the released code].

  Args:
    prob_head_logits: ``[..., C]`` logits of the probability (prediction) head.
    logit_head_logits: ``[..., C]`` logits of the auxiliary logit head.
    teacher_logits: ``[..., C]``.
    labels: optional ``[...]`` integer labels; required when ``alpha < 1``.
    temperature: ``T > 0`` of the probability-level term and the binary KLs.
    alpha: weight in ``[0, 1]`` of the soft KD term on the probability head.
    logit_loss: one of ``'mse', 'binary_kl', 'binary_kl_norm'``.
    logit_weight: multiplier (>= 0) of the logit-level term.
    where: optional ``[...]`` mask of valid positions.
    class_where: optional ``[..., C]`` mask of included classes.
    reduction: see `divlab.losses.reduce_loss`.

  Returns:
    ``[...]`` per-example losses (or a scalar when reduced).

  Example:
    >>> z = jnp.array([[0., 1.]])
    >>> dual_head_kd(z, z + 1., z)  # KD term 0, MSE term 1
    Array([1.], dtype=float32)
  """
  if logit_loss not in LOGIT_LOSSES:
    raise ValueError(
        f"`logit_loss` must be one of {LOGIT_LOSSES}, got {logit_loss!r}.")
  logit_head, teacher = _logit_pair(logit_head_logits, teacher_logits,
                                    "logit_head_logits", "teacher_logits")
  prob_head = _as_float(prob_head_logits, "prob_head_logits")
  _checks.check_same_shape(prob_head, teacher, "prob_head_logits",
                           "teacher_logits")
  _checks.check_positive_finite(temperature, "temperature")
  _check_weight(logit_weight, "logit_weight")
  position_mask = _checks.example_mask(where, teacher.shape)
  class_mask = _checks.broadcast_mask(class_where, teacher.shape, "class_where")
  logit_head = _blank_padding(logit_head, position_mask)
  teacher = _blank_padding(teacher, position_mask)

  prob_term = kd(prob_head, teacher, labels, temperature=temperature,
                 alpha=alpha, where=position_mask, class_where=class_where)
  if class_mask is not None:
    # An excluded class may hold an infinite logit: blank it before any
    # arithmetic so that inf - inf never reaches the backward pass.
    logit_head = jnp.where(class_mask, logit_head, 0.0)
    teacher = jnp.where(class_mask, teacher, 0.0)
  if logit_loss == "mse":
    per_class = jnp.square(logit_head - teacher)
  elif logit_loss == "binary_kl":
    per_class = jnp.square(temperature) * _binary_kl_per_class(
        teacher / temperature, logit_head / temperature)
  else:
    gap = (logit_head - teacher) / temperature
    per_class = jnp.square(temperature) * _binary_kl_per_class(
        jnp.zeros_like(gap), gap)
  if class_mask is None:
    num_classes = per_class.shape[-1]
  else:
    per_class = jnp.where(class_mask, per_class, 0.0)
    num_classes = jnp.maximum(jnp.sum(class_mask, axis=-1), 1)
  logit_term = jnp.sum(per_class, axis=-1)
  if logit_loss == "mse":
    logit_term = logit_term / num_classes
  values = prob_term + logit_weight * logit_term
  return reduce_loss(values, reduction, where=position_mask)


# ----------------------------------------------------------------------------
# OFA-KD: adaptive target enhancement.
# ----------------------------------------------------------------------------


def ofa_target(teacher_logits: ArrayLike,
               labels: ArrayLike,
               gamma: float = 1.0,
               *,
               temperature: float = 1.0,
               class_where: Optional[ArrayLike] = None) -> jax.Array:
  """OFA-KD's enhanced target weights (a constant, not a distribution).

  ``w_c = (p_c + 1[c = y])^gamma - 1[c = y]`` with ``p = softmax(t/T)``:
  the true class gets ``(1 + p_y)^gamma - 1`` and every other class
  ``p_c^gamma``. For ``gamma = 1`` this is the teacher distribution itself;
  for ``gamma > 1`` the true class gains weight the more confident the
  teacher is (adding back the label's own cross-entropy weight 1 gives the
  coefficient ``(1 + p_y)^gamma``), while the non-target probabilities shrink.
  The weights are not renormalised (neither the paper's loss nor the released
  code renormalises them), so they sum to more or less than 1.

  Reference: Hao et al., "One-for-All: Bridge the Gap Between Heterogeneous
  Architectures in Knowledge Distillation", NeurIPS 2023 [code:
  ``distillers/ofa.py``, ``ofa_loss``].

  Args:
    teacher_logits: ``[..., C]``.
    labels: ``[...]`` integer labels.
    gamma: the enhancement exponent (``ofa_eps`` in the code), ``> 0``;
      1 means no enhancement.
    temperature: ``T > 0`` of the teacher softmax.
    class_where: optional ``[..., C]`` mask of included classes (weight 0
      outside).

  Returns:
    ``[..., C]`` target weights, stop-gradient applied.

  Example:
    >>> ofa_target(jnp.zeros((1, 2)), jnp.array([0]), 2.0)  # (1.5^2 - 1, 0.5^2)
    Array([[1.25, 0.25]], dtype=float32)
  """
  teacher = jax.lax.stop_gradient(_as_float(teacher_logits, "teacher_logits"))
  if teacher.ndim < 1:
    raise ValueError("`teacher_logits` must have a class axis, shape [..., C].")
  _checks.check_positive(gamma, "gamma")
  _checks.check_positive_finite(temperature, "temperature")
  _checks.broadcast_mask(class_where, teacher.shape, "class_where")
  labels = _check_labels(labels, teacher, None)
  probs = jnp.exp(divergences.masked_log_softmax(teacher / temperature,
                                                 where=class_where))
  is_label = jax.nn.one_hot(labels, teacher.shape[-1], dtype=teacher.dtype)
  return jnp.power(probs + is_label, gamma) - is_label


def ofa_kd(student_logits: ArrayLike,
           teacher_logits: ArrayLike,
           labels: ArrayLike,
           *,
           gamma: float = 1.0,
           temperature: float = 1.0,
           where: Optional[ArrayLike] = None,
           class_where: Optional[ArrayLike] = None,
           reduction: str = "none") -> jax.Array:
  """OFA-KD loss: cross-entropy of the student on the enhanced target.

  ``L = -sum_c w_c log softmax(s/T)_c`` with ``w = ofa_target(t, y, gamma, T)``.
  For ``gamma = 1`` it is the KD cross-entropy ``H(softmax(t/T), softmax(s/T))``
  (KL plus the teacher's entropy). No ``T^2`` factor (the released code has
  none); the hard-label CE is a separate term in OFA-KD (add
  `divlab.losses.softmax_cross_entropy` yourself). The same loss is applied to
  the projected intermediate-feature heads of a heterogeneous student.
  Teacher constant.

  Reference: Hao et al., NeurIPS 2023 [code: ``ofa_loss``; defaults
  gamma = 1, T = 1; the README's ImageNet example uses gamma = 1.5].

  Args:
    student_logits: ``[..., C]`` (the final head or a projected stage head).
    teacher_logits: ``[..., C]``.
    labels: ``[...]`` integer labels.
    gamma: enhancement exponent ``> 0``.
    temperature: ``T > 0``, applied to student and teacher.
    where: optional ``[...]`` mask of valid positions.
    class_where: optional ``[..., C]`` mask of included classes.
    reduction: see `divlab.losses.reduce_loss`.

  Returns:
    ``[...]`` per-example losses (or a scalar when reduced).

  Example:
    >>> ofa_kd(jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.array([0]))  # log 2
    Array([0.6931472], dtype=float32)
  """
  student, teacher = _logit_pair(student_logits, teacher_logits)
  _checks.check_positive_finite(temperature, "temperature")
  position_mask = _checks.example_mask(where, student.shape)
  _checks.broadcast_mask(class_where, student.shape, "class_where")
  student = _blank_padding(student, position_mask)
  teacher = _blank_padding(teacher, position_mask)
  labels = _check_labels(labels, student, position_mask)
  target = ofa_target(teacher, labels, gamma, temperature=temperature,
                      class_where=class_where)
  log_q = divergences.masked_log_softmax(student / temperature,
                                         where=class_where)
  # Excluded classes have weight 0 and log q = -inf; 0 * -inf must not appear.
  included = log_q > -jnp.inf
  values = -jnp.sum(jnp.where(included, target * log_q, 0.0), axis=-1)
  return reduce_loss(values, reduction, where=position_mask)
