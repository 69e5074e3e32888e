"""A small causal decoder (GPT-style) with an explicit key/value cache.

`TransformerLM(tokens) -> logits [B, T, V]`: token embedding, ``num_layers``
pre-norm blocks (LayerNorm -> multi-head causal self-attention -> residual,
LayerNorm -> GELU MLP -> residual), a final LayerNorm and the unembedding
(tied to the token embedding or a separate matrix). Positions enter either by
rotary embeddings on queries and keys (RoPE, Su et al., 2021) or by a learned
position table added to the token embedding (GPT-2, Radford et al., 2019).
LayerNorm and GELU are flax's defaults: epsilon 1e-6, and GELU's tanh
approximation (not the exact erf form).

Padding: ``token_mask`` (False = padding) removes padded tokens as keys and
numbers the real tokens 0, 1, 2, ... from the first real one, so a
left-padded prompt computes exactly what the unpadded prompt would.

Decoding: :meth:`TransformerLM.init_cache` gives an empty `KVCache` (a plain
pytree of arrays, no mutable linen collection), and :meth:`TransformerLM.decode`
appends a chunk of tokens (a whole prompt, then one token at a time) and
returns their logits with the updated cache. `divlab.models.generate` drives
it.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["KVCache", "TransformerLM", "rotary_embedding"]

POSITION_ENCODINGS = ("rope", "learned")


class KVCache(NamedTuple):
  """Keys and values of every layer for the tokens decoded so far.

  Attributes:
    keys: ``[num_layers, B, S, num_heads, head_dim]``; slot ``s`` holds the
      ``s``-th token fed to the model (padding included).
    values: same shape as ``keys``.
    valid: ``[B, S]`` bool, True where the slot holds a real (unmasked) token.
    length: int32 scalar, the number of slots written so far.
    next_position: ``[B]`` int32, the position the next real token gets (the
      number of real tokens seen so far).
  """
  keys: jax.Array
  values: jax.Array
  valid: jax.Array
  length: jax.Array
  next_position: jax.Array


def rotary_embedding(x: jax.Array, positions: jax.Array, *,
                     base: float = 10000.0) -> jax.Array:
  """Rotates feature pairs of ``x`` by position-dependent angles (RoPE).

  For features split in halves ``(x1, x2)`` of size ``D/2``, with
  ``theta_i = base^(-2i/D)``: ``out = (x1 cos(p theta) - x2 sin(p theta),
  x2 cos(p theta) + x1 sin(p theta))`` (Su et al., 2021, "RoFormer", in the
  rotate-half layout of GPT-NeoX). The dot product of two rotated vectors
  depends on their positions only through the difference.

  Args:
    x: ``[B, T, H, D]`` queries or keys, ``D`` even.
    positions: ``[B, T]`` integer positions.
    base: the frequency base.

  Returns:
    ``[B, T, H, D]``, same dtype as ``x``.
  """
  half = x.shape[-1] // 2
  inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class _CausalSelfAttention(nn.Module):
  """Multi-head attention of a chunk of queries over cached + new keys."""
  num_heads: int
  rope: bool
  rope_base: float

  @nn.compact
  def __call__(self, x, positions, allowed, past_keys=None, past_values=None,
               write_index=None):
    batch, length, width = x.shape
    head_dim = width // self.num_heads
    qkv = nn.DenseGeneral((3, self.num_heads, head_dim), name="qkv")(x)
    query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if self.rope:
      query = rotary_embedding(query, positions, base=self.rope_base)
      key = rotary_embedding(key, positions, base=self.rope_base)
    if past_keys is not None:
      start = (0, write_index, 0, 0)
      key = jax.lax.dynamic_update_slice(past_keys, key.astype(past_keys.dtype), start)
      value = jax.lax.dynamic_update_slice(past_values, value.astype(past_values.dtype),
                                           start)
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key).astype(jnp.float32)
    scores = scores / jnp.sqrt(jnp.float32(head_dim))
    # Every query may attend at least to its own slot, so no row is empty
    # (a padded query's output is never used, but must not be NaN).
    scores = jnp.where(allowed[:, None], scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
    out = nn.DenseGeneral(width, axis=(-2, -1), name="out")(out)
    del batch, length
    return out, key, value


class _DecoderBlock(nn.Module):
  """Pre-norm block: x + attn(LN(x)), then x + MLP(LN(x))."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float
  rope: bool
  rope_base: float

  @nn.compact
  def __call__(self, x, positions, allowed, past_keys=None, past_values=None,
               write_index=None, *, train: bool = False):
    attn_out, key, value = _CausalSelfAttention(
        self.num_heads, self.rope, self.rope_base, name="attention")(
            nn.LayerNorm(name="attention_norm")(x), positions, allowed,
            past_keys, past_values, write_index)
    x = x + nn.Dropout(self.dropout_rate)(attn_out, deterministic=not train)
    h = nn.LayerNorm(name="mlp_norm")(x)
    h = nn.Dense(x.shape[-1], name="mlp_out")(nn.gelu(nn.Dense(self.mlp_dim,
                                                               name="mlp_in")(h)))
    x = x + nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    return x, key, value


class TransformerLM(nn.Module):
  """A causal decoder-only language model; returns next-token logits.

  ``logits[b, t]`` is the model's distribution of the token that follows
  ``tokens[b, :t+1]``.

  Attributes:
    vocab_size: number of token ids (the logits' last axis).
    num_layers: decoder blocks.
    d_model: residual-stream width; must divide by ``num_heads``.
    num_heads: attention heads (the head width ``d_model / num_heads`` must be
      even for RoPE).
    mlp_dim: hidden width of each block's MLP.
    max_len: longest sequence (prompt + completion) the learned position
      table covers; RoPE has no such limit.
    position_encoding: ``"rope"`` (rotary, on queries and keys) or
      ``"learned"`` (a position embedding added to the tokens).
    tie_embeddings: unembed with the transposed token embedding (True) or a
      separate ``[d_model, vocab_size]`` matrix (False).
    dropout_rate: dropout on the embeddings and on each residual branch when
      called with ``train=True`` (needs a ``"dropout"`` PRNG stream).
    rope_base: RoPE's frequency base.

  Example::

    model = TransformerLM(vocab_size=16)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    logits = model.apply({"params": params}, tokens)          # [B, T, 16]
  """
  vocab_size: int
  num_layers: int = 2
  d_model: int = 64
  num_heads: int = 4
  mlp_dim: int = 256
  max_len: int = 128
  position_encoding: str = "rope"
  tie_embeddings: bool = True
  dropout_rate: float = 0.0
  rope_base: float = 10000.0

  def _check(self):
    if self.position_encoding not in POSITION_ENCODINGS:
      raise ValueError(f"`position_encoding`={self.position_encoding!r}: use one of "
                       f"{POSITION_ENCODINGS}.")
    if self.d_model % self.num_heads:
      raise ValueError(f"`d_model`={self.d_model} must be divisible by "
                       f"`num_heads`={self.num_heads}.")
    if self.position_encoding == "rope" and (self.d_model // self.num_heads) % 2:
      raise ValueError(f"RoPE needs an even head width; `d_model`/`num_heads` = "
                       f"{self.d_model // self.num_heads}.")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"`dropout_rate` must lie in [0, 1), got {self.dropout_rate}.")

  def setup(self):
    self._check()
    init = nn.initializers.normal(stddev=0.02)
    self.token_embed = nn.Embed(self.vocab_size, self.d_model, embedding_init=init)
    if self.position_encoding == "learned":
      self.position_embed = nn.Embed(self.max_len, self.d_model, embedding_init=init)
    self.blocks = [
        _DecoderBlock(self.num_heads, self.mlp_dim, self.dropout_rate,
                      self.position_encoding == "rope", self.rope_base)
        for _ in range(self.num_layers)]
    self.final_norm = nn.LayerNorm()
    self.embed_dropout = nn.Dropout(self.dropout_rate)
    if not self.tie_embeddings:
      self.unembed = nn.Dense(self.vocab_size, use_bias=False, kernel_init=init)

  def __call__(self, tokens: jax.Array, *, token_mask: Optional[jax.Array] = None,
               train: bool = False) -> jax.Array:
    """Next-token logits of whole sequences.

    Args:
      tokens: ``[B, T]`` integer token ids.
      token_mask: optional ``[B, T]`` bool, False at padding (left or right):
        padded tokens are never attended to and do not advance positions.
      train: apply dropout.

    Returns:
      ``[B, T, vocab_size]`` float32 logits.
    """
    tokens, mask = self._inputs(tokens, token_mask)
    self._check_length(tokens.shape[1], "tokens")
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    slots = jnp.arange(tokens.shape[1])
    allowed = self._allowed(slots, slots, mask)
    logits, _, _ = self._forward(tokens, positions, allowed, None, train)
    return logits

  def init_cache(self, batch_size: int, max_len: int,
                 dtype: jnp.dtype = jnp.float32) -> KVCache:
    """An empty cache for ``batch_size`` sequences of up to ``max_len`` tokens."""
    head_dim = self.d_model // self.num_heads
    shape = (self.num_layers, batch_size, max_len, self.num_heads, head_dim)
    return KVCache(keys=jnp.zeros(shape, dtype), values=jnp.zeros(shape, dtype),
                   valid=jnp.zeros((batch_size, max_len), bool),
                   length=jnp.zeros((), jnp.int32),
                   next_position=jnp.zeros((batch_size,), jnp.int32))

  def decode(self, tokens: jax.Array, cache: KVCache, *,
             token_mask: Optional[jax.Array] = None) -> tuple[jax.Array, KVCache]:
    """Appends ``tokens`` to the cached sequences; returns their logits.

    Calling ``decode`` on a prompt and then on each new token gives the same
    logits as calling the model on the whole sequence (no dropout here: this
    is inference).

    Args:
      tokens: ``[B, T]`` the next chunk (a prompt, or one token per sequence).
      cache: from :meth:`init_cache` or a previous ``decode``; it must have
        room for ``T`` more slots.
      token_mask: optional ``[B, T]`` bool, False for padding (e.g. the left
        padding of a prompt, or a finished sequence's filler token).

    Returns:
      ``(logits [B, T, vocab_size], updated cache)``.
    """
    tokens, mask = self._inputs(tokens, token_mask)
    num_slots = cache.valid.shape[1]
    self._check_length(num_slots, "cache")
    if tokens.shape[1] > num_slots:
      raise ValueError(f"`tokens` holds {tokens.shape[1]} tokens, the cache only "
                       f"{num_slots} slots.")
    positions = cache.next_position[:, None] + jnp.cumsum(mask, axis=1) - 1
    positions = jnp.maximum(positions, 0)
    valid = jax.lax.dynamic_update_slice(cache.valid, mask, (0, cache.length))
    query_slots = cache.length + jnp.arange(tokens.shape[1])
    allowed = self._allowed(query_slots, jnp.arange(num_slots), valid)
    logits, keys, values = self._forward(tokens, positions, allowed,
                                         (cache.keys, cache.values, cache.length),
                                         False)
    new_cache = KVCache(keys=keys, values=values, valid=valid,
                        length=cache.length + tokens.shape[1],
                        next_position=cache.next_position + mask.sum(1, dtype=jnp.int32))
    return logits, new_cache

  # --------------------------------------------------------------------------

  def _inputs(self, tokens, token_mask):
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"`tokens` must be [B, T] integer ids, got {tokens.shape} "
                       f"{tokens.dtype}.")
    if token_mask is None:
      return tokens, jnp.ones(tokens.shape, bool)
    token_mask = jnp.asarray(token_mask)
    if token_mask.shape != tokens.shape:
      raise ValueError(f"`token_mask` must have the shape of `tokens` {tokens.shape}, "
                       f"got {token_mask.shape}.")
    return tokens, token_mask.astype(bool)

  def _check_length(self, length, name):
    # A learned position table has max_len rows; RoPE extrapolates.
    if self.position_encoding == "learned" and length > self.max_len:
      raise ValueError(f"`{name}` spans {length} positions, more than the "
                       f"learned table's `max_len`={self.max_len}.")

  @staticmethod
  def _allowed(query_slots, key_slots, key_valid):
    """``[B, Tq, S]``: causal over slots, real keys only, plus the diagonal."""
    causal = key_slots[None, :] <= query_slots[:, None]
    own = key_slots[None, :] == query_slots[:, None]
    return (causal[None] & key_valid[:, None, :]) | own[None]

  def _forward(self, tokens, positions, allowed, cache, train):
    x = self.token_embed(tokens)
    if self.position_encoding == "learned":
      x = x + self.position_embed(jnp.minimum(positions, self.max_len - 1))
    x = self.embed_dropout(x, deterministic=not train)
    new_keys, new_values = [], []
    for i, block in enumerate(self.blocks):
      if cache is None:
        x, key, value = block(x, positions, allowed, train=train)
      else:
        past_keys, past_values, write_index = cache
        x, key, value = block(x, positions, allowed, past_keys[i], past_values[i],
                              write_index, train=train)
      new_keys.append(key)
      new_values.append(value)
    h = self.final_norm(x)
    if self.tie_embeddings:
      logits = self.token_embed.attend(h)
    else:
      logits = self.unembed(h)
    return logits.astype(jnp.float32), jnp.stack(new_keys), jnp.stack(new_values)
