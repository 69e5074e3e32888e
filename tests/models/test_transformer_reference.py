"""TransformerLM logits against a float64 numpy forward pass written from its docstring.

The other TransformerLM tests compare the model with itself (cached against
uncached, padded against unpadded); this file pins the forward pass itself.
The reference follows the module docstring: token embedding (+ a learned
position table, or RoPE on queries and keys), pre-norm blocks
``x + attn(LN(x))`` then ``x + MLP(LN(x))`` with a GELU MLP, a final LayerNorm,
and the unembedding (tied: the transposed token embedding). Conventions taken
from flax, whose layers the model uses: LayerNorm with epsilon 1e-6 and a
learned scale and bias, and `nn.gelu`'s default tanh approximation
``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``. Attention scores are
scaled by ``1 / sqrt(head_dim)``; padding (``token_mask`` False) is never a
key, and the real tokens are numbered 0, 1, 2, ... from the first real one.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divlab import models

VOCAB, D_MODEL, HEADS, MLP_DIM, LAYERS, MAX_LEN = 11, 16, 2, 32, 2, 16
HEAD_DIM = D_MODEL // HEADS


@pytest.fixture(autouse=True)
def _float32_matmuls():
  # GPUs may run float32 matmuls in TF32 by default; the comparison below is
  # at float32 accuracy.
  with jax.default_matmul_precision("float32"):
    yield


def _layer_norm(x, params, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  variance = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(variance + eps) * params["scale"] + params["bias"]


def _gelu_tanh(x):
  return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _rotate(x, positions, base=10000.0):
  """RoPE in the rotate-half layout: pairs (x_i, x_{i + D/2}) turned by p theta_i."""
  half = x.shape[-1] // 2
  theta = base ** (-np.arange(half) / half)
  angles = positions[:, :, None, None] * theta  # [B, T, 1, D/2]
  x1, x2 = x[..., :half], x[..., half:]
  return np.concatenate([x1 * np.cos(angles) - x2 * np.sin(angles),
                         x2 * np.cos(angles) + x1 * np.sin(angles)], -1)


def _attention(x, params, positions, key_allowed, rope):
  """Multi-head causal self-attention of x [B, T, D] in float64."""
  qkv = np.einsum("btd,dchk->btchk", x, params["qkv"]["kernel"]) + params["qkv"]["bias"]
  query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, T, H, hd]
  if rope:
    query, key = _rotate(query, positions), _rotate(key, positions)
  scores = np.einsum("bqhd,bkhd->bhqk", query, key) / np.sqrt(HEAD_DIM)
  length = x.shape[1]
  causal = np.tril(np.ones((length, length), bool))
  # A query sees earlier real tokens and itself (a padded query's own slot
  # keeps its row non-empty; its output is never compared).
  allowed = (causal[None] & key_allowed[:, None, :]) | np.eye(length, dtype=bool)[None]
  scores = np.where(allowed[:, None], scores, -np.inf)
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum("bhqk,bkhd->bqhd", weights, value)
  return np.einsum("bqhd,hdw->bqw", out, params["out"]["kernel"]) + params["out"]["bias"]


def reference_logits(params, tokens, mask, position_encoding, tie_embeddings):
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  x = p["token_embed"]["embedding"][tokens]
  if position_encoding == "learned":
    x = x + p["position_embed"]["embedding"][positions]
  for layer in range(LAYERS):
    block = p[f"blocks_{layer}"]
    x = x + _attention(_layer_norm(x, block["attention_norm"]), block["attention"],
                       positions, mask, rope=position_encoding == "rope")
    h = _layer_norm(x, block["mlp_norm"])
    h = _gelu_tanh(h @ block["mlp_in"]["kernel"] + block["mlp_in"]["bias"])
    x = x + h @ block["mlp_out"]["kernel"] + block["mlp_out"]["bias"]
  h = _layer_norm(x, p["final_norm"])
  if tie_embeddings:
    return h @ p["token_embed"]["embedding"].T
  return h @ p["unembed"]["kernel"]


@pytest.mark.parametrize("position_encoding,tie_embeddings",
                         [("rope", True), ("learned", False)])
def test_logits_match_the_float64_forward_pass(position_encoding, tie_embeddings):
  model = models.TransformerLM(vocab_size=VOCAB, num_layers=LAYERS, d_model=D_MODEL,
                               num_heads=HEADS, mlp_dim=MLP_DIM, max_len=MAX_LEN,
                               position_encoding=position_encoding,
                               tie_embeddings=tie_embeddings)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, VOCAB, (3, 7)).astype(np.int32)
  # Row 1 is left-padded by two tokens, row 2 right-padded by one.
  mask = np.ones((3, 7), bool)
  mask[1, :2] = False
  mask[2, -1] = False
  # Random parameters of the model's shapes (eval_shape traces init without
  # compiling it); norm scales around 1, every bias non-zero.
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.asarray(tokens))["params"]
  params = jax.tree_util.tree_map_with_path(
      lambda path, a: ((path[-1].key == "scale") + 0.3 * rng.normal(size=a.shape)
                       ).astype(np.float32), shapes)
  got = np.asarray(jax.jit(lambda p, x, m: model.apply({"params": p}, x, token_mask=m))(
      params, tokens, mask))
  expected = reference_logits(params, tokens, mask, position_encoding, tie_embeddings)
  assert got.shape == (3, 7, VOCAB) and got.dtype == np.float32
  # Real tokens only: a padded position's logits are not defined by the docstring.
  scale = np.abs(expected[mask]).max()
  np.testing.assert_allclose(got[mask], expected[mask], rtol=0, atol=1e-5 * scale)
