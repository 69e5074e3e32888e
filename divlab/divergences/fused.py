"""Vocabulary-scale divergences fused with the output projection.

Distilling a language model compares ``softmax(h_s W_s / T)`` with
``softmax(h_t W_t / T)`` at every token. Written out, that needs the logits
``[B*T, V]`` of both models and their gradients: at ``B*T = 8192`` and
``V = 128256`` each such array holds a billion numbers. Here the tokens are cut
into chunks and a `jax.lax.scan` walks over them; per chunk it forms the
logits ``h W + b`` (a matmul in the input dtype, so bf16 logits for bf16
inputs, exactly as the materialised ``h @ W`` has them), evaluates divlab's
own categorical divergence on them (`divlab.divergences.kl`, `js`, ...: the
same function, derivative rule and, on a GPU, kernels as the materialised
composition), and -- when a gradient is wanted -- takes that function's
gradient with respect to the student's logits, which it immediately pushes
through the projection: the chunk's rows of dL/dh and its share of dL/dW.
A chunk is thus the materialised composition restricted to its rows; only
the sums over tokens are split. The memory is set by budgets, not by ``B*T``: no ``[B*T, V]`` array is ever formed, a chunk's
arrays are sized by a 256 MiB budget (64 MiB on the CPU), and the logit gradients waiting for
the dL/dW matmul (in the matmul dtype) take at most 512 MiB. The running sum
of dL/dW is kept in the weight's dtype by default, and each group's product
is formed in it and added to it in one fused matmul on a GPU -- for bf16
weights, two bf16 roundings per group of chunks (a chunked loop under
autodiff, or Liger-Kernel, rounds as often) -- so apart from the weights and
their gradient the function needs about 1 GiB at ``V = 128256`` whatever the
token count; ``accumulation_dtype=jnp.float32`` keeps a float32 sum instead
(rounded once, for twice the weight's memory). The backward pass only
scales the saved gradients by the incoming cotangent, so value and gradient
cost the same four matmuls as the materialised path.

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
memory budget (one float32 ``[chunk, V]`` array of at most 256 MiB on an
accelerator: 512 rows at ``V = 128256``; 64 MiB on the CPU, where a chunk has
no fixed cost); when all tokens fit in one chunk there is no scan at all.
Consecutive chunks form groups whose logit gradients (in the matmul dtype)
enter dL/dW through one matmul, so the running sum of dL/dW is read and
written once per group instead of once per chunk -- at large vocabularies
that traffic would otherwise cost about as much as the divergence itself.
Chunks that do not divide the token count are handled by padding the last one
with masked rows. `fused_chunk_plan` gives the sizes.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from divlab import _checks
from divlab.divergences import categorical
from divlab.losses.reductions import reduce_loss

__all__ = ["FUSED_DIVERGENCES", "fused_chunk_plan", "fused_linear_divergence"]

ArrayLike = jax.typing.ArrayLike

FUSED_DIVERGENCES = ("kl", "reverse_kl", "js", "tv")

# Budget for one float32 [chunk, V] array (512 rows at V = 128256); a chunk
# holds a few arrays of that shape at once (both models' logits, the
# gradient), in the inputs' dtype or float32.
_CHUNK_BUDGET_BYTES = 256 * 2**20
# The CPU's: a quarter. On an accelerator every chunk costs fixed work
# (kernel launches, a scan step, a row count that must fill the chip), so
# chunks are as large as memory allows; the CPU has none of that, and there
# smaller chunks cost no time (`benchmarks/fused_linear.py` at B*T = 4096, H =
# 256, V = 32000: 512-row chunks 0.87x the materialised time, 2048-row chunks
# 0.90x) while the memory falls with them (0.36 against 1.09 GiB).
_CPU_CHUNK_BUDGET_BYTES = 64 * 2**20
# The platform chunk plans are made for; None: `jax.default_backend()`.
# Compiling for another platform than this process's default (the benchmarks'
# GPU described in text, `benchmarks/gpu_target.py`) sets it.
PLAN_PLATFORM: Optional[str] = None
# Budget for the logit gradients of a group of chunks, kept in the matmul
# dtype until one matmul adds the group's share of dL/dW.
_GROUP_BUDGET_BYTES = 512 * 2**20
# Chunk rows are a multiple of this, so bf16 tiles stay whole.
_ROW_ALIGNMENT = 16


def _ceil_div(a: int, b: int) -> int:
  return -(-a // b)


def _aligned(rows: int) -> int:
  return _ceil_div(rows, _ROW_ALIGNMENT) * _ROW_ALIGNMENT


def fused_chunk_plan(num_tokens: int, hidden_size: int, vocab_size: int, *,
                     grad_itemsize: int = 2,
                     chunk_size: Optional[int] = None,
                     platform: Optional[str] = None) -> tuple[int, int, int]:
  """How `fused_linear_divergence` cuts the tokens: (chunk rows, chunks per group, groups).

  A chunk is the unit of the divergence: a float32 ``[rows, V]`` array of it
  stays under 256 MiB on an accelerator (512 rows at ``V = 128256``) and under
  64 MiB on the CPU (512 rows at ``V = 32000``), where smaller chunks cost no
  time, unless `chunk_size` says otherwise. A group is the unit of the weight gradient: its chunks' logit
  gradients (``grad_itemsize`` bytes each, the matmul dtype's) are kept and
  enter ``dL/dW`` through one matmul, so the running sum of ``dL/dW`` is read
  and written once per group rather than once per chunk (with one group
  there is no running sum at all). Beyond its first chunk, a group grows
  only while its gradients stay under 512 MiB and under the size of a
  float32 ``[H, V]`` array. All tokens form one
  chunk when they fit. Default sizes are balanced (equal groups, equal
  chunks, rows rounded up to a multiple of 16), so padding stays small.

  Args:
    num_tokens: the number of rows ``B*T`` (a Python int >= 0).
    hidden_size: the student's hidden size ``H`` (an int >= 1).
    vocab_size: the number of classes ``V`` (an int >= 1).
    grad_itemsize: bytes per logit gradient (2 for bf16 inputs, 4 for f32).
    chunk_size: rows per chunk (an int >= 1), or None for the budget's choice.
    platform: the platform the plan is for (``"cpu"``, ``"gpu"``, ``"tpu"``,
      ...); None: `PLAN_PLATFORM` if set, else ``jax.default_backend()``.

  Returns:
    ``(rows, chunks_per_group, num_groups)``; ``rows * chunks_per_group *
    num_groups >= num_tokens``, the excess being masked padding rows.

  Example:
    >>> fused_chunk_plan(8192, 4096, 128256, platform="gpu")  # bf16: 4 x 4 chunks
    (512, 4, 4)
    >>> fused_chunk_plan(500, 4096, 128256, platform="gpu")  # fits: one chunk
    (500, 1, 1)
    >>> fused_chunk_plan(4096, 256, 32000, grad_itemsize=4, platform="cpu")
    (512, 1, 8)
  """
  _checks.check_count(num_tokens, "num_tokens", minimum=0)
  for value, name in ((hidden_size, "hidden_size"), (vocab_size, "vocab_size"),
                      (grad_itemsize, "grad_itemsize")):
    _checks.check_count(value, name)
  _check_chunk_size(chunk_size)
  if platform is not None and not isinstance(platform, str):
    raise ValueError(f"`platform` must be None or a platform name such as 'gpu', "
                     f"got {platform!r}.")
  platform = platform or PLAN_PLATFORM or jax.default_backend()
  budget = _CPU_CHUNK_BUDGET_BYTES if platform == "cpu" else _CHUNK_BUDGET_BYTES
  num_tokens = max(num_tokens, 1)
  max_rows = max(budget // (4 * vocab_size), _ROW_ALIGNMENT)
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
# One chunk: projections, the categorical divergence, and its gradient pushed
# through the student's projection.

# The per-chunk divergences are divlab's categorical functions themselves, so a
# chunk computes exactly what the materialised composition computes on its
# rows (with the same special-value rules and, on a GPU, the same kernels).
_CATEGORICAL = {
    "kl": lambda t, s, beta: categorical.kl(t, s),
    "reverse_kl": lambda t, s, beta: categorical.reverse_kl(t, s),
    "js": lambda t, s, beta: categorical.js(t, s, beta=beta),
    "tv": lambda t, s, beta: categorical.total_variation(t, s),
}


def _logits(hidden: jax.Array, weight: jax.Array, bias: Optional[jax.Array]) -> jax.Array:
  """hidden @ weight + bias in the inputs' dtype, as the materialised ``h @ W + b`` is.

  The matmul accumulates in float32 and rounds its output to the inputs'
  dtype (bf16 logits for bf16 inputs): a chunk then carries half the bytes of
  float32 logits, and the categorical functions read them in their own dtype
  and do every sum in float32.
  """
  logits = jnp.dot(hidden, weight)
  return logits if bias is None else logits + bias.astype(logits.dtype)


def _over(logits: jax.Array, temperature: jax.Array) -> jax.Array:
  """logits / T in the logits' dtype (like ``logits / T`` with a Python float T)."""
  return logits / temperature.astype(logits.dtype)


_CONTRACT_ROWS = (((0,), (0,)), ((), ()))  # a^T b for a [C, H], b [C, V]
_CONTRACT_VOCAB = (((1,), (1,)), ((), ()))  # a b^T for a [C, V], b [H, V]


def _add_weight_grad(total: Optional[jax.Array], hidden: jax.Array,
                     grad_logits: jax.Array, dtype) -> jax.Array:
  """total + hidden^T grad_logits (just the product, in `dtype`, when `total` is None).

  The running sum keeps its own dtype (the weight's, or float32: see
  `accumulation_dtype`), and each group's product is formed in that dtype
  (float32 accumulation inside the matmul): ``total + dot`` of one dtype is
  what XLA's GPU compiler fuses into the matmul itself, which then reads the
  running sum and writes it once per group, with no ``[H, V]`` temporary (a
  float32 product added to a bf16 sum is not fused: the product would be
  written out in float32 and read back, 3x the traffic of the sum itself).
  For a bf16 sum that is two bf16 roundings per group (the product's and the
  sum's). XLA:CPU does not fuse the add, so there the sum is updated a block
  of hidden units (rows of dL/dW) at a time, in a loop, and the product never
  needs a second ``[H, V]`` buffer; a loop rather than unrolled blocks, so
  that the compiler cannot schedule all the block products before the first
  update.
  """
  if total is None:
    return jax.lax.dot_general(hidden, grad_logits, _CONTRACT_ROWS,
                               preferred_element_type=dtype)

  def fused(total, hidden, grad_logits):
    return total + jax.lax.dot_general(hidden, grad_logits, _CONTRACT_ROWS,
                                       preferred_element_type=total.dtype)

  def blocked(total, hidden, grad_logits):
    hidden_size, vocab = total.shape
    needed = _ceil_div(hidden_size * vocab * total.dtype.itemsize, _CHUNK_BUDGET_BYTES)
    # Equal blocks (a divisor of H), so that no slice is clamped at the edge;
    # an H without a divisor near `needed` (a large prime) is summed at once.
    blocks = next(b for b in range(max(needed, 1), hidden_size + 1) if hidden_size % b == 0)
    if blocks == 1 or blocks > 4 * needed:
      return fused(total, hidden, grad_logits)
    height = hidden_size // blocks

    def add_block(i, total):
      start = i * height
      hidden_block = jax.lax.dynamic_slice_in_dim(hidden, start, height, axis=1)
      block = jax.lax.dynamic_slice_in_dim(total, start, height, axis=0)
      block = fused(block, hidden_block, grad_logits)
      return jax.lax.dynamic_update_slice_in_dim(total, block, start, axis=0)

    return jax.lax.fori_loop(0, blocks, add_block, total)

  return jax.lax.platform_dependent(total, hidden, grad_logits, cpu=blocked,
                                    default=fused)


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
  teacher_logits = _over(_logits(h_t, w_t, b_t), temperature)

  def rows_divergence(student_logits):
    return _CATEGORICAL[divergence](teacher_logits, _over(student_logits, temperature),
                                    beta)

  student_logits = _logits(h_s, w_s, b_s)
  if not with_grads:
    return jnp.where(valid, rows_divergence(student_logits), 0.0)
  # One vjp of the categorical function (its own derivative rule) gives
  # dD/dz for z = h W + b, the temperature's 1/T included.
  values, pullback = jax.vjp(rows_divergence, student_logits)
  (grad_logits,) = pullback(jnp.where(valid, row_weights, 0.0).astype(values.dtype))
  values = jnp.where(valid, values, 0.0)
  # A padding row has weight 0, but 0 times an infinite divergence's
  # gradient would be NaN: select, do not multiply.
  g = jnp.where(valid[:, None], grad_logits, 0).astype(jnp.result_type(h_s, w_s))
  # The backward matmuls run in the forward's dtype, like autodiff's would.
  dh = jax.lax.dot_general(g, w_s, _CONTRACT_VOCAB,
                           preferred_element_type=dtype).astype(h_s.dtype)
  db = None if b_s is None else jnp.sum(g, axis=0, dtype=dtype)
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

  `plan` is ``(rows, chunks_per_group, num_groups)`` from `fused_chunk_plan`
  and the dtype of the dL/dW running sum. Values alone need no groups: one
  scan over the chunks. With gradients, an inner scan over a group's chunks
  stacks their logit gradients, one matmul turns them into the group's share
  of dL/dW, and an outer scan over groups carries the sums of dL/dW (in the
  accumulation dtype) and dL/db (in float32).
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
  rows, per_group, num_groups, accumulation_dtype = plan
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
  init = (jnp.zeros(w_s.shape, accumulation_dtype),
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
  if chunk_size is not None:
    _checks.check_count(chunk_size, "chunk_size")


def _check_accumulation_dtype(accumulation_dtype, weight_dtype) -> np.dtype:
  if accumulation_dtype is None:
    return np.dtype(weight_dtype)
  try:
    dtype = np.dtype(accumulation_dtype)
  except TypeError:
    dtype = None
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"`accumulation_dtype` must be None or a floating dtype such as "
                     f"jnp.float32, got {accumulation_dtype!r}.")
  return dtype


def _check_token_mask(where, leading_shape):
  if where is None:
    return jnp.ones(leading_shape, bool)
  where = jnp.asarray(where)
  if not (where.dtype == jnp.bool_ or jnp.issubdtype(where.dtype, jnp.integer)):
    raise ValueError(f"`where` must be a boolean token mask, got dtype {where.dtype}.")
  return _checks.broadcast_mask(where, leading_shape, "where")


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
                            teacher_bias: Optional[ArrayLike] = None,
                            accumulation_dtype=None) -> jax.Array:
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

  Dtypes: the logits are formed in the inputs' dtype (a bf16 matmul with
  float32 accumulation gives bf16 logits, as ``h @ W`` does), and the
  categorical divergence reads them in that dtype and sums in float32
  (float64 for float64 inputs); the returned value is float32 (float64), and
  gradients come back in each input's dtype. With bf16 inputs the result
  therefore equals the materialised bf16 composition, and differs from a
  float32 computation on the same inputs by the rounding of the logits (about
  1e-4 relative in the value).

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
      ``[chunk, V]`` array stays under 256 MiB on an accelerator and 64 MiB
      on the CPU (all tokens in one chunk if they fit). `fused_chunk_plan`
      shows the resulting plan.
    reduction: a `reduce_loss` reduction (``"mean"`` is the token mean over
      `where`). Every reduction but ``"none"`` computes the gradient during
      the forward pass; ``"none"`` recomputes the chunks in the backward pass.
    normalizer: the divisor for ``reduction="normalizer"`` (e.g. the global
      token count of a gradient-accumulation step).
    student_bias: optional ``[V]`` student output bias.
    teacher_bias: optional ``[V]`` teacher output bias (``-inf`` entries
      exclude classes from the teacher).
    accumulation_dtype: dtype of the running sum of dL/dW over groups of
      chunks, and of each group's product (accumulated in float32 inside the
      matmul, then rounded to this dtype and added). None: the student
      weight's dtype, so bf16 weights need no float32 ``[H, V]`` buffer (two
      bf16 roundings per group; `fused_chunk_plan` gives the group count, 4
      at ``B*T = 8192, V = 128256``). ``jnp.float32``: a float32 sum,
      rounded to the weight's dtype once at the end. With a single group
      (few tokens) there is no running sum and no difference.

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
  _checks.check_positive_finite(temperature, "temperature")
  _checks.check_in_range(beta, "beta", 0.0, 1.0)
  _check_chunk_size(chunk_size)
  accumulation_dtype = _check_accumulation_dtype(accumulation_dtype, w_s.dtype)
  leading_shape = h_s.shape[:-1]
  mask = _check_token_mask(where, leading_shape)

  dtype = jnp.promote_types(jnp.result_type(h_s, w_s, h_t, w_t), jnp.float32)
  params = tuple(jax.lax.stop_gradient(jnp.asarray(x, dtype))
                 for x in (beta, temperature))
  num_tokens = int(np.prod(leading_shape))
  plan = fused_chunk_plan(num_tokens, w_s.shape[0], w_s.shape[1], chunk_size=chunk_size,
                          grad_itemsize=jnp.result_type(h_s, w_s).itemsize)
  plan += (accumulation_dtype,)
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
