"""The time- and class-conditioned eps network."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divlab import models
from divlab.models import score


def test_sinusoidal_embedding_matches_formula():
  t = np.array([0.0, 0.25, 1.0])
  emb = np.asarray(score.sinusoidal_embedding(jnp.asarray(t), 6))
  freqs = np.exp(-np.log(1e4) * np.arange(3) / 3)
  angles = 1000 * t[:, None] * freqs[None]
  np.testing.assert_allclose(emb, np.concatenate([np.cos(angles), np.sin(angles)], 1),
                             rtol=1e-5, atol=1e-4)
  with pytest.raises(ValueError, match="dim"):
    score.sinusoidal_embedding(jnp.zeros(2), 5)


def _perturbed(model, x, t, y):
  params = model.init(jax.random.key(0), x, t, y)["params"]
  # The output layer starts at zero; move every weight so conditioning shows.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  return jax.tree.unflatten(tree, [p + 0.1 * jax.random.normal(k, p.shape)
                                   for p, k in zip(leaves, keys)])


def test_shapes_conditioning_and_null_label():
  model = models.build("score_mlp", 64, hidden=(32, 32), num_classes=10, embed_dim=16)
  x = jnp.ones((3, 8, 8, 1))
  params = _perturbed(model, x, jnp.full((3,), 0.5), jnp.arange(3))
  apply = lambda t, y: model.apply({"params": params}, x, t, y)
  assert apply(0.5, jnp.arange(3)).shape == x.shape
  assert not np.allclose(apply(0.5, jnp.zeros(3, jnp.int32)), apply(0.5, jnp.ones(3, jnp.int32)))
  assert not np.allclose(apply(0.2, None), apply(0.8, None))
  np.testing.assert_allclose(apply(0.5, None), apply(0.5, jnp.full((3,), 10)))
  with pytest.raises(ValueError, match="num_outputs"):
    model.apply({"params": params}, jnp.ones((3, 5)), 0.5)
