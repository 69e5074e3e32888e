"""Trains a TransformerLM a few steps; prints the losses as JSON.

Run by test_transformer.py in subprocesses with 1 and with 8 (fake CPU)
devices; the losses must agree. Not collected by pytest (no test_ prefix).
"""
import json

import jax
import numpy as np
import optax

from divlab import data
from divlab import models
from divlab.losses import sequence
from divlab.train import parallel
from divlab.train import trainer


def main():
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(0)
  # Copy-the-prompt sequences: a task with real structure to learn.
  prompt = rng.integers(1, 9, size=(128, 4))
  tokens = np.concatenate([prompt, prompt], axis=1).astype(np.int32)
  loss_mask = np.zeros((128, 7), bool)
  loss_mask[:, 3:] = True
  arrays = {"x": tokens, "loss_mask": loss_mask}
  model = models.TransformerLM(vocab_size=9, num_layers=2, d_model=32, num_heads=4,
                               mlp_dim=64, dropout_rate=0.1)

  def loss_fn(params, batch, rng):
    logits = model.apply({"params": params}, batch["x"][:, :-1], train=True,
                         rngs={"dropout": rng})
    logp = sequence.token_log_probs(logits, batch["x"][:, 1:], batch["loss_mask"])
    return -logp.sum() / batch["loss_mask"].sum(), {}

  params = trainer.init_params(model, tokens, 0)
  state = trainer.create_state(params, optax.adam(3e-3), 0, mesh)
  step = parallel.make_train_step(loss_fn, mesh)
  loader = data.Loader(arrays, 32, seed=0)
  losses, shards = [], 0
  for _ in range(6):
    batch = parallel.shard_batch(next(loader), mesh)
    shards = len(batch["x"].sharding.device_set)
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  print(json.dumps({"devices": jax.device_count(), "batch_shards": shards,
                    "losses": losses}))


if __name__ == "__main__":
  main()
