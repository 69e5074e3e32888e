"""MLP, CNN1D, CNN2D and BottleneckMLP against float64 numpy forward passes.

Each reference follows the module's docstring with the layer conventions of
flax: ``Dense`` is ``x W + b``; ``Conv`` is a cross-correlation with "SAME"
padding (output length ``ceil(L / stride)``, the total padding
``(out - 1) stride + k - L`` split with the smaller half first); ``max_pool``
with "SAME" pads with -inf the same way. Written as explicit loops over
output positions, with float64 copies of the (float32) parameters.
"""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divlab import models


def _relu(x):
  return np.maximum(x, 0.0)


def _dense(h, layer):
  return h @ layer["kernel"] + layer["bias"]


def _same_padding(length, window, stride):
  out = math.ceil(length / stride)
  total = max((out - 1) * stride + window - length, 0)
  return out, total // 2


def _conv_same(x, layer, stride):
  """x [B, *spatial, C_in], kernel [*window, C_in, C_out]: SAME cross-correlation."""
  kernel, spatial = layer["kernel"], x.shape[1:-1]
  window = kernel.shape[:-2]
  plans = [_same_padding(n, k, stride) for n, k in zip(spatial, window)]
  out = np.zeros((x.shape[0],) + tuple(o for o, _ in plans) + (kernel.shape[-1],))
  for position in itertools.product(*[range(o) for o, _ in plans]):
    for offset in itertools.product(*[range(k) for k in window]):
      source = [p * stride + d - low for p, d, (_, low) in zip(position, offset, plans)]
      if all(0 <= s < n for s, n in zip(source, spatial)):
        out[(slice(None),) + position] += x[(slice(None),) + tuple(source)] @ kernel[offset]
  return out + layer["bias"]


def _max_pool_same(x, window, stride):
  spatial = x.shape[1:-1]
  plans = [_same_padding(n, window, stride) for n in spatial]
  out = np.full((x.shape[0],) + tuple(o for o, _ in plans) + (x.shape[-1],), -np.inf)
  for position in itertools.product(*[range(o) for o, _ in plans]):
    for offset in itertools.product(range(window), repeat=len(spatial)):
      source = [p * stride + d - low for p, d, (_, low) in zip(position, offset, plans)]
      if all(0 <= s < n for s, n in zip(source, spatial)):
        index = (slice(None),) + position
        out[index] = np.maximum(out[index], x[(slice(None),) + tuple(source)])
  return out


def reference_mlp(p, x):
  h = x.reshape(len(x), -1)
  num_hidden = len(p) - 1
  for i in range(num_hidden):
    h = _relu(_dense(h, p[f"Dense_{i}"]))
  return _dense(h, p[f"Dense_{num_hidden}"]), h


def reference_cnn1d(p, x):
  h = x if x.ndim == 3 else x[..., None]
  num_convs = len(p) - 1
  for i in range(num_convs):  # the first convolution has stride 1, the others 2
    h = _relu(_conv_same(h, p[f"Conv_{i}"], 1 if i == 0 else 2))
  h = h.reshape(len(h), -1)
  return _dense(h, p["Dense_0"]), h


def reference_cnn2d(p, x):
  h = x if x.ndim == 4 else x[..., None]
  num_convs = len(p) - 2
  for i in range(num_convs):
    h = _max_pool_same(_relu(_conv_same(h, p[f"Conv_{i}"], 1)), 2, 2)
  h = _relu(_dense(h.reshape(len(h), -1), p["Dense_0"]))
  return _dense(h, p["Dense_1"]), h


def reference_bottleneck(p, x):
  h = x.reshape(len(x), -1)
  for i in range(len([k for k in p if k.startswith("encoder_layers_")])):
    h = _relu(_dense(h, p[f"encoder_layers_{i}"]))
  mean, log_variance = _dense(h, p["mean_head"]), _dense(h, p["log_variance_head"])
  out = mean
  for i in range(len([k for k in p if k.startswith("decoder_layers_")])):
    out = _relu(_dense(out, p[f"decoder_layers_{i}"]))
  return _dense(out, p["readout"]), mean, log_variance


CASES = {  # name -> (build kwargs, input shape, reference)
    "mlp": (dict(hidden=(8, 6)), (3, 5), reference_mlp),
    # Length 9, kernel 4: uneven SAME padding at stride 1 and 2.
    "cnn1d": (dict(channels=(4, 5, 6), kernel_size=4), (3, 9, 2), reference_cnn1d),
    "cnn1d_channelless": (dict(channels=(3, 4), kernel_size=3), (3, 7), reference_cnn1d),
    # 6x6 -> pool to 3x3 -> pool to 2x2 (a padded window).
    "cnn2d": (dict(channels=(4, 5), hidden=7), (3, 6, 6, 1), reference_cnn2d),
}


def _random_params(model, x, seed):
  """Parameters of the model's shapes (traced, not computed: nothing to
  compile), every entry drawn from N(0, 0.5^2) so that biases play a part."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.asarray(x))["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: (0.5 * rng.normal(size=a.shape)).astype(np.float32), shapes)


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_and_features_match_the_float64_forward_pass(case):
  kwargs, shape, reference = CASES[case]
  model = models.build(case.split("_")[0], 3, **kwargs)
  x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
  params = _random_params(model, x, seed=2)
  out, features = model.apply({"params": params}, x, return_features=True)
  want_out, want_features = reference(jax.tree.map(lambda a: np.asarray(a, np.float64),
                                                   params), np.float64(x))
  assert out.shape == (shape[0], 3)
  for got, want in ((out, want_out), (features, want_features)):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0,
                               atol=1e-5 * np.abs(want).max())


def test_bottleneck_mlp_encodes_decodes_and_predicts_from_the_mean():
  model = models.build("bottleneck_mlp", 2, encoder_hidden=(6, 5), bottleneck_dim=3,
                       decoder_hidden=(4,), stochastic=True)
  x = np.random.default_rng(3).normal(size=(4, 2, 3)).astype(np.float32)
  params = _random_params(model, x, seed=4)
  p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  want_out, want_mean, want_log_variance = reference_bottleneck(p64, np.float64(x))
  out, mean = model.apply({"params": params}, x, return_features=True)
  encoded_mean, log_variance = model.apply({"params": params}, x, method=model.encode)
  t = np.random.default_rng(5).normal(size=(4, 3)).astype(np.float32)
  decoded = model.apply({"params": params}, t, method=model.decode)
  want_decoded = t.astype(np.float64)
  want_decoded = _dense(_relu(_dense(want_decoded, p64["decoder_layers_0"])), p64["readout"])
  for got, want in ((out, want_out), (mean, want_mean), (encoded_mean, want_mean),
                    (log_variance, want_log_variance), (decoded, want_decoded)):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0,
                               atol=1e-5 * np.abs(want).max())
