"""Rollout helpers: grouped sampling and completion scoring of a TransformerLM."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divlab import models


@pytest.fixture(scope="module")
def lm():
  model = models.TransformerLM(vocab_size=7, num_layers=1, d_model=16, num_heads=2,
                               mlp_dim=32, max_len=12)
  params = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  return model, params


def test_completion_log_probs_match_a_token_by_token_softmax(lm):
  model, params = lm
  rng = np.random.default_rng(0)
  prompts = rng.integers(0, 7, (3, 4)).astype(np.int32)
  completions = rng.integers(0, 7, (3, 3)).astype(np.int32)
  mask = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0]], bool)
  got = models.completion_log_probs(model, params, prompts, completions, mask)
  # Reference: the model on each growing prefix, float64 log-softmax in numpy.
  want = np.zeros((3, 3))
  for t in range(3):
    prefix = np.concatenate([prompts, completions[:, :t]], 1)
    logits = np.asarray(model.apply({"params": params}, prefix)[:, -1], np.float64)
    logits -= logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want[:, t] = np.where(mask[:, t], logp[np.arange(3), completions[:, t]], 0)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_sample_groups_repeats_prompts_and_scores_its_own_samples(lm):
  model, params = lm
  prompts = jnp.array([[1, 2, 3, 4], [4, 3, 2, 1]], jnp.int32)
  repeated, out = models.sample_groups(model, params, prompts, jax.random.key(1),
                                       group_size=3, max_new_tokens=4, stop_token=6)
  np.testing.assert_array_equal(repeated, np.repeat(np.asarray(prompts), 3, 0))
  assert out.tokens.shape == (6, 4)
  rescored = models.completion_log_probs(model, params, repeated, out.tokens, out.mask)
  np.testing.assert_allclose(rescored, out.log_probs, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="`group_size`"):
    models.sample_groups(model, params, prompts, jax.random.key(1), group_size=0,
                         max_new_tokens=2)
