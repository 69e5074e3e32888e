"""reduce_loss against numpy: every reduction, with and without a mask."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divlab.losses import reduce_loss

_RNG = np.random.default_rng(4)
VALUES = _RNG.normal(size=(4, 5))
# Sequences of different lengths, one fully padded.
MASK = np.array([[1, 1, 1, 0, 0],
                 [1, 1, 1, 1, 1],
                 [0, 0, 0, 0, 0],
                 [1, 0, 0, 0, 0]], bool)


def _np_sequence_mean(values, mask):
  means = [values[r][mask[r]].mean() for r in range(len(values)) if mask[r].any()]
  return float(np.mean(means)) if means else 0.0


@pytest.fixture(scope="module")
def reduce_jit():
  return jax.jit(reduce_loss, static_argnames="reduction")


def test_sequence_mean_is_the_mean_of_per_sequence_means(reduce_jit):
  got = reduce_jit(jnp.asarray(VALUES, jnp.float32), "sequence_mean", where=MASK)
  expected = _np_sequence_mean(VALUES, MASK)
  # Differs from the token mean whenever lengths differ.
  assert abs(expected - VALUES[MASK].mean()) > 1e-2
  np.testing.assert_allclose(float(got), expected, rtol=1e-6)


def test_sequence_mean_without_mask_and_over_leading_axes(reduce_jit):
  got = reduce_jit(jnp.asarray(VALUES, jnp.float32), "sequence_mean")
  np.testing.assert_allclose(float(got), VALUES.mean(-1).mean(), rtol=1e-6)
  stacked = np.stack([VALUES, 2 * VALUES + 1])
  stacked_mask = np.stack([MASK, MASK[::-1]])
  got = reduce_jit(jnp.asarray(stacked, jnp.float32), "sequence_mean",
                   where=stacked_mask)
  expected = _np_sequence_mean(stacked.reshape(-1, 5), stacked_mask.reshape(-1, 5))
  np.testing.assert_allclose(float(got), expected, rtol=1e-6)


def test_sequence_mean_gradient_matches_numpy(reduce_jit):
  grad = jax.grad(lambda v: reduce_jit(v, "sequence_mean", where=MASK))(
      jnp.asarray(VALUES, jnp.float32))
  lengths = MASK.sum(-1, keepdims=True)
  num_sequences = (lengths > 0).sum()
  expected = np.where(MASK, 1.0 / np.maximum(lengths, 1) / num_sequences, 0.0)
  np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-6)


def test_fully_masked_sequence_mean_is_zero(reduce_jit):
  got = reduce_jit(jnp.asarray(VALUES, jnp.float32), "sequence_mean",
                   where=np.zeros_like(MASK))
  assert float(got) == 0.0


def test_normalizer_divides_the_masked_sum(reduce_jit):
  got = reduce_jit(jnp.asarray(VALUES, jnp.float32), "normalizer", where=MASK,
                   normalizer=37.0)
  np.testing.assert_allclose(float(got), VALUES[MASK].sum() / 37.0, rtol=1e-6)
  grad = jax.grad(lambda v: reduce_jit(v, "normalizer", where=MASK, normalizer=37.0))(
      jnp.asarray(VALUES, jnp.float32))
  np.testing.assert_allclose(np.asarray(grad), MASK / 37.0, rtol=1e-6)


def test_normalizer_micro_batches_add_up_to_the_full_token_mean(reduce_jit):
  """Gradient accumulation: each half divided by the global token count."""
  total_tokens = MASK.sum()
  halves = [reduce_jit(jnp.asarray(VALUES[s], jnp.float32), "normalizer",
                       where=MASK[s], normalizer=total_tokens)
            for s in (slice(0, 2), slice(2, 4))]
  np.testing.assert_allclose(float(sum(halves)), VALUES[MASK].mean(), rtol=1e-6)


@pytest.mark.parametrize("reduction,expected", [
    ("sum", lambda v, m: v[m].sum()),
    ("mean", lambda v, m: v[m].mean()),
    ("none", lambda v, m: np.where(m, v, 0.0)),
])
def test_other_reductions(reduce_jit, reduction, expected):
  got = reduce_jit(jnp.asarray(VALUES, jnp.float32), reduction, where=MASK)
  np.testing.assert_allclose(np.asarray(got), expected(VALUES, MASK), rtol=1e-6,
                             atol=1e-7)


def test_normalizer_given_with_another_reduction_is_refused():
  with pytest.raises(ValueError, match="normalizer"):
    reduce_loss(jnp.ones(3), "mean", normalizer=2.0)
  with pytest.raises(ValueError, match="normalizer"):
    reduce_loss(jnp.ones(3), "normalizer")
  with pytest.raises(ValueError, match="reduction"):
    reduce_loss(jnp.ones(3), "token_mean")
