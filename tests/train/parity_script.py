"""Trains a few steps and prints losses and a whole-batch gradient as JSON.

Run by test_parallel.py in subprocesses with 1 and with 8 (fake CPU) devices;
the outputs must agree. Not collected by pytest (no test_ prefix).
"""
import json
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax

from divlab import data
from divlab import divergences
from divlab import models
from divlab.losses import softmax_cross_entropy
from divlab.train import loop
from divlab.train import parallel
from divlab.train import trainer


def _fit_params(step, params, arrays, mesh, steps_per_call):
  """Parameters after 12 fit steps with K steps per call (K=4: 3 calls)."""
  state = trainer.create_state(params, optax.adam(1e-2), 0, mesh)
  with tempfile.TemporaryDirectory() as workdir:
    state, _ = loop.fit(workdir=workdir, state=state, train_step=step,
                        loader=data.Loader(arrays, 64, seed=0), mesh=mesh,
                        num_steps=12, log_every=4, checkpoint_every=12,
                        progress=False, steps_per_call=steps_per_call)
  return [np.asarray(leaf) for leaf in jax.tree.leaves(jax.device_get(state.params))]


def main():
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(0)
  arrays = {"x": rng.normal(size=(256, 6)).astype(np.float32),
            "y": rng.integers(0, 3, size=256).astype(np.int32)}
  model = models.build("mlp", 3, hidden=(32,))

  def loss_fn(params, batch, rng):
    logits, features = model.apply({"params": params}, batch["x"],
                                   return_features=True)
    ce = softmax_cross_entropy(logits, batch["y"], reduction="mean")
    # A loss that needs the whole global batch: MMD between the two halves.
    half = features.shape[0] // 2
    whole_batch = divergences.mmd(features[:half], features[half:], sigma=1.0)
    return ce + whole_batch, {"mmd": whole_batch}

  params = trainer.init_params(model, arrays["x"], 0)
  state = trainer.create_state(params, optax.adam(1e-2), 0, mesh)
  step = parallel.make_train_step(loss_fn, mesh)
  loader = data.Loader(arrays, 64, seed=0)
  batch0 = parallel.shard_batch(next(iter(data.Loader(arrays, 64, seed=0))), mesh)
  grads = jax.jit(jax.grad(lambda p: loss_fn(p, batch0, None)[0]))(state.params)
  losses, mmds = [], []
  for _ in range(8):
    state, metrics = step(state, parallel.shard_batch(next(loader), mesh))
    losses.append(float(metrics["loss"]))
    mmds.append(float(metrics["mmd"]))
  # The fit loop with 1 and with 4 steps per dispatch: identical bits.
  k1 = _fit_params(step, params, arrays, mesh, 1)
  k4 = _fit_params(step, params, arrays, mesh, 4)
  print(json.dumps({
      "steps_per_call_bit_identical": all(np.array_equal(a, b) for a, b in zip(k1, k4)),
      "devices": jax.device_count(),
      "batch_shards": len(batch0["x"].sharding.device_set),
      "losses": losses, "mmds": mmds,
      "grad_leaves": [np.asarray(g).ravel().tolist() for g in jax.tree.leaves(grads)],
  }))


if __name__ == "__main__":
  main()
