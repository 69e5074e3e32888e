"""The time- and class-conditioned eps network, against a float64 numpy forward pass."""
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
  """Parameters of the model's shapes (traced by eval_shape: nothing compiled),
  drawn at random; the output layer starts at zero in `init`, which would hide
  the conditioning."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), x, t, y)["params"]
  rng = np.random.default_rng(1)
  return jax.tree.map(lambda a: (0.3 * rng.normal(size=a.shape)).astype(np.float32), shapes)


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


def _silu(x):
  return x / (1.0 + np.exp(-x))


def _reference_eps(params, x, t, labels, num_classes, embed_dim):
  """The forward pass of the ScoreMLP docstring in float64 numpy.

  Time: the sinusoidal embedding, then a two-layer SiLU MLP; class: a learned
  embedding added to it (row `num_classes` is the null label). Every hidden
  layer adds a bias-free projection of that embedding to its pre-activation.
  Flax names the layers in order of construction: in
  ``Dense(e)(silu(Dense(e)(emb)))`` the outer layer is built first, so the time
  MLP applies Dense_1 then Dense_0; then per hidden layer Dense_{2i+2} (the
  input) and Dense_{2i+3} (the embedding), and the last Dense the output.
  """
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  half = embed_dim // 2
  angles = 1000.0 * t[:, None] * np.exp(-np.log(1e4) * np.arange(half) / half)[None]
  emb = np.concatenate([np.cos(angles), np.sin(angles)], -1)
  emb = _silu(emb @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
  emb = emb @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
  labels = np.full(len(x), num_classes) if labels is None else labels
  emb = emb + p["Embed_0"]["embedding"][labels]
  h = x.reshape(len(x), -1)
  num_dense = len([k for k in p if k.startswith("Dense_")])
  for layer in range((num_dense - 3) // 2):
    data, cond = p[f"Dense_{2 * layer + 2}"], p[f"Dense_{2 * layer + 3}"]
    h = _silu(h @ data["kernel"] + data["bias"] + emb @ cond["kernel"])
    out_layer = p[f"Dense_{2 * layer + 4}"]
  return (h @ out_layer["kernel"] + out_layer["bias"]).reshape(x.shape)


def test_eps_matches_the_float64_forward_pass():
  model = models.build("score_mlp", 12, hidden=(32, 24), num_classes=4, embed_dim=8)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 3, 4)).astype(np.float32)
  t = np.array([0.01, 0.2, 0.5, 0.77, 1.0], np.float32)
  labels = np.array([0, 3, 4, 1, 2])  # 4 is the null label
  params = _perturbed(model, jnp.asarray(x), jnp.asarray(t), jnp.asarray(labels))
  apply = jax.jit(lambda p, x, t, y: model.apply({"params": p}, x, t, y))
  for y in (labels, None):
    got = np.asarray(apply(params, x, t, y))
    expected = _reference_eps(params, x.astype(np.float64), t.astype(np.float64), y, 4, 8)
    assert got.shape == x.shape
    # float32 angles up to 1000 carry up to ~6e-5 absolute error into cos/sin
    # (7e-6 of the largest output here).
    np.testing.assert_allclose(got, expected, rtol=0,
                               atol=5e-5 * np.abs(expected).max())
