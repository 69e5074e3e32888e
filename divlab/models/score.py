"""A time- and class-conditioned noise-prediction network for diffusion models.

`ScoreMLP(x_t, t, labels) -> eps_hat` with the shape of `x_t`. Time enters
through a sinusoidal embedding of ``t`` (continuous, in (0, 1]) followed by
a small MLP; a class label through a learned embedding with one extra
"null" entry (index ``num_classes``) for classifier-free guidance (Ho &
Salimans, 2022): training drops labels to null at random, sampling combines
``eps(x, t, null)`` and ``eps(x, t, y)``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def sinusoidal_embedding(t: jax.Array, dim: int, *, max_period: float = 1e4) -> jax.Array:
  """``[B] -> [B, dim]``: cos/sin of ``1000 t`` at geometric frequencies.

  The transformer position encoding (Vaswani et al., 2017) as DDPM uses it
  for the time step, on the continuous time scaled to DDPM's 1000 steps.
  """
  if dim < 2 or dim % 2:
    raise ValueError(f"`dim` must be an even number >= 2, got {dim}.")
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = 1000.0 * t.astype(jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class ScoreMLP(nn.Module):
  """eps-prediction MLP on flattened inputs, conditioned on time and class.

  Attributes:
    num_outputs: the flattened data dimension (the output is reshaped to the
      input's shape).
    hidden: widths of the hidden layers; the time/class embedding is added to
      every hidden layer's pre-activation.
    num_classes: number of classes; 0 for an unconditional model. Label
      ``num_classes`` is the null (unconditional) label.
    embed_dim: width of the time and class embeddings.
  """
  num_outputs: int
  hidden: Sequence[int] = (256, 256, 256)
  num_classes: int = 0
  embed_dim: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array,
               labels: Optional[jax.Array] = None) -> jax.Array:
    batch = x.shape[0]
    h = x.reshape(batch, -1)
    if h.shape[-1] != self.num_outputs:
      raise ValueError(f"`x` has {h.shape[-1]} features per example, the model "
                       f"was built for num_outputs={self.num_outputs}.")
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,))
    emb = sinusoidal_embedding(t, self.embed_dim)
    emb = nn.Dense(self.embed_dim)(nn.silu(nn.Dense(self.embed_dim)(emb)))
    if self.num_classes:
      if labels is None:
        labels = jnp.full((batch,), self.num_classes, jnp.int32)
      labels = jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (batch,))
      emb = emb + nn.Embed(self.num_classes + 1, self.embed_dim)(labels)
    for width in self.hidden:
      h = nn.silu(nn.Dense(width)(h) + nn.Dense(width, use_bias=False)(emb))
    out = nn.Dense(self.num_outputs, kernel_init=nn.initializers.zeros)(h)
    return out.reshape(x.shape)
