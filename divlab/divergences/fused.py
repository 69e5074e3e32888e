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
dL/dW (summed in float32). The memory is set by budgets, not by ``B*T``: no
``[B*T, V]`` array in float32 is ever formed, and the logit gradients waiting
for the dL/dW matmul (in the matmul dtype) take at most 1 GiB and at most the
size of the float32 dL/dW sum itself. The backward pass only scales the saved
gradients by the incoming cotangent, so value and gradient cost the same four
matmuls as the materialised path.

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
memory budget (one float32 ``[chunk, V]`` array of at most 512 MiB: 1024 rows
at ``V = 128256``); when all tokens fit in one chunk there is no scan at all.
Consecutive chunks form groups whose logit gradients (in the matmul dtype)
enter dL/dW through one matmul, so the float32 sum of dL/dW is read and
written once per group instead of once per chunk -- at large vocabularies
that traffic would otherwise cost about as much as the divergence itself.
Chunks that do not divide the token count are handled by padding the last one
with masked rows. `fused_chunk_plan` gives the sizes.
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

__all__ = ["FUSED_DIVERGENCES", "fused_chunk_plan", "fused_linear_divergence"]

ArrayLike = jax.typing.ArrayLike

FUSED_DIVERGENCES = ("kl", "reverse_kl", "js", "tv")

# Budget for one float32 [chunk, V] array; a chunk holds a few such arrays
# (both models' logits, the gradient) at once.
_CHUNK_BUDGET_BYTES = 512 * 2**20
# Budget for the logit gradients of a group of chunks, kept in the matmul
# dtype until one matmul adds the group's share of dL/dW.
_GROUP_BUDGET_BYTES = 2**30
# Chunk rows are a multiple of this, so bf16 tiles stay whole.
_ROW_ALIGNMENT = 16


def _ceil_div(a: int, b: int) -> int:
  return -(-a // b)


def _aligned(rows: int) -> int:
  return _ceil_div(rows, _ROW_ALIGNMENT) * _ROW_ALIGNMENT


def fused_chunk_plan(num_tokens: int, hidden_size: int, vocab_size: int, *,
                     grad_itemsize: int = 2,
                     chunk_size: Optional[int] = None) -> tuple[int, int, int]:
  """How `fused_linear_divergence` cuts the tokens: (chunk rows, chunks per group, groups).

  A chunk is the unit of the divergence: its float32 ``[rows, V]`` logits
  stay under 512 MiB (1024 rows at ``V = 128256``) unless `chunk_size` says
  otherwise. A group is the unit of the weight gradient: its chunks' logit
  gradients (``grad_itemsize`` bytes each, the matmul dtype's) are kept and
  enter ``dL/dW`` through one matmul, so the float32 running sum of ``dL/dW``
  is read and written once per group rather than once per chunk (with one
  group there is no running sum at all). Beyond its first chunk, a group
  grows only while its gradients stay under 1 GiB and under the float32
  ``[H, V]`` sum's own size, so they never cost more memory than the sum
  they save traffic on. All tokens form one
  chunk when they fit. Default sizes are balanced (equal groups, equal
  chunks, rows rounded up to a multiple of 16), so padding stays small.

  Args:
    num_tokens: the number of rows ``B*T``.
    hidden_size: the student's hidden size ``H``.
    vocab_size: the number of classes ``V``.
    grad_itemsize: bytes per logit gradient (2 for bf16 inputs, 4 for f32).
    chunk_size: rows per chunk, or None for the budget's choice.

  Returns:
    ``(rows, chunks_per_group, num_groups)``; ``rows * chunks_per_group *
    num_groups >= num_tokens``, the excess being masked padding rows.

  Example:
    >>> fused_chunk_plan(8192, 4096, 128256)  # bf16: 2 groups of 4 chunks
    (1024, 4, 2)
    >>> fused_chunk_plan(1000, 4096, 128256)  # fits: one chunk
    (1000, 1, 1)
  """
  num_tokens = max(num_tokens, 1)
  max_rows = max(_CHUNK_BUDGET_BYTES // (4 * vocab_size), _ROW_ALIGNMENT)
  max_rows -= max_rows % _ROW_ALIGNMENT
  if chunk_size is None and num_tokens <= max_rows:
    return num_tokens, 1, 1
  if chunk_size is not None and chunk_size >= num_tokens:
    return num_tokens, 1, 1
  group_rows = max(min(_GROUP_BUDGET_BYTES // (grad_itemsize * vocab_size),
                       4 * hidden_size // grad_itemsize), 1)
  if chunk_size is not None:
    num_chunks = _ceil_div(num_tokens, chunk_size)
    per_group = min(max(group_rows // chunk_size, 1), num_chunks)
    num_groups = _ceil_div(num_chunks, per_group)
    return chunk_size, _ceil_div(num_chunks, num_groups), num_groups
  group_rows = max(group_rows, max_rows)
  num_groups = _ceil_div(num_tokens, group_rows)
  rows_per_group = _ceil_div(num_tokens, num_groups)
  per_group = _ceil_div(rows_per_group, max_rows)
  return _aligned(_ceil_div(rows_per_group, per_group)), per_group, num_groups


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
  # Round-off must not make a divergence negative (KL of P ~ Q can give -1e-9).
  if divergence == "kl":
    values = jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)
    return jnp.maximum(values, 0.0), q - p
  if divergence == "reverse_kl":
    values = jnp.sum(jnp.where(q > 0, q * (log_q - log_p), 0.0), axis=-1)
    values = jnp.maximum(values, 0.0)
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
    # Nor leave [0, H(beta)], the range of JS_beta.
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

  The running sum is updated a block of hidden units (rows of dL/dW) at a
  time, in a loop, so the float32 product never needs a second ``[H, V]``
  buffer next to the sum (which would hold as much memory as the sum
  itself); a loop rather than unrolled blocks, so that the compiler cannot
  schedule all the block products before the first update. Row blocks are
  contiguous in the sum, and the large `grad_logits` operand is read whole.
  """
  if total is None:
    return jax.lax.dot_general(hidden, grad_logits, _CONTRACT_ROWS,
                               preferred_element_type=dtype)
  hidden_size, vocab = total.shape
  needed = _ceil_div(hidden_size * vocab * total.dtype.itemsize, _CHUNK_BUDGET_BYTES)
  # Equal blocks (a divisor of H), so that no slice is clamped at the edge;
  # an H without a divisor near `needed` (a large prime) is summed at once.
  blocks = next(b for b in range(max(needed, 1), hidden_size + 1) if hidden_size % b == 0)
  if blocks == 1 or blocks > 4 * needed:
    return total + jax.lax.dot_general(hidden, grad_logits, _CONTRACT_ROWS,
                                       preferred_element_type=dtype)
  height = hidden_size // blocks

  def add_block(i, total):
    start = i * height
    hidden_block = jax.lax.dynamic_slice_in_dim(hidden, start, height, axis=1)
    product = jax.lax.dot_general(hidden_block, grad_logits, _CONTRACT_ROWS,
                                  preferred_element_type=dtype)
    block = jax.lax.dynamic_slice_in_dim(total, start, height, axis=0) + product
    return jax.lax.dynamic_update_slice_in_dim(total, block, start, axis=0)

  return jax.lax.fori_loop(0, blocks, add_block, total)


def _chunk(divergence, with_grads, params, student, teacher, rows):
  """Values (and gradients) of one chunk of rows.

  `rows` holds the chunk's ``(row_weights, valid, h_s, h_t)``; padding rows
  must already be blanked. Returns ``values [C]`` and, with `with_grads`,
  also for ``sum_i row_weights_i D_i``: ``dh [C, H]`` in the hidden dtype,
  the logit gradients ``[C, V]`` in the matmul dtype (for dL/dW) and their
  column sums ``[V]`` in the compute dtype (dL/db; None without a bias).
  """
  beta, temperature = params
  _, w_s, b_s = student
  _, w_t, b_t = teacher
  row_weights, valid, h_s, h_t = rows
  dtype = beta.dtype
  inv_t = 1 / temperature
  s = _project(h_s, w_s, b_s, dtype) * inv_t
  t = _project(h_t, w_t, b_t, dtype) * inv_t
  values, grad = _rows_and_student_grad(divergence, t, s, beta)
  values = jnp.where(valid, values, 0.0)
  if not with_grads:
    return values
  # d/dz of D(z / T) is dD/ds / T, with z = h W + b.
  scale = jnp.where(valid, row_weights * inv_t, 0.0)[:, None]
  grad_logits = jnp.where(valid[:, None], scale * grad, 0.0)
  # The backward matmuls run in the forward's dtype, like autodiff's would.
  g = grad_logits.astype(jnp.result_type(h_s, w_s))
  dh = jax.lax.dot_general(g, w_s, _CONTRACT_VOCAB,
                           preferred_element_type=dtype).astype(h_s.dtype)
  db = None if b_s is None else jnp.sum(grad_logits, axis=0)
  return values, dh, g, db


def _split(x: jax.Array, shape: tuple[int, ...], fill) -> jax.Array:
  """[N, ...] -> [*shape, ...] (shape multiplies to >= N), the tail padded with `fill`."""
  pad = math.prod(shape) - x.shape[0]
  if pad:
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), constant_values=fill)
  return x.reshape(shape + x.shape[1:])


def _merge(x: jax.Array, depth: int, num_rows: int) -> jax.Array:
  """Undoes `_split` over the first `depth` axes and drops the padding."""
  return x.reshape((-1,) + x.shape[depth:])[:num_rows]


def _scan_chunks(divergence, plan, with_grads, params, row_weights, valid,
                 student, teacher):
  """Runs `_chunk` over all tokens; returns values [N] (and the gradients).

  `plan` is ``(rows, chunks_per_group, num_groups)`` from `fused_chunk_plan`.
  Values alone need no groups: one scan over the chunks. With gradients, an
  inner scan over a group's chunks stacks their logit gradients, one matmul
  turns them into the group's share of dL/dW, and an outer scan over groups
  carries the float32 sums of dL/dW and dL/db.
  """
  h_s, w_s, b_s = student
  h_t, w_t, b_t = teacher
  dtype = params[0].dtype
  num_tokens = h_s.shape[0]
  if row_weights is None:  # values only: the weights are never read
    row_weights = jnp.zeros(valid.shape, dtype)
  # Padding rows may hold anything; blanking them first keeps their values
  # and gradients exactly zero.
  h_s = jnp.where(valid[:, None], h_s, 0)
  h_t = jnp.where(valid[:, None], h_t, 0)
  rows, per_group, num_groups = plan
  chunk = functools.partial(_chunk, divergence, with_grads, params, student, teacher)

  def split(shape):
    return (_split(row_weights, shape, 0), _split(valid, shape, False),
            _split(h_s, shape, 0), _split(h_t, shape, 0))

  if not with_grads:
    num_chunks = _ceil_div(num_tokens, rows)
    if num_chunks == 1:
      return (chunk((row_weights, valid, h_s, h_t)),)
    _, values = jax.lax.scan(lambda c, x: (c, chunk(x)), None, split((num_chunks, rows)))
    return (_merge(values, 2, num_tokens),)

  def group(sums, xs):
    """One group's chunks -> (values, dh) and the updated gradient sums."""
    dw_sum, db_sum = sums
    if per_group == 1:
      values, dh, g, db = chunk(jax.tree_util.tree_map(lambda x: x[0], xs))
      values, dh, g = values[None], dh[None], g[None]
    else:
      _, (values, dh, g, db) = jax.lax.scan(lambda c, x: (c, chunk(x)), None, xs)
      db = None if db is None else jnp.sum(db, axis=0)
    hidden = xs[2].reshape(-1, xs[2].shape[-1])
    dw = _add_weight_grad(dw_sum, hidden, g.reshape(-1, g.shape[-1]), dtype)
    if db is not None and db_sum is not None:
      db = db_sum + db
    return (dw, db), (values, dh)

  if num_groups == 1:
    (dw, db), (values, dh) = group((None, None), split((per_group, rows)))
    return _merge(values, 2, num_tokens), _merge(dh, 2, num_tokens), dw, db
  init = (jnp.zeros(w_s.shape, dtype),
          None if b_s is None else jnp.zeros(b_s.shape, dtype))
  (dw, db), (values, dh) = jax.lax.scan(group, init,
                                        split((num_groups, per_group, rows)))
  return _merge(values, 3, num_tokens), _merge(dh, 3, num_tokens), dw, db


# ----------------------------------------------------------------------------
# Differentiation rules. The teacher, the mask, beta and T get no cotangent.


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _weighted_sum(divergence, plan, params, row_weights, valid, student, teacher):
  """sum_i row_weights_i D_i; its forward pass also forms the gradient."""
  (values,) = _scan_chunks(divergence, plan, False, params, row_weights, valid,
                           student, teacher)
  return jnp.sum(row_weights * values)


def _weighted_sum_fwd(divergence, plan, params, row_weights, valid, student, teacher):
  values, dh, dw, db = _scan_chunks(divergence, plan, True, params, row_weights,
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


def _weighted_sum_bwd(divergence, plan, residuals, g):
  del divergence, plan
  values, dh, dw, db = residuals
  student_grads = (_scaled(g, dh), _scaled(g, dw), _scaled(g, db))
  return (None, None), g * values, None, student_grads, (None, None, None)


_weighted_sum.defvjp(_weighted_sum_fwd, _weighted_sum_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _per_token(divergence, plan, params, valid, student, teacher):
  """D_i for every token (reduction 'none'); the backward pass rescans."""
  (values,) = _scan_chunks(divergence, plan, False, params, None, valid,
                           student, teacher)
  return values


def _per_token_fwd(divergence, plan, params, valid, student, teacher):
  values = _per_token(divergence, plan, params, valid, student, teacher)
  return values, (params, valid, student, teacher)


def _per_token_bwd(divergence, plan, residuals, g):
  params, valid, student, teacher = residuals
  _, dh, dw, db = _scan_chunks(divergence, plan, True, params, g, valid,
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
    chunk_size: tokens per chunk; None sizes the chunks so that a float32
      ``[chunk, V]`` array stays under 512 MiB (all tokens in one chunk if
      they fit). `fused_chunk_plan` shows the resulting plan.
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
  plan = fused_chunk_plan(num_tokens, w_s.shape[0], w_s.shape[1], chunk_size=chunk_size,
                          grad_itemsize=jnp.result_type(h_s, w_s).itemsize)
  student = (h_s.reshape(num_tokens, h_s.shape[-1]), w_s, b_s)
  teacher = jax.tree_util.tree_map(
      jax.lax.stop_gradient, (h_t.reshape(num_tokens, h_t.shape[-1]), w_t, b_t))
  valid = mask.reshape(num_tokens)

  if reduction == "none":
    values = _per_token(divergence, plan, params, valid, student, teacher)
    return reduce_loss(values.reshape(leading_shape), "none", where=mask)
  row_weights = _reduction_weights(reduction, mask, normalizer, dtype)
  return _weighted_sum(divergence, plan, params, row_weights.reshape(num_tokens),
                       valid, student, teacher)
