"""TransformerLM: causality, padding, the KV cache, generate, device parity."""
import functools
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divlab import models
from divlab.models import transformer

VOCAB = 11
STOP = 3
PARITY_SCRIPT = pathlib.Path(__file__).with_name("lm_parity_script.py")


@pytest.fixture(autouse=True)
def _float32_matmuls():
  """Cached and uncached paths are different programs; on GPUs whose default
  float32 matmul is TF32 their logits would differ by ~1e-3, not rounding."""
  with jax.default_matmul_precision("float32"):
    yield


def _perturbed_params(model, tokens, seed=0):
  """Initial params moved off their init so every weight matters."""
  params = model.init(jax.random.key(seed), tokens)["params"]
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape)
                                   for p, k in zip(leaves, keys)])


@pytest.fixture(scope="module", params=["rope", "learned"])
def lm(request):
  model = models.TransformerLM(vocab_size=VOCAB, num_layers=2, d_model=16, num_heads=2,
                               mlp_dim=32, max_len=16,
                               position_encoding=request.param,
                               tie_embeddings=request.param == "rope")
  tokens = jnp.zeros((1, 4), jnp.int32)
  params = _perturbed_params(model, tokens)
  forward = jax.jit(lambda p, x, m: model.apply({"params": p}, x, token_mask=m))
  return model, params, forward


def _tokens(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB, shape), jnp.int32)


def test_rotary_embedding_matches_numpy_and_is_relative():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 3, 1, 4))
  pos = np.array([[0, 1, 5], [2, 3, 9]])
  got = np.asarray(transformer.rotary_embedding(jnp.asarray(x, jnp.float32),
                                                jnp.asarray(pos), base=100.0))
  theta = 100.0 ** (-np.arange(2) / 2)
  ang = pos[..., None, None] * theta
  x1, x2 = x[..., :2], x[..., 2:]
  want = np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang),
                         x2 * np.cos(ang) + x1 * np.sin(ang)], -1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # <R(p) q, R(s) k> depends on p - s only.
  q, k = rng.normal(size=(1, 1, 1, 4)), rng.normal(size=(1, 1, 1, 4))
  def dot(p, s):
    rq = transformer.rotary_embedding(jnp.asarray(q, jnp.float32), jnp.array([[p]]))
    rk = transformer.rotary_embedding(jnp.asarray(k, jnp.float32), jnp.array([[s]]))
    return float(jnp.sum(rq * rk))
  np.testing.assert_allclose(dot(7, 3), dot(4, 0), rtol=1e-5)


def test_shapes_and_tied_or_untied_unembedding():
  tokens = _tokens((2, 5))
  tied = models.build("transformer_lm", VOCAB, d_model=16, num_heads=2, mlp_dim=32)
  untied = models.build("transformer_lm", VOCAB, d_model=16, num_heads=2, mlp_dim=32,
                        tie_embeddings=False)
  p_tied = tied.init(jax.random.key(0), tokens)["params"]
  p_untied = untied.init(jax.random.key(0), tokens)["params"]
  assert "unembed" not in p_tied and p_untied["unembed"]["kernel"].shape == (16, VOCAB)
  assert tied.apply({"params": p_tied}, tokens).shape == (2, 5, VOCAB)
  n_tied = sum(x.size for x in jax.tree.leaves(p_tied))
  n_untied = sum(x.size for x in jax.tree.leaves(p_untied))
  assert n_untied - n_tied == 16 * VOCAB


def test_logits_are_causal(lm):
  model, params, forward = lm
  tokens = _tokens((2, 7))
  changed = tokens.at[:, 4:].set((tokens[:, 4:] + 1) % VOCAB)
  full = jnp.ones((2, 7), bool)
  a, b = forward(params, tokens, full), forward(params, changed, full)
  np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-6)
  assert not np.allclose(a[:, 4:], b[:, 4:], atol=1e-3)


def test_left_padding_changes_nothing(lm):
  model, params, forward = lm
  tokens = _tokens((1, 5))
  pad = 3
  padded = jnp.concatenate([_tokens((1, pad), seed=9), tokens], axis=1)
  mask = jnp.arange(pad + 5)[None] >= pad
  plain = forward(params, tokens, jnp.ones((1, 5), bool))
  np.testing.assert_allclose(forward(params, padded, mask)[:, pad:], plain,
                             rtol=1e-5, atol=1e-5)


def test_decode_in_chunks_equals_the_full_forward(lm):
  model, params, forward = lm
  tokens = _tokens((3, 8), seed=2)
  # Sequence 1 is left-padded by two tokens, sequence 2 has a hole at slot 5.
  mask = np.ones((3, 8), bool)
  mask[1, :2] = False
  mask[2, 5] = False
  mask = jnp.asarray(mask)
  full = forward(params, tokens, mask)
  decode = jax.jit(lambda p, x, c, m: model.apply({"params": p}, x, c, token_mask=m,
                                                  method=model.decode))
  cache = model.init_cache(3, 8)
  pieces = []
  for lo, hi in ((0, 3), (3, 4), (4, 5), (5, 8)):
    logits, cache = decode(params, tokens[:, lo:hi], cache, mask[:, lo:hi])
    pieces.append(logits)
  got = jnp.concatenate(pieces, axis=1)
  np.testing.assert_allclose(np.where(mask[..., None], got, 0),
                             np.where(mask[..., None], full, 0), rtol=1e-5, atol=1e-5)
  assert int(cache.length) == 8
  np.testing.assert_array_equal(cache.next_position, mask.sum(1))


def test_dropout_only_in_training():
  model = models.TransformerLM(vocab_size=VOCAB, d_model=16, num_heads=2, mlp_dim=32,
                               dropout_rate=0.5)
  tokens = _tokens((2, 5))
  params = model.init(jax.random.key(0), tokens)["params"]
  apply = lambda **kw: model.apply({"params": params}, tokens, **kw)
  np.testing.assert_array_equal(apply(), apply())
  a = apply(train=True, rngs={"dropout": jax.random.key(1)})
  b = apply(train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(a, b)


def test_bad_configuration_and_inputs_raise():
  tokens = _tokens((1, 4))
  with pytest.raises(ValueError, match="position_encoding"):
    models.TransformerLM(VOCAB, position_encoding="alibi").init(jax.random.key(0), tokens)
  with pytest.raises(ValueError, match="num_heads"):
    models.TransformerLM(VOCAB, d_model=30, num_heads=4).init(jax.random.key(0), tokens)
  with pytest.raises(ValueError, match="tokens"):
    models.TransformerLM(VOCAB).init(jax.random.key(0), jnp.zeros((1, 4)))
  with pytest.raises(ValueError, match="max_len"):
    models.TransformerLM(VOCAB, position_encoding="learned", max_len=3).init(
        jax.random.key(0), tokens)


# ----------------------------------------------------------------------------
# generate: the cached loop against a loop that re-runs the whole sequence.
# ----------------------------------------------------------------------------


def _generate_without_cache(forward, prompts, prompt_mask, key, num_new, *,
                            temperature=1.0, top_k=0, greedy=False, stop=None, pad=0):
  """Reference: every step re-runs the model on prompt + tokens so far."""
  batch = prompts.shape[0]
  tokens = np.full((batch, num_new), pad, np.int32)
  logps = np.zeros((batch, num_new), np.float64)
  mask = np.zeros((batch, num_new), bool)
  done = np.zeros(batch, bool)
  stop = None if stop is None else np.broadcast_to(np.asarray(stop), (batch,))
  for t in range(num_new):
    seq = jnp.concatenate([prompts, jnp.asarray(tokens[:, :t])], axis=1)
    seq_mask = jnp.concatenate([prompt_mask, jnp.asarray(mask[:, :t])], axis=1)
    logits = forward(seq, seq_mask)[:, -1]
    token = np.asarray(models.sample_from_logits(
        logits, jax.random.fold_in(key, t), temperature=temperature, top_k=top_k,
        greedy=greedy))
    logits64 = np.asarray(logits, np.float64)
    log_softmax = logits64 - np.log(np.exp(logits64 - logits64.max(-1, keepdims=True))
                                    .sum(-1, keepdims=True)) - logits64.max(-1, keepdims=True)
    alive = ~done
    tokens[:, t] = np.where(alive, token, pad)
    logps[:, t] = np.where(alive, log_softmax[np.arange(batch), token], 0.0)
    mask[:, t] = alive
    if stop is not None:
      done = done | (alive & (token == stop))
  return tokens, logps, mask


@pytest.fixture(scope="module")
def sampling_setup():
  model = models.TransformerLM(vocab_size=VOCAB, num_layers=2, d_model=16, num_heads=2,
                               mlp_dim=32)
  prompts = _tokens((4, 5), seed=3)
  prompt_mask = jnp.asarray(np.arange(5)[None] >= np.array([0, 2, 0, 1])[:, None])
  params = _perturbed_params(model, prompts, seed=4)
  # One jitted full forward for every reference loop (7 prefix lengths).
  forward = jax.jit(lambda x, m: model.apply({"params": params}, x, token_mask=m))
  return model, params, prompts, prompt_mask, forward


@pytest.mark.parametrize("options", [
    dict(temperature=1.0, stop=STOP),
    dict(temperature=0.7, top_k=3, stop=np.array([STOP, 1, 2, 5])),
    dict(greedy=True),
])
def test_generate_with_cache_equals_no_cache_loop(sampling_setup, options):
  model, params, prompts, prompt_mask, forward = sampling_setup
  key = jax.random.key(7)
  stop = options.pop("stop", None)
  out = models.generate(model, params, prompts, key, max_new_tokens=7,
                        prompt_mask=prompt_mask, stop_token=stop, pad_token=0, **options)
  tokens, logps, mask = _generate_without_cache(forward, prompts, prompt_mask, key, 7,
                                                stop=stop, **options)
  np.testing.assert_array_equal(out.tokens, tokens)
  np.testing.assert_array_equal(out.mask, mask)
  np.testing.assert_allclose(out.log_probs, logps, atol=1e-5)
  if stop is not None:  # Stop tokens really cut some sequences short.
    assert not mask.all()


def test_generate_is_exact_under_vmap(sampling_setup):
  model, params, prompts, prompt_mask, _ = sampling_setup
  keys = jax.random.split(jax.random.key(11), 3)
  run = lambda p, k: models.generate(model, p, prompts, k, max_new_tokens=6,
                                     prompt_mask=prompt_mask, stop_token=STOP)
  stacked = jax.tree.map(lambda x: jnp.stack([x, 1.1 * x, 0.9 * x]), params)
  batched = jax.jit(jax.vmap(run))(stacked, keys)
  for i in range(3):
    single = run(jax.tree.map(lambda x: x[i], stacked), keys[i])
    np.testing.assert_array_equal(batched.tokens[i], single.tokens)
    np.testing.assert_array_equal(batched.mask[i], single.mask)
    np.testing.assert_allclose(batched.log_probs[i], single.log_probs, atol=1e-6)


def test_sampling_frequencies_follow_tempered_top_k_softmax():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  keys = jax.random.split(jax.random.key(0), 20000)
  draw = jax.jit(jax.vmap(lambda k: models.sample_from_logits(
      logits, k, temperature=0.5, top_k=3)[0]))
  counts = np.bincount(np.asarray(draw(keys)), minlength=4) / 20000
  p = np.array([0.5, 0.3, 0.15, 0.0]) ** 2
  p /= p.sum()
  np.testing.assert_allclose(counts, p, atol=0.015)
  assert counts[3] == 0
  assert int(models.sample_from_logits(logits, None, greedy=True)[0]) == 0


def test_generate_bad_arguments_raise(sampling_setup):
  model, params, prompts, _, _ = sampling_setup
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="max_new_tokens"):
    models.generate(model, params, prompts, key, max_new_tokens=0)
  with pytest.raises(ValueError, match="temperature"):
    models.generate(model, params, prompts, key, max_new_tokens=2, temperature=0.0)
  with pytest.raises(ValueError, match="top_k"):
    models.generate(model, params, prompts, key, max_new_tokens=2, top_k=VOCAB + 1)
  with pytest.raises(ValueError, match="prompts"):
    models.generate(model, params, prompts.astype(jnp.float32), key, max_new_tokens=2)


# ----------------------------------------------------------------------------
# 1 vs 8 (fake) devices: the same losses from the shared data-parallel step.
# ----------------------------------------------------------------------------


def _run_parity(num_devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={num_devices}")
  env["JAX_PLATFORMS"] = "cpu"
  out = subprocess.run([sys.executable, str(PARITY_SCRIPT)], env=env, check=True,
                       capture_output=True, text=True, timeout=300)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_transformer_lm_trains_identically_on_1_and_8_devices():
  one, eight = _run_parity(1), _run_parity(8)
  assert (one["devices"], eight["devices"]) == (1, 8)
  assert eight["batch_shards"] == 8
  np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-5)
  assert one["losses"][-1] < one["losses"][0]  # It does train.
