"""Overhead of divlab's training loop against a hand-written jax/optax loop.

Both train the same model (the MNIST-1D CNN, or --model mlp) on the same
in-memory data with the same optimizer and batch size, for the same number of
steps, jitted, after a warm-up that compiles everything:

  * handwritten: a minimal loop -- numpy permutation per epoch, `jax.device_put`
    of the batch, a jitted `(params, opt_state, batch) -> ...` step;
  * divlab: `divlab.train.fit` -- Loader, mesh sharding, TrainState step with
    per-step RNG and grad-norm metric, metric logging, progress bar, and one
    checkpoint at the end (as in a real run), once with one step per dispatch
    (`train.steps_per_call=1`) and once with the backend's default K
    (`loop.default_steps_per_call()`: K steps in one jitted `lax.scan`).

Each loop runs --steps and 3x --steps steps; the steady per-step time is the
difference over the extra steps, so divlab's one-off work per run (workdir,
metric writers, the final checkpoint: tens of ms) is reported on its own
column instead of being spread over a short run. Prints per-step times and the
ratios divlab / handwritten (target <= 1.05).

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

  default_k = loop.default_steps_per_call()

  def divlab_loop(num_steps, steps_per_call):
    with tempfile.TemporaryDirectory() as workdir:
      state = trainer.create_state(params0, tx, 0, mesh)
      state, _ = loop.fit(workdir=workdir, state=state, train_step=step,
                          loader=data.Loader(arrays, args.batch, seed=0), mesh=mesh,
                          num_steps=num_steps, log_every=100,
                          checkpoint_every=num_steps, keep_checkpoints=1,
                          steps_per_call=steps_per_call, progress=True,
                          desc=f"divlab K={steps_per_call}")
      jax.block_until_ready(state.params)

  def timed(fn, num_steps, *fn_args):
    start = time.perf_counter()
    fn(num_steps, *fn_args)
    return time.perf_counter() - start

  # Compile everything first: K=1, the default K, and the hand-written step.
  handwritten(5)
  divlab_loop(100, 1)
  divlab_loop(100, default_k)
  short, long = args.steps, 3 * args.steps
  loops = {"hand": (handwritten,), 1: (divlab_loop, 1), default_k: (divlab_loop, default_k)}
  runs = {name: {short: [], long: []} for name in loops}
  for _ in range(args.repeats):  # interleave, so machine drift hits all
    for name, (fn, *fn_args) in loops.items():
      for n in (short, long):
        runs[name][n].append(timed(fn, n, *fn_args))

  def per_step_ms(name):
    # Steady state: the extra time of the long run over the short one, per
    # extra step. divlab's one-off work (workdir, metric writers, the final
    # checkpoint) cancels out; it is reported on its own below.
    return 1e3 * (statistics.median(runs[name][long])
                  - statistics.median(runs[name][short])) / (long - short)

  def one_off_ms(name):
    return 1e3 * statistics.median(runs[name][short]) - short * per_step_ms(name)

  h = per_step_ms("hand")
  h_run = statistics.median(runs["hand"][long])
  print(f"\nmodel={args.model} batch={args.batch} steps={short} and {long} "
        f"devices={jax.device_count()} ({jax.devices()[0].platform}, "
        f"{jax.devices()[0].device_kind})")
  print(f"| loop | ms/step, steady (median of {args.repeats}) | ratio to handwritten "
        f"| one-off ms per run | whole {long}-step run, ratio |")
  print("|---|---|---|---|---|")
  print(f"| handwritten jax/optax | {h:.3f} | 1.00 | {one_off_ms('hand'):.0f} | 1.00 |")
  # On a CPU a convolution step runs one step per call whatever K says.
  state = trainer.create_state(params0, tx, 0, mesh)
  first = next(data.Loader(arrays, args.batch, seed=0))
  scans = step.loops_well(state, first)
  for k in (1, default_k):
    d = per_step_ms(k)
    label = f"divlab fit, steps_per_call={k}" + (" (default)" if k == default_k else "")
    if k > 1 and not scans:
      label += ", run as 1 per call (convolution on the CPU)"
    print(f"| {label} | {d:.3f} | {d / h:.2f} | {one_off_ms(k):.0f} "
          f"| {statistics.median(runs[k][long]) / h_run:.2f} |")
  d = per_step_ms(default_k)
  print(f"\nper-step overhead at the default K: {100 * (d / h - 1):+.1f}% (target <= +5%)")


if __name__ == "__main__":
  main()
