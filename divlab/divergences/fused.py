"""Vocabulary-scale divergences fused with the output projection.

Distilling a language model compares ``softmax(h_s W_s / T)`` with
``softmax(h_t W_t / T)`` at every token. Written out, that needs the logits
``[B*T, V]`` of both models and their gradients: at ``B*T = 8192`` and
``V = 128256`` each such array holds a billion numbers. Here the tokens are cut
into chunks and a `jax.lax.scan` walks over them; per chunk it projects the
hidden states (a matmul in the input dtype with float32 accumulation), takes
the divergence of each row, and -- when a gradient is wanted -- the gradient
with respect to the student's logits in closed form, which it immediately
pushes through the projection: the chunk's rows of dL/dh and its share of
dL/dW (summed over chunks in float32). Nothing of size ``[B*T, V]`` exists at
any time, and the backward pass only scales the saved gradients by the
incoming cotangent, so value and gradient cost the same four matmuls as the
materialised path.

Why the gradient is computed in the forward pass: dL/dW is a sum over every
token, so a backward pass that started from the cotangent would have to redo
the projections chunk by chunk (two extra matmuls). Computing it during the
forward scan is only possible when the per-token weights of the final scalar
are known there, which is the case for every reduction of
`divlab.losses.reduce_loss` except ``"none"`` (each is linear in the
per-token values; the weights are its gradient). ``reduction="none"`` returns
per-token values and pays for the second scan in its backward pass.

Chunking: both softmaxes need a normaliser over the whole vocabulary, so the
scan runs over tokens, never over the vocabulary. The chunk size comes from a
memory budget (one float32 ``[chunk, V]`` array of at most 512 MiB: 1024 rows at
``V = 128256``); when all tokens fit in one chunk there is no scan at all.
Chunks that do not divide the token count are handled by padding the last one
with masked rows.
"""
from __future__ import annotations

import functools
import math
import numbers
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from divlab import _checks
from divlab.losses.reductions import reduce_loss

__all__ = ["FUSED_DIVERGENCES", "fused_chunk_size", "fused_linear_divergence"]

ArrayLike = jax.typing.ArrayLike

FUSED_DIVERGENCES = ("kl", "reverse_kl", "js", "tv")

# Budget for one float32 [chunk, V] array; a chunk holds a few such arrays
# (both models' logits, the gradient) at once.
_CHUNK_BUDGET_BYTES = 512 * 2**20
# Chunk rows are a multiple of this, so bf16 tiles stay whole.
_ROW_ALIGNMENT = 16


def fused_chunk_size(num_tokens: int, vocab_size: int,
                       budget_bytes: int = _CHUNK_BUDGET_BYTES) -> int:
  """Rows per chunk so that one float32 ``[rows, vocab_size]`` array fits the budget.

  All tokens form one chunk when they fit; otherwise the chunks are balanced
  (``ceil(num_tokens / num_chunks)`` rows, rounded up to a multiple of 16), so
  the padded last chunk wastes less than 16 rows instead of up to a chunk.

  Args:
    num_tokens: the number of rows ``B*T`` to cover.
    vocab_size: the number of classes ``V``.
    budget_bytes: the size allowed for one float32 ``[rows, V]`` array.

  Returns:
    The number of rows per chunk (``num_tokens`` itself for a single chunk).

  Example:
    >>> fused_chunk_size(8192, 128256), fused_chunk_size(1000, 128256)
    (1024, 1000)
  """
  max_rows = max(budget_bytes // (4 * vocab_size), _ROW_ALIGNMENT)
  max_rows -= max_rows % _ROW_ALIGNMENT
  if num_tokens <= max_rows:
    return max(num_tokens, 1)
  num_chunks = -(-num_tokens // max_rows)
  rows = -(-num_tokens // num_chunks)
  return -(-rows // _ROW_ALIGNMENT) * _ROW_ALIGNMENT


# ----------------------------------------------------------------------------
# Per-row divergences and their gradient with respect to the student logits.


def _softmax_rows(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(log p, p) over the last axis from one exp per entry; -inf rows stay -inf, not NaN."""
  top = jnp.max(logits, axis=-1, keepdims=True)
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  shifted = logits - top
  weights = jnp.exp(shifted)
  total = jnp.sum(weights, axis=-1, keepdims=True)
  total = jnp.where(total > 0, total, 1.0)
  return shifted - jnp.log(total), weights * (1 / total)


def _binary_entropy(beta: jax.Array) -> jax.Array:
  """-(b log b + (1-b) log(1-b)): the largest value JS_beta can take."""
  def xlogx(x):
    return jnp.where(x > 0, x * jnp.log(jnp.where(x > 0, x, 1.0)), 0.0)
  return -(xlogx(beta) + xlogx(1 - beta))


def _rows_and_student_grad(divergence: str, teacher_logits: jax.Array,
                           student_logits: jax.Array, beta: jax.Array):
  """D(P, Q) per row and dD/d(student logits), P = softmax(teacher), Q = softmax(student).

  The conventions are those of the KD losses: ``kl`` is KL(P || Q), ``reverse_kl``
  is KL(Q || P), ``js`` is JS_beta(P, Q) with weight beta on P, ``tv`` is
  0.5 sum |p - q|. Gradients are the closed forms of the softmax chain rule:
  KL: q - p; reverse KL: q (log q - log p - D); JS: (1 - beta) q (log q -
  log m - KL(Q || M)); TV: 0.5 q (s - sum_i s_i q_i) with s = d|p - q|/dq.
  Every product with a zero probability is selected away, so -inf logits
  (e.g. from a bias that masks part of the vocabulary) give no NaN.
  """
  log_p, p = _softmax_rows(teacher_logits)
  log_q, q = _softmax_rows(student_logits)
  if divergence == "kl":
    values = jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)
    return values, q - p
  if divergence == "reverse_kl":
    values = jnp.sum(jnp.where(q > 0, q * (log_q - log_p), 0.0), axis=-1)
    grad = jnp.where(q > 0, q * (log_q - log_p - values[:, None]), 0.0)
    return values, grad
  if divergence == "js":
    # log m = log(beta p + (1 - beta) q); the mixture is at least each of its
    # weighted parts, which repairs a sum of tiny probabilities that underflowed.
    log_m = jnp.maximum(jnp.log(beta * p + (1 - beta) * q),
                        jnp.maximum(jnp.log(beta) + log_p, jnp.log1p(-beta) + log_q))
    kl_pm = jnp.sum(jnp.where(p > 0, p * (log_p - log_m), 0.0), axis=-1)
    kl_qm = jnp.sum(jnp.where(q > 0, q * (log_q - log_m), 0.0), axis=-1)
    values = (jnp.where(beta > 0, beta * kl_pm, 0.0)
              + jnp.where(beta < 1, (1 - beta) * kl_qm, 0.0))
    # Round-off must not leave [0, H(beta)], the range of JS_beta.
    values = jnp.clip(values, 0.0, _binary_entropy(beta))
    grad = jnp.where((beta < 1) & (q > 0),
                     (1 - beta) * q * (log_q - log_m - kl_qm[:, None]), 0.0)
    return values, grad
  # tv: |p - q| is differentiated as jax differentiates abs (slope +1 at 0),
  # so ties give the same gradient as autodiff of the materialised form.
  sign = jnp.where(p >= q, -1.0, 1.0)
  values = 0.5 * jnp.sum(jnp.abs(p - q), axis=-1)
  grad = 0.5 * q * (sign - jnp.sum(sign * q, axis=-1, keepdims=True))
  return values, grad


# ----------------------------------------------------------------------------
# One chunk: projections, divergence, and the gradient pushed through them.


def _project(hidden: jax.Array, weight: jax.Array, bias: Optional[jax.Array],
             dtype) -> jax.Array:
  """hidden @ weight (+ bias) in the inputs' dtype, accumulated and returned in `dtype`."""
  logits = jnp.dot(hidden, weight, preferred_element_type=dtype)
  return logits if bias is None else logits + bias.astype(dtype)


_CONTRACT_ROWS = (((0,), (0,)), ((), ()))  # a^T b for a [C, H], b [C, V]
_CONTRACT_VOCAB = (((1,), (1,)), ((), ()))  # a b^T for a [C, V], b [H, V]


def _add_weight_grad(total: Optional[jax.Array], hidden: jax.Array,
                     grad_logits: jax.Array, dtype) -> jax.Array:
  """total + hidden^T grad_logits (just the product when `total` is None).

  The running sum is updated one vocabulary block at a time, so the float32
  product of a chunk never needs a second ``[H, V]`` buffer next to the sum
  (which would hold as much memory as the sum itself).
  """
  if total is None:
    return jax.lax.dot_general(hidden, grad_logits, _CONTRACT_ROWS,
                               preferred_element_type=dtype)
  hidden_size, vocab = total.shape
  blocks = max(1, -(-hidden_size * vocab * total.dtype.itemsize // _CHUNK_BUDGET_BYTES))
  width = -(-vocab // blocks)
  for start in range(0, vocab, width):
    stop = min(start + width, vocab)
    product = jax.lax.dot_general(hidden, grad_logits[:, start:stop], _CONTRACT_ROWS,
                                  preferred_element_type=dtype)
    block = jax.lax.slice_in_dim(total, start, stop, axis=1) + product
    total = jax.lax.dynamic_update_slice_in_dim(total, block, start, axis=1)
  return total


def _chunk(divergence, with_grads, params, row_weights, valid, student, teacher,
           grad_sums=(None, None)):
  """Values (and gradients) of one chunk of rows.

  Returns ``values [C]`` and, with `with_grads`, also the gradients of
  ``sum_i row_weights_i D_i``: ``dh [C, H]`` in the hidden dtype, and ``dW
  [H, V]``, ``db [V]`` (None without a bias) in the compute dtype, added to
  the running sums `grad_sums` when those are given.
  """
  beta, temperature = params
  h_s, w_s, b_s = student
  h_t, w_t, b_t = teacher
  dtype = beta.dtype
  # Padding rows may hold anything; blanking them first keeps their values
  # and gradients exactly zero.
  keep = valid[:, None]
  h_s = jnp.where(keep, h_s, 0)
  h_t = jnp.where(keep, h_t, 0)
  inv_t = 1 / temperature
  s = _project(h_s, w_s, b_s, dtype) * inv_t
  t = _project(h_t, w_t, b_t, dtype) * inv_t
  values, grad = _rows_and_student_grad(divergence, t, s, beta)
  values = jnp.where(valid, values, 0.0)
  if not with_grads:
    return values
  # d/dz of D(z / T) is dD/ds / T, with z = h W + b.
  scale = jnp.where(valid, row_weights * inv_t, 0.0)[:, None]
  grad_logits = jnp.where(keep, scale * grad, 0.0)
  # The backward matmuls run in the forward's dtype, like autodiff's would.
  g = grad_logits.astype(jnp.result_type(h_s, w_s))
  dh = jax.lax.dot_general(g, w_s, _CONTRACT_VOCAB,
                           preferred_element_type=dtype).astype(h_s.dtype)
  dw_sum, db_sum = grad_sums
  dw = _add_weight_grad(dw_sum, h_s, g, dtype)
  db = None
  if b_s is not None:
    db = jnp.sum(grad_logits, axis=0)
    db = db if db_sum is None else db_sum + db
  return values, dh, dw, db


def _split(x: jax.Array, num_chunks: int, rows: int, fill) -> jax.Array:
  """[N, ...] -> [num_chunks, rows, ...], the tail padded with `fill`."""
  pad = num_chunks * rows - x.shape[0]
  if pad:
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), constant_values=fill)
  return x.reshape((num_chunks, rows) + x.shape[1:])


def _merge(x: jax.Array, num_rows: int) -> jax.Array:
  """[num_chunks, rows, ...] -> [num_rows, ...] (drops the padding)."""
  return x.reshape((-1,) + x.shape[2:])[:num_rows]


def _scan_chunks(divergence, rows, with_grads, params, row_weights, valid,
                 student, teacher):
  """Runs `_chunk` over all tokens; returns values [N] (and summed gradients)."""
  h_s, w_s, b_s = student
  h_t, w_t, b_t = teacher
  num_tokens = h_s.shape[0]
  num_chunks = -(-num_tokens // rows)
  if row_weights is None:  # values only: the weights are never read
    row_weights = jnp.zeros(valid.shape, params[0].dtype)
  chunk = functools.partial(_chunk, divergence, with_grads, params)
  if num_chunks == 1:
    out = chunk(row_weights, valid, student, teacher)
    return out if with_grads else (out,)

  xs = (_split(row_weights, num_chunks, rows, 0), _split(valid, num_chunks, rows, False),
        _split(h_s, num_chunks, rows, 0), _split(h_t, num_chunks, rows, 0))

  def step(grad_sums, x):
    weights_c, valid_c, h_s_c, h_t_c = x
    out = chunk(weights_c, valid_c, (h_s_c, w_s, b_s), (h_t_c, w_t, b_t), grad_sums)
    if not with_grads:
      return grad_sums, out
    values, dh, dw, db = out
    return (dw, db), (values, dh)

  if not with_grads:
    _, values = jax.lax.scan(step, None, xs)
    return (_merge(values, num_tokens),)
  dtype = params[0].dtype
  init = (jnp.zeros(w_s.shape, dtype),
          None if b_s is None else jnp.zeros(b_s.shape, dtype))
  (dw, db), (values, dh) = jax.lax.scan(step, init, xs)
  return _merge(values, num_tokens), _merge(dh, num_tokens), dw, db


# ----------------------------------------------------------------------------
# Differentiation rules. The teacher, the mask, beta and T get no cotangent.


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _weighted_sum(divergence, rows, params, row_weights, valid, student, teacher):
  """sum_i row_weights_i D_i; its forward pass also forms the gradient."""
  (values,) = _scan_chunks(divergence, rows, False, params, row_weights, valid,
                           student, teacher)
  return jnp.sum(row_weights * values)


def _weighted_sum_fwd(divergence, rows, params, row_weights, valid, student, teacher):
  values, dh, dw, db = _scan_chunks(divergence, rows, True, params, row_weights,
                                    valid, student, teacher)
  _, w_s, b_s = student
  # Saved in the student's dtypes: the backward pass only rescales them.
  dw = dw.astype(w_s.dtype)
  db = None if db is None else db.astype(b_s.dtype)
  return jnp.sum(row_weights * values), (values, dh, dw, db)


def _scaled(g: jax.Array, x: Optional[jax.Array]) -> Optional[jax.Array]:
  if x is None:
    return None
  return (g * x.astype(g.dtype)).astype(x.dtype)


def _weighted_sum_bwd(divergence, rows, residuals, g):
  del divergence, rows
  values, dh, dw, db = residuals
  student_grads = (_scaled(g, dh), _scaled(g, dw), _scaled(g, db))
  return (None, None), g * values, None, student_grads, (None, None, None)


_weighted_sum.defvjp(_weighted_sum_fwd, _weighted_sum_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _per_token(divergence, rows, params, valid, student, teacher):
  """D_i for every token (reduction 'none'); the backward pass rescans."""
  (values,) = _scan_chunks(divergence, rows, False, params, None, valid,
                           student, teacher)
  return values


def _per_token_fwd(divergence, rows, params, valid, student, teacher):
  values = _per_token(divergence, rows, params, valid, student, teacher)
  return values, (params, valid, student, teacher)


def _per_token_bwd(divergence, rows, residuals, g):
  params, valid, student, teacher = residuals
  _, dh, dw, db = _scan_chunks(divergence, rows, True, params, g, valid,
                               student, teacher)
  _, w_s, b_s = student
  student_grads = (dh, dw.astype(w_s.dtype),
                   None if db is None else db.astype(b_s.dtype))
  return (None, None), None, student_grads, (None, None, None)


_per_token.defvjp(_per_token_fwd, _per_token_bwd)


# ----------------------------------------------------------------------------
# Argument checks and the public function.


def _check_hidden_and_weight(hidden, weight, bias, prefix: str):
  hidden, weight = jnp.asarray(hidden), jnp.asarray(weight)
  _checks.check_floating(hidden, f"{prefix}_hidden")
  _checks.check_floating(weight, f"{prefix}_weight")
  if hidden.ndim < 1:
    raise ValueError(f"`{prefix}_hidden` must have shape [..., H], got a scalar.")
  if weight.ndim != 2:
    raise ValueError(f"`{prefix}_weight` must have shape [H, V], got {weight.shape}.")
  if weight.shape[0] != hidden.shape[-1]:
    raise ValueError(
        f"`{prefix}_weight` of shape {weight.shape} does not match "
        f"`{prefix}_hidden` of shape {hidden.shape}: expected [{hidden.shape[-1]}, V].")
  if bias is not None:
    bias = jnp.asarray(bias)
    _checks.check_floating(bias, f"{prefix}_bias")
    if bias.shape != weight.shape[1:]:
      raise ValueError(f"`{prefix}_bias` must have shape [{weight.shape[1]}] "
                       f"(one entry per class), got {bias.shape}.")
  return hidden, weight, bias


def _check_chunk_size(chunk_size) -> None:
  if chunk_size is None:
    return
  if (isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral)
      or chunk_size < 1):
    raise ValueError(f"`chunk_size` must be a positive Python int or None, got "
                     f"{chunk_size!r}.")


def _check_token_mask(where, leading_shape):
  if where is None:
    return jnp.ones(leading_shape, bool)
  where = jnp.asarray(where)
  if not (where.dtype == jnp.bool_ or jnp.issubdtype(where.dtype, jnp.integer)):
    raise ValueError(f"`where` must be a boolean token mask, got dtype {where.dtype}.")
  return _checks.broadcast_mask(where, leading_shape, "where")


def _check_scalar_hyperparameter(value, name: str) -> None:
  if jnp.ndim(value) != 0:
    raise ValueError(f"`{name}` must be a scalar, got shape {jnp.shape(value)}.")


def _reduction_weights(reduction, mask, normalizer, dtype) -> jax.Array:
  """The per-token coefficients of `reduce_loss`, which is linear in its values."""
  def reduce(values):
    return reduce_loss(values, reduction, where=mask, normalizer=normalizer)
  return jax.grad(reduce)(jnp.zeros(mask.shape, dtype))


def fused_linear_divergence(student_hidden: ArrayLike,
                            student_weight: ArrayLike,
                            teacher_hidden: ArrayLike,
                            teacher_weight: ArrayLike,
                            *,
                            divergence: str = "kl",
                            temperature: ArrayLike = 1.0,
                            beta: ArrayLike = 0.5,
                            where: Optional[ArrayLike] = None,
                            chunk_size: Optional[int] = None,
                            reduction: str = "mean",
                            normalizer: Optional[ArrayLike] = None,
                            student_bias: Optional[ArrayLike] = None,
                            teacher_bias: Optional[ArrayLike] = None) -> jax.Array:
  """Token-wise divergence between a teacher's and a student's output softmax, never materialising the logits.

  ``D_i = D(softmax((h_t,i W_t + b_t) / T), softmax((h_s,i W_s + b_s) / T))``
  for each token ``i``, reduced by `divlab.losses.reduce_loss`. With ``P`` the
  teacher and ``Q`` the student (the argument order of the KD losses):

  * ``"kl"``: KL(P || Q) = sum p log(p / q), i.e. ``divergences.kl(t, s)``;
  * ``"reverse_kl"``: KL(Q || P), i.e. ``divergences.reverse_kl(t, s)``;
  * ``"js"``: JS_beta(P, Q) = beta KL(P || M) + (1 - beta) KL(Q || M),
    ``M = beta P + (1 - beta) Q`` (beta weighs the teacher; at most log 2 for
    beta = 1/2), i.e. ``divergences.js(t, s, beta=beta)``;
  * ``"tv"``: 0.5 sum |p - q|, i.e. ``divergences.total_variation(t, s)``.

  The result equals computing the logits, then that categorical divergence of
  ``logits / T``, then `reduce_loss`; no ``T^2`` factor is applied here (the
  distillation loss `divlab.losses.distillation.fused_linear_distill` applies
  it). The teacher is a constant (stop-gradient); gradients flow to
  `student_hidden`, `student_weight` and `student_bias`, not to `temperature`
  or `beta`. The tokens are processed in chunks of `chunk_size` rows by a
  `jax.lax.scan`; see the module docstring for the memory and speed design
  (Liger-Kernel's fused linear JSD is the PyTorch precedent).

  Dtypes: the matmuls run in the inputs' dtype (bf16 stays bf16) with float32
  accumulation; everything after them runs in float32 (float64 for float64
  inputs), and so does the returned value; gradients come back in each
  input's dtype.

  Args:
    student_hidden: ``[..., H]`` student hidden states (e.g. ``[B, T, H]``).
    student_weight: ``[H, V]`` student output projection.
    teacher_hidden: ``[..., H_t]`` teacher hidden states, same leading shape.
    teacher_weight: ``[H_t, V]`` teacher output projection.
    divergence: one of ``"kl", "reverse_kl", "js", "tv"``.
    temperature: ``T > 0`` dividing both models' logits.
    beta: the teacher's weight in the JS mixture, in ``[0, 1]`` (JS only).
    where: optional ``[...]`` token mask (True = include), broadcastable to
      the leading shape; an excluded token gives 0 and no gradient, whatever
      its hidden state holds.
    chunk_size: tokens per chunk; None picks the largest chunk whose float32
      ``[chunk, V]`` array stays under 512 MiB (all tokens if they fit).
    reduction: a `reduce_loss` reduction (``"mean"`` is the token mean over
      `where`). Every reduction but ``"none"`` computes the gradient during
      the forward pass; ``"none"`` recomputes the chunks in the backward pass.
    normalizer: the divisor for ``reduction="normalizer"`` (e.g. the global
      token count of a gradient-accumulation step).
    student_bias: optional ``[V]`` student output bias.
    teacher_bias: optional ``[V]`` teacher output bias (``-inf`` entries
      exclude classes from the teacher).

  Returns:
    A scalar, or ``[...]`` per-token values for ``reduction="none"``, in
    float32 (float64 for float64 inputs).

  Example:
    >>> h_s, h_t = jnp.ones((2, 3, 4)), jnp.ones((2, 3, 5))
    >>> w_s, w_t = jnp.zeros((4, 6)), jnp.zeros((5, 6))  # equal softmaxes
    >>> float(fused_linear_divergence(h_s, w_s, h_t, w_t, divergence="js"))
    0.0
  """
  h_s, w_s, b_s = _check_hidden_and_weight(student_hidden, student_weight,
                                           student_bias, "student")
  h_t, w_t, b_t = _check_hidden_and_weight(teacher_hidden, teacher_weight,
                                           teacher_bias, "teacher")
  if divergence not in FUSED_DIVERGENCES:
    raise ValueError(f"`divergence` must be one of {FUSED_DIVERGENCES}, got "
                     f"{divergence!r}.")
  if h_t.shape[:-1] != h_s.shape[:-1]:
    raise ValueError(
        f"`teacher_hidden` of shape {h_t.shape} must have the leading shape of "
        f"`student_hidden` {h_s.shape[:-1]} (one teacher row per token).")
  if w_t.shape[1] != w_s.shape[1]:
    raise ValueError(f"`teacher_weight` has {w_t.shape[1]} classes, "
                     f"`student_weight` {w_s.shape[1]}: they must agree.")
  _check_scalar_hyperparameter(temperature, "temperature")
  _checks.check_positive(temperature, "temperature")
  if _checks.is_concrete_number(temperature) and not math.isfinite(float(temperature)):
    raise ValueError(f"`temperature` must be finite, got {temperature!r}.")
  _check_scalar_hyperparameter(beta, "beta")
  _checks.check_in_range(beta, "beta", 0.0, 1.0)
  _check_chunk_size(chunk_size)
  leading_shape = h_s.shape[:-1]
  mask = _check_token_mask(where, leading_shape)

  dtype = jnp.promote_types(jnp.result_type(h_s, w_s, h_t, w_t), jnp.float32)
  params = tuple(jax.lax.stop_gradient(jnp.asarray(x, dtype))
                 for x in (beta, temperature))
  num_tokens = int(np.prod(leading_shape))
  rows = (fused_chunk_size(num_tokens, w_s.shape[1]) if chunk_size is None
          else min(int(chunk_size), max(num_tokens, 1)))
  student = (h_s.reshape(num_tokens, h_s.shape[-1]), w_s, b_s)
  teacher = jax.tree_util.tree_map(
      jax.lax.stop_gradient, (h_t.reshape(num_tokens, h_t.shape[-1]), w_t, b_t))
  valid = mask.reshape(num_tokens)

  if reduction == "none":
    values = _per_token(divergence, rows, params, valid, student, teacher)
    return reduce_loss(values.reshape(leading_shape), "none", where=mask)
  row_weights = _reduction_weights(reduction, mask, normalizer, dtype)
  return _weighted_sum(divergence, rows, params, row_weights.reshape(num_tokens),
                       valid, student, teacher)
