"""Overhead of divlab's training loop against a hand-written jax/optax loop.

Both train the same model (the MNIST-1D CNN, or --model mlp) on the same
in-memory data with the same optimizer and batch size, for the same number of
steps, jitted, after a warm-up that compiles everything:

  * handwritten: a minimal loop -- numpy permutation per epoch, `jax.device_put`
    of the batch, a jitted `(params, opt_state, batch) -> ...` step;
  * divlab: `divlab.train.fit` -- Loader, mesh sharding, TrainState step with
    per-step RNG and grad-norm metric, metric logging, progress bar, and one
    checkpoint at the end (as in a real run).

Prints per-step times and the ratio divlab / handwritten (target <= 1.10).

  python benchmarks/train_step.py [--model cnn1d] [--steps 500] [--batch 128]
"""
import argparse
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from divlab import data
from divlab import models
from divlab.losses import softmax_cross_entropy
from divlab.train import loop
from divlab.train import parallel
from divlab.train import trainer


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="cnn1d", choices=["cnn1d", "mlp"])
  parser.add_argument("--steps", type=int, default=500)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()

  arrays = data.load("divlab_mnist1d", "train")
  model = models.build(args.model, 10)
  tx = optax.adam(1e-3)
  params0 = trainer.init_params(model, arrays["x"], 0)

  def loss_fn(params, batch, rng):
    del rng
    logits = model.apply({"params": params}, batch["x"])
    return softmax_cross_entropy(logits, batch["y"], reduction="mean"), {}

  # --- hand-written reference loop -------------------------------------------
  @jax.jit
  def hand_step(params, opt_state, batch):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, None)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def handwritten(num_steps):
    params, opt_state = params0, tx.init(params0)
    n = len(arrays["y"])
    per_epoch = n // args.batch
    for i in range(num_steps):
      epoch, j = divmod(i, per_epoch)
      if j == 0:
        perm = np.random.default_rng(epoch).permutation(n)
      idx = perm[j * args.batch:(j + 1) * args.batch]
      batch = jax.device_put({"x": arrays["x"][idx], "y": arrays["y"][idx]})
      params, opt_state, loss = hand_step(params, opt_state, batch)
    jax.block_until_ready(loss)

  # --- divlab's loop -----------------------------------------------------------
  mesh = parallel.make_mesh()
  step = parallel.make_train_step(loss_fn, mesh)

  def divlab_loop(num_steps):
    with tempfile.TemporaryDirectory() as workdir:
      state = trainer.create_state(params0, tx, 0, mesh)
      state, _ = loop.fit(workdir=workdir, state=state, train_step=step,
                          loader=data.Loader(arrays, args.batch, seed=0), mesh=mesh,
                          num_steps=num_steps, log_every=100,
                          checkpoint_every=num_steps, keep_checkpoints=1,
                          progress=True, desc="divlab")
      jax.block_until_ready(state.params)

  def timed(fn):
    start = time.perf_counter()
    fn(args.steps)
    return (time.perf_counter() - start) / args.steps * 1e3

  handwritten(5)
  divlab_loop(5)  # compile both
  hand_ms, divlab_ms = [], []
  for _ in range(args.repeats):  # interleave, so machine drift hits both
    hand_ms.append(timed(handwritten))
    divlab_ms.append(timed(divlab_loop))
  h, d = statistics.median(hand_ms), statistics.median(divlab_ms)
  print(f"\nmodel={args.model} batch={args.batch} steps={args.steps} "
        f"devices={jax.device_count()} ({jax.devices()[0].platform})")
  print("| loop | ms/step (median of %d) | ratio to handwritten |" % args.repeats)
  print("|---|---|---|")
  print(f"| handwritten jax/optax | {h:.3f} | 1.00 |")
  print(f"| divlab fit | {d:.3f} | {d / h:.2f} |")
  print(f"\noverhead: {100 * (d / h - 1):+.1f}% (target <= +10%)")


if __name__ == "__main__":
  main()
