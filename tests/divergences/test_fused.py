"""Fused-linear divergences against the materialised composition and float64 references.

The materialised composition is what the fused code must equal: logits
``h W + b``, then divlab's categorical divergence of ``logits / T``, then
`reduce_loss`. On top of that, float64 values are checked against
scipy/numpy sums and float64 gradients against central finite differences,
so the reference does not rest on divlab's own categorical code alone.

Compilation dominates the run time: shapes are tiny and shared.
"""
import doctest
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from jax import test_util as jtu

from divlab import divergences as dv
from divlab.divergences import fused
from divlab.losses import distillation
from divlab.losses.reductions import reduce_loss

BATCH, TIME, HIDDEN, TEACHER_HIDDEN, VOCAB = 3, 7, 8, 6, 50
TOKENS = BATCH * TIME  # 21: chunks of 4 leave a padded last chunk
TEMPERATURE, BETA = 2.0, 0.3
DIVERGENCES = fused.FUSED_DIVERGENCES

CATEGORICAL = {
    "kl": lambda t, s: dv.kl(t, s),
    "reverse_kl": lambda t, s: dv.reverse_kl(t, s),
    "js": lambda t, s: dv.js(t, s, beta=BETA),
    "tv": lambda t, s: dv.total_variation(t, s),
}
KD_LOSSES = {
    "kl": lambda s, t: distillation.kd(s, t, temperature=TEMPERATURE),
    "reverse_kl": lambda s, t: distillation.reverse_kl_kd(s, t, temperature=TEMPERATURE),
    "js": lambda s, t: distillation.js_kd(s, t, temperature=TEMPERATURE, beta=BETA),
    "tv": lambda s, t: distillation.tv_kd(s, t, temperature=TEMPERATURE),
}


def make_inputs(seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  arrays = dict(
      h_s=rng.normal(size=(BATCH, TIME, HIDDEN)),
      w_s=rng.normal(size=(HIDDEN, VOCAB)) / np.sqrt(HIDDEN),
      b_s=0.5 * rng.normal(size=(VOCAB,)),
      h_t=rng.normal(size=(BATCH, TIME, TEACHER_HIDDEN)),
      w_t=1.5 * rng.normal(size=(TEACHER_HIDDEN, VOCAB)) / np.sqrt(TEACHER_HIDDEN),
      b_t=0.5 * rng.normal(size=(VOCAB,)),
  )
  arrays = {k: v.astype(dtype) for k, v in arrays.items()}
  mask = rng.random((BATCH, TIME)) > 0.3
  mask[1] = False  # one sequence entirely padding
  mask[0, 0] = True
  return arrays, mask


INPUTS, MASK = make_inputs()


@pytest.fixture(autouse=True)
def float32_matmuls():
  # GPUs may run float32 matmuls in TF32 by default; 1e-5 comparisons need
  # float32 products on every backend (on the CPU this changes nothing).
  with jax.default_matmul_precision("highest"):
    yield


def fused_loss(divergence, *, chunk_size=4, reduction="mean", normalizer=None,
               mask=MASK, biases=True, accumulation_dtype=None):
  def loss(h_s, w_s, b_s, h_t, w_t, b_t):
    return dv.fused_linear_divergence(
        h_s, w_s, h_t, w_t, divergence=divergence, temperature=TEMPERATURE,
        beta=BETA, where=mask, chunk_size=chunk_size, reduction=reduction,
        normalizer=normalizer, student_bias=b_s if biases else None,
        teacher_bias=b_t if biases else None, accumulation_dtype=accumulation_dtype)
  return loss


def materialised_loss(divergence, *, reduction="mean", normalizer=None, mask=MASK,
                      biases=True):
  def loss(h_s, w_s, b_s, h_t, w_t, b_t):
    s = h_s @ w_s + (b_s if biases else 0)
    t = jax.lax.stop_gradient(h_t @ w_t + (b_t if biases else 0))
    values = CATEGORICAL[divergence](t / TEMPERATURE, s / TEMPERATURE)
    return reduce_loss(values, reduction, where=mask, normalizer=normalizer)
  return loss


def value_and_grads(loss, inputs):
  args = [inputs[k] for k in ("h_s", "w_s", "b_s", "h_t", "w_t", "b_t")]
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(*args)


def assert_close(actual, expected, rtol):
  """|actual - expected| <= rtol * max|expected|, elementwise."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert actual.shape == expected.shape
  scale = max(np.max(np.abs(expected)), 1e-30)
  np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


# ----------------------------------------------------------------------------
# Equality with the materialised composition (float32).


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_matches_materialised_with_mask_bias_and_padded_chunks(divergence):
  value, grads = value_and_grads(fused_loss(divergence), INPUTS)
  ref_value, ref_grads = value_and_grads(materialised_loss(divergence), INPUTS)
  assert value.dtype == jnp.float32
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  assert float(value) > 0.01
  for grad, ref in zip(grads, ref_grads):
    assert grad.dtype == jnp.float32
    assert_close(grad, ref, 1e-5)
  # The padded sequence gets exactly no gradient.
  assert np.all(np.asarray(grads[0])[1] == 0)


def test_weight_gradient_summed_in_blocks_of_hidden_units(monkeypatch):
  # At vocabulary scale the running dW sum is updated a few rows at a time;
  # a tiny budget forces that path here (4 blocks of 2 hidden units), over
  # 3 groups of 2 chunks of 4 tokens.
  monkeypatch.setattr(fused, "_CHUNK_BUDGET_BYTES", HIDDEN * VOCAB * 4 // 3)
  assert fused.fused_chunk_plan(TOKENS, HIDDEN, VOCAB, grad_itemsize=4,
                                chunk_size=4) == (4, 2, 3)
  value, grads = value_and_grads(fused_loss("reverse_kl"), INPUTS)
  ref_value, ref_grads = value_and_grads(materialised_loss("reverse_kl"), INPUTS)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  for grad, ref in zip(grads, ref_grads):
    assert_close(grad, ref, 1e-5)


@pytest.mark.parametrize("reduction,normalizer", [
    ("sum", None), ("sequence_mean", None), ("normalizer", 40.0), ("none", None)])
def test_every_reduction_matches_materialised(reduction, normalizer):
  # One chunk (chunk_size=None) here; padded chunks are covered above.
  cotangent = np.random.default_rng(1).normal(size=(BATCH, TIME)).astype(np.float32)

  def weighted(loss):
    if reduction != "none":
      return loss
    return lambda *args: jnp.sum(loss(*args) * cotangent)

  kwargs = dict(reduction=reduction, normalizer=normalizer)
  value, grads = value_and_grads(weighted(fused_loss("kl", chunk_size=None, **kwargs)),
                                 INPUTS)
  ref_value, ref_grads = value_and_grads(weighted(materialised_loss("kl", **kwargs)),
                                         INPUTS)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  for grad, ref in zip(grads, ref_grads):
    assert_close(grad, ref, 1e-5)


def test_per_token_values_with_padded_chunks():
  args = [INPUTS[k] for k in ("h_s", "w_s", "b_s", "h_t", "w_t", "b_t")]
  for divergence in ("js", "tv"):
    values = jax.jit(fused_loss(divergence, chunk_size=5, reduction="none"))(*args)
    ref = jax.jit(materialised_loss(divergence, reduction="none"))(*args)
    assert values.shape == (BATCH, TIME)
    assert_close(values, ref, 1e-5)
    assert np.all(np.asarray(values)[~MASK] == 0)


def test_chunk_sizes_give_the_same_loss():
  args = [INPUTS[k] for k in ("h_s", "w_s", "b_s", "h_t", "w_t", "b_t")]
  ref = jax.jit(materialised_loss("kl"))(*args)
  for chunk_size in (1, 5, TOKENS, 100):
    value = jax.jit(fused_loss("kl", chunk_size=chunk_size))(*args)
    np.testing.assert_allclose(value, ref, rtol=1e-5)


def test_gradient_accumulation_with_a_global_normalizer_is_exact():
  # Two micro-batches of sequences, each divided by the global token count,
  # add up to the full batch's token mean, in value and gradient.
  full_value, full_grads = value_and_grads(fused_loss("kl", chunk_size=4), INPUTS)
  count = float(MASK.sum())
  total_value, total_grads = 0.0, None
  for rows in (slice(0, 2), slice(2, 3)):
    part = dict(INPUTS, h_s=INPUTS["h_s"][rows], h_t=INPUTS["h_t"][rows])
    loss = fused_loss("kl", chunk_size=4, reduction="normalizer",
                      normalizer=count, mask=MASK[rows])
    value, grads = value_and_grads(loss, part)
    total_value += float(value)
    grads = [np.asarray(g) for g in grads]
    if total_grads is None:
      total_grads = [np.zeros_like(g) for g in grads]
      total_grads[0] = np.zeros_like(np.asarray(full_grads[0]))
    total_grads[0][rows] = grads[0]
    total_grads[1] += grads[1]
    total_grads[2] += grads[2]
  np.testing.assert_allclose(total_value, full_value, rtol=1e-5)
  for grad, ref in zip(total_grads, full_grads):
    assert_close(grad, ref, 1e-5)


def test_padding_may_hold_nan_and_the_teacher_gets_no_gradient():
  h_s = np.array(INPUTS["h_s"])
  h_t = np.array(INPUTS["h_t"])
  h_s[~MASK] = np.nan
  h_t[~MASK] = np.inf
  inputs = dict(INPUTS, h_s=h_s, h_t=h_t)
  loss = fused_loss("js", chunk_size=4)
  args = [inputs[k] for k in ("h_s", "w_s", "b_s", "h_t", "w_t", "b_t")]
  value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4, 5)))(*args)
  ref_value, _ = value_and_grads(fused_loss("js", chunk_size=4), INPUTS)
  np.testing.assert_allclose(value, ref_value, rtol=1e-6)
  assert all(np.all(np.isfinite(g)) for g in grads)
  assert np.all(np.asarray(grads[0])[~MASK] == 0)
  assert all(np.all(np.asarray(g) == 0) for g in grads[3:])


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("side", ["h_s", "h_t"])
def test_a_nan_in_a_valid_token_makes_that_token_nan(divergence, side):
  # NaN in, NaN out: only the token whose hidden state holds the NaN, in its
  # value and (student side) in its row of dL/dh, while the other tokens keep
  # the values of the clean inputs.
  token = tuple(np.argwhere(MASK)[1])
  inputs = {k: np.array(v) for k, v in INPUTS.items()}
  inputs[side][token + (0,)] = np.nan
  args = [inputs[k] for k in ("h_s", "w_s", "b_s", "h_t", "w_t", "b_t")]
  clean = [INPUTS[k] for k in ("h_s", "w_s", "b_s", "h_t", "w_t", "b_t")]
  per_token = jax.jit(fused_loss(divergence, reduction="none"))
  values, clean_values = np.asarray(per_token(*args)), np.asarray(per_token(*clean))
  assert np.isnan(values[token])
  others = np.ones(MASK.shape, bool)
  others[token] = False
  np.testing.assert_allclose(values[others], clean_values[others], rtol=1e-6)
  value, grads = value_and_grads(fused_loss(divergence), inputs)
  assert np.isnan(value)
  if side == "h_s":
    dh = np.asarray(grads[0])
    assert np.all(np.isnan(dh[token]))
    assert np.all(np.isfinite(dh[others]))


def test_masked_vocabulary_through_minus_inf_biases():
  # A -inf bias entry in both models removes that class, like `class_where`.
  b_s = np.array(INPUTS["b_s"])
  b_t = np.array(INPUTS["b_t"])
  b_s[:7] = -np.inf
  b_t[:7] = -np.inf
  inputs = dict(INPUTS, b_s=b_s, b_t=b_t)
  for divergence in ("kl", "js"):
    value, grads = value_and_grads(fused_loss(divergence), inputs)
    ref_value, ref_grads = value_and_grads(materialised_loss(divergence), inputs)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for grad, ref in zip(grads[:2], ref_grads[:2]):
      assert_close(grad, ref, 1e-5)
    assert np.all(np.asarray(grads[2])[:7] == 0)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_bfloat16_inputs_equal_the_materialised_bfloat16_composition(divergence):
  bf16 = {k: jnp.asarray(v, jnp.bfloat16) for k, v in INPUTS.items()}
  value, grads = value_and_grads(fused_loss(divergence), bf16)
  # The materialised composition on the same bf16 arrays: bf16 logits, then
  # the categorical divergence (float32 sums), as the fused chunks compute.
  ref_value, ref_grads = value_and_grads(materialised_loss(divergence), bf16)
  assert value.dtype == jnp.float32
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  # Chunks of 4 tokens in 2 groups: by default each group's dL/dW product and
  # the running sum are rounded to bf16 (two roundings a group); with a
  # float32 sum, once in all.
  assert fused.fused_chunk_plan(TOKENS, HIDDEN, VOCAB, chunk_size=4)[2] == 2
  _, f32_sum_grads = value_and_grads(
      fused_loss(divergence, accumulation_dtype=jnp.float32), bf16)
  for grad, ref in zip(grads[:2], ref_grads[:2]):
    assert grad.dtype == jnp.bfloat16
    # Three bf16 roundings (unit roundoff 2^-8, relative to the largest
    # entry): each group's product, and the sum of the two (adding the first
    # product to the zero sum is exact).
    assert_close(grad, ref, 3 * 2.0**-8)
  for grad, ref in zip(f32_sum_grads[:2], ref_grads[:2]):
    assert grad.dtype == jnp.bfloat16
    assert_close(grad, ref, 2.0**-8)
  # dL/db: the fused function sums the rows in float32, autodiff of the
  # materialised form in bf16, so the two differ by bf16 summation error.
  assert grads[2].dtype == jnp.bfloat16
  assert_close(grads[2], ref_grads[2], 2e-2)
  # And both track float32 arithmetic on the same (bf16-rounded) numbers to
  # the rounding of the logits.
  rounded = {k: np.asarray(v, np.float32) for k, v in bf16.items()}
  f32_value, f32_grads = value_and_grads(materialised_loss(divergence), rounded)
  np.testing.assert_allclose(value, f32_value, rtol=2e-3)
  for grad, ref in zip(grads, f32_grads):
    assert_close(grad, ref, 2e-2)


@pytest.mark.parametrize("divergence", ["kl", "js"])
def test_chunks_through_the_gpu_kernels_match_materialised(divergence, monkeypatch):
  # On CUDA each chunk's KL / JS takes its row statistics from the Pallas
  # kernels of the categorical core; here the Pallas interpreter runs them
  # inside the scan (padded chunks, biases, a mask), against the XLA path.
  from divlab.divergences import categorical  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(categorical, "_FORWARD", "pallas_interpret")
  value, grads = value_and_grads(fused_loss(divergence), INPUTS)
  monkeypatch.setattr(categorical, "_FORWARD", "two_pass")
  ref_value, ref_grads = value_and_grads(materialised_loss(divergence), INPUTS)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  for grad, ref in zip(grads, ref_grads):
    assert_close(grad, ref, 1e-5)


# ----------------------------------------------------------------------------
# Independent float64 references.


def _log_softmax64(x):
  return scipy.special.log_softmax(np.asarray(x, np.float64), axis=-1)


def reference_values64(divergence, inputs):
  """Per-token D(P_t, P_s) at temperature T, written out in numpy float64."""
  f64 = {k: np.asarray(v, np.float64) for k, v in inputs.items()}
  log_q = _log_softmax64((f64["h_s"] @ f64["w_s"] + f64["b_s"]) / TEMPERATURE)
  log_p = _log_softmax64((f64["h_t"] @ f64["w_t"] + f64["b_t"]) / TEMPERATURE)
  p, q = np.exp(log_p), np.exp(log_q)
  if divergence == "kl":
    return scipy.special.rel_entr(p, q).sum(-1)
  if divergence == "reverse_kl":
    return scipy.special.rel_entr(q, p).sum(-1)
  if divergence == "js":
    m = BETA * p + (1 - BETA) * q
    return (BETA * scipy.special.rel_entr(p, m).sum(-1)
            + (1 - BETA) * scipy.special.rel_entr(q, m).sum(-1))
  return 0.5 * np.abs(p - q).sum(-1)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_float64_values_and_finite_difference_gradients(divergence):
  with jax.enable_x64(True):
    inputs, mask = make_inputs(seed=2, dtype=np.float64)
    loss = fused_loss(divergence, chunk_size=4, mask=mask)
    args = [jnp.asarray(inputs[k]) for k in ("h_s", "w_s", "b_s", "h_t", "w_t", "b_t")]
    value = jax.jit(loss)(*args)
    assert value.dtype == jnp.float64
    expected = reference_values64(divergence, inputs)[mask].mean()
    np.testing.assert_allclose(value, expected, rtol=1e-12)

    @jax.jit
    def student_only(h_s, w_s, b_s):
      return loss(h_s, w_s, b_s, *args[3:])
    jtu.check_grads(student_only, args[:3], order=1, modes=["rev"],
                    atol=1e-6, rtol=1e-6)


def test_wrapper_equals_the_kd_losses_on_materialised_logits():
  args = [INPUTS[k] for k in ("h_s", "w_s", "b_s", "h_t", "w_t", "b_t")]

  @jax.jit
  def both(h_s, w_s, b_s, h_t, w_t, b_t):
    s, t = h_s @ w_s + b_s, h_t @ w_t + b_t
    pairs = {}
    for divergence in DIVERGENCES:
      value = distillation.fused_linear_distill(
          h_s, w_s, h_t, w_t, divergence=divergence, temperature=TEMPERATURE,
          beta=BETA, where=MASK, chunk_size=4, student_bias=b_s, teacher_bias=b_t)
      expected = reduce_loss(KD_LOSSES[divergence](s, t), "mean", where=MASK)
      pairs[divergence] = (value, expected)
    return pairs

  for divergence, (value, expected) in both(*args).items():
    np.testing.assert_allclose(value, expected, rtol=1e-5, err_msg=divergence)


# ----------------------------------------------------------------------------
# Memory: the point of fusing (compile only, nothing runs).


def _compiled_bytes(fn, *shapes):
  args = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes]
  compiled = jax.jit(jax.value_and_grad(fn, argnums=(0, 1))).lower(*args).compile()
  stats = compiled.memory_analysis()
  if stats is None:
    pytest.skip("this backend reports no compiled memory analysis")
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes
          + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


@pytest.mark.parametrize("chunk_size", [None, 512], ids=["default plan", "512 rows"])
def test_compiled_memory_is_at_least_4x_below_materialised(chunk_size):
  if chunk_size is None and jax.default_backend() != "cpu":
    pytest.skip("the default plan of an accelerator has larger chunks")
  tokens, hidden, vocab = 4096, 256, 32000
  shapes = [(tokens, hidden), (hidden, vocab), (tokens, hidden), (hidden, vocab)]

  def fused_fn(h_s, w_s, h_t, w_t):
    return dv.fused_linear_divergence(h_s, w_s, h_t, w_t, chunk_size=chunk_size)

  def materialised_fn(h_s, w_s, h_t, w_t):
    return jnp.mean(dv.kl(jax.lax.stop_gradient(h_t @ w_t), h_s @ w_s))

  fused_bytes = _compiled_bytes(fused_fn, *shapes)
  materialised_bytes = _compiled_bytes(materialised_fn, *shapes)
  # One float32 [4096, 32000] array alone is 0.5 GiB.
  assert materialised_bytes > 4 * 4096 * 32000
  assert materialised_bytes >= 4 * fused_bytes, (fused_bytes, materialised_bytes)


# ----------------------------------------------------------------------------
# Chunk sizes and bad inputs.


def test_chunk_plan_follows_the_memory_budgets():
  plan = functools.partial(fused.fused_chunk_plan, platform="gpu")
  # bf16 at LLM scale: chunks of 512 rows (a float32 [512, V] array is
  # 245 MiB), gradients of 4 chunks (2048 rows, 501 MiB in bf16) per dW matmul.
  assert plan(8192, 4096, 128256) == (512, 4, 4)
  assert plan(8192, 4096, 128256, grad_itemsize=4) == (512, 2, 8)
  assert plan(2048, 4096, 128256) == (512, 4, 1)  # one group: no running sum
  assert plan(1024, 4096, 128256) == (512, 2, 1)
  assert plan(512, 4096, 128256) == (512, 1, 1)  # fits: one chunk
  assert plan(500, 4096, 128256) == (500, 1, 1)
  # Balanced: 5000 tokens in 3 x 4 chunks of 432 rows (184 padding rows).
  assert plan(5000, 4096, 128256) == (432, 4, 3)
  # A group's gradients never outweigh the float32 [H, V] sum: 4 H / 4 rows.
  assert plan(4096, 256, 32000, grad_itemsize=4, chunk_size=512) == (512, 1, 8)
  assert plan(TOKENS, HIDDEN, VOCAB, grad_itemsize=4, chunk_size=4) == (4, 2, 3)
  assert plan(TOKENS, HIDDEN, VOCAB, chunk_size=100) == (TOKENS, 1, 1)
  for tokens in (1, 17, 1000, 4097, 70000):
    rows, per_group, groups = plan(tokens, 4096, 128256)
    assert rows * per_group * groups >= tokens
    assert rows * per_group * groups - tokens < 16 * per_group * groups + rows
    assert rows <= 512 + 16


def test_chunk_plan_on_the_cpu_uses_a_quarter_of_the_budget():
  plan = functools.partial(fused.fused_chunk_plan, platform="cpu")
  # A float32 [512, 32000] array is 62.5 MiB; 4096 tokens in 8 chunks.
  assert plan(4096, 256, 32000, grad_itemsize=4) == (512, 1, 8)
  assert plan(512, 256, 32000, grad_itemsize=4) == (512, 1, 1)
  # 128 rows at V = 128256 (62.6 MiB), 16 of them per 2048-row group.
  assert plan(8192, 4096, 128256) == (128, 16, 4)
  # The accelerators' plan for the same problem (4 times the rows).
  assert fused.fused_chunk_plan(4096, 256, 32000, grad_itemsize=4,
                                platform="gpu") == (2048, 1, 2)
  # Without `platform`: the override if set, else this process's backend.
  assert fused.fused_chunk_plan(4096, 256, 32000, grad_itemsize=4) == (
      plan(4096, 256, 32000, grad_itemsize=4) if jax.default_backend() == "cpu"
      else (2048, 1, 2))
  with pytest.raises(ValueError, match="`platform`"):
    fused.fused_chunk_plan(8, 4, 4, platform=1)


def test_bad_inputs_raise_value_errors_naming_the_argument():
  h_s, w_s, b_s = INPUTS["h_s"], INPUTS["w_s"], INPUTS["b_s"]
  h_t, w_t = INPUTS["h_t"], INPUTS["w_t"]

  def call(**overrides):
    kwargs = dict(student_hidden=h_s, student_weight=w_s, teacher_hidden=h_t,
                  teacher_weight=w_t)
    kwargs.update(overrides)
    return distillation.fused_linear_distill(**kwargs)

  cases = [
      (dict(student_weight=w_s[:-1]), "student_weight"),
      (dict(student_weight=w_s[None]), "student_weight"),
      (dict(teacher_weight=w_t[:, :-1]), "teacher_weight"),
      (dict(teacher_hidden=h_t[:, :-1]), "teacher_hidden"),
      (dict(student_hidden=np.ones((3, 7, 8), np.int32)), "student_hidden"),
      (dict(teacher_weight=np.ones(w_t.shape, bool)), "teacher_weight"),
      (dict(student_hidden=np.float32(1.0)), "student_hidden"),
      (dict(student_bias=b_s[:-1]), "student_bias"),
      (dict(teacher_bias=np.ones(VOCAB, np.int32)), "teacher_bias"),
      (dict(where=np.ones((3, 8), bool)), "where"),
      (dict(where=np.ones((3, 7), np.float32)), "where"),
      (dict(divergence="hellinger"), "divergence"),
      (dict(chunk_size=0), "chunk_size"),
      (dict(chunk_size=2.5), "chunk_size"),
      (dict(chunk_size=True), "chunk_size"),
      (dict(temperature=0.0), "temperature"),
      (dict(temperature=float("inf")), "temperature"),
      (dict(temperature=np.ones(2)), "temperature"),
      (dict(beta=1.5), "beta"),
      (dict(reduction="median"), "reduction"),
      (dict(reduction="normalizer"), "normalizer"),
      (dict(accumulation_dtype=jnp.int32), "accumulation_dtype"),
      (dict(accumulation_dtype="float33"), "accumulation_dtype"),
  ]
  for overrides, name in cases:
    with pytest.raises(ValueError, match=f"`{name}`"):
      call(**overrides)


def test_docstring_examples_run():
  result = doctest.testmod(fused, extraglobs={"jax": jax, "jnp": jnp, "np": np},
                           optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert result.failed == 0
  assert result.attempted > 0
  for name in fused.__all__:
    fn = getattr(fused, name)
    if callable(fn):
      doc = fn.__doc__ or ""
      assert "Args:" in doc and "Returns:" in doc and "Example:" in doc, name
