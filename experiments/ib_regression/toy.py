"""Two-Gaussian toy of the CS-IB paper: free points moved by the CS divergence.

The target is a fixed sample of two isotropic Gaussians (means at (-4, -4)
and (+4, +4), standard deviation 1, ``toy.points_per_mode`` points each); the
free points start from N(0, I) and are the only parameters, moved by plain
gradient descent on `divlab.divergences.kernel.cauchy_schwarz` (Gaussian
kernel, ``toy.kernel_sigma``). The run uses the shared layer (TrainState,
jitted step, fit loop with checkpoints), with the whole target sample as
every batch, so it resumes like any other run. It reports the divergence and
how the points split between the modes before and after, and saves a
before/after scatter plot.
"""
from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from divlab import data
from divlab.divergences import kernel
from divlab.train import loop
from divlab.train import metrics as metrics_lib
from divlab.train import parallel
from divlab.train import trainer
from experiments.ib_regression import plots


def make_points(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
  """The fixed target sample and the initial free points (seeded)."""
  toy = config.toy
  rng = np.random.default_rng(config.seed)
  n = int(toy.points_per_mode)
  mean = float(toy.mode_offset) * np.ones(2)
  target = np.concatenate([rng.normal(scale=toy.mode_std, size=(n, 2)) - mean,
                           rng.normal(scale=toy.mode_std, size=(n, 2)) + mean])
  free = rng.normal(size=(int(toy.num_free_points), 2))
  return target.astype(np.float32), free.astype(np.float32)


def mode_summary(points: np.ndarray, offset: float, radius: float) -> dict:
  """Share of points nearer the upper mode, and share within `radius` of a mode."""
  mode = offset * np.ones(2)
  to_upper = np.linalg.norm(points - mode, axis=1)
  to_lower = np.linalg.norm(points + mode, axis=1)
  return {"share_upper_mode": float(np.mean(to_upper < to_lower)),
          "share_near_a_mode": float(np.mean(np.minimum(to_upper, to_lower) < radius))}


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[dict]:
  workdir = pathlib.Path(workdir)
  toy = config.toy
  target, free = make_points(config)
  sigma = float(toy.kernel_sigma)
  mesh = parallel.make_mesh()
  batch_size = int(config.data.batch_size)
  if batch_size != len(target):
    raise ValueError(f"`data.batch_size` must equal the {len(target)} target "
                     f"points (the CS divergence uses the whole sample), got {batch_size}.")

  def loss_fn(params, batch, rng):
    del rng
    return kernel.cauchy_schwarz(params["points"], batch["x"], sigma), {}

  tx = trainer.make_optimizer(config.optimizer, int(config.train.num_steps))
  state = trainer.create_state({"points": jnp.asarray(free)}, tx, config.seed, mesh)
  loader = data.Loader({"x": target}, batch_size, seed=config.seed)
  state, _ = loop.fit(
      workdir=workdir / "runs" / "two_gaussians", state=state,
      train_step=parallel.make_train_step(loss_fn, mesh), loader=loader,
      mesh=mesh, num_steps=int(config.train.num_steps),
      log_every=int(config.train.log_every),
      checkpoint_every=int(config.train.checkpoint_every),
      keep_checkpoints=int(config.train.keep_checkpoints),
      progress=bool(config.get("progress", True)), desc="two gaussians")
  moved = np.asarray(jax.device_get(state.params["points"]))
  rows = []
  for stage, points in (("before", free), ("after", moved)):
    row = {"stage": stage,
           "cs_divergence": float(kernel.cauchy_schwarz(points, target, sigma)),
           "mmd2": float(kernel.mmd(points, target, sigma))}
    row.update(mode_summary(points, float(toy.mode_offset), 3.0 * float(toy.mode_std)))
    rows.append(row)
  plots.two_gaussians(workdir / "two_gaussians.png", target, free, moved,
                      f"After {int(config.train.num_steps)} steps on D_CS")
  text = metrics_lib.write_results(
      workdir, rows, title="Two Gaussians: free points moved by D_CS",
      notes=(f"{len(free)} free points, {len(target)} target points "
             f"(modes at ±{toy.mode_offset:g}, std {toy.mode_std:g}), kernel "
             f"sigma {sigma:g}, {config.optimizer.name} lr "
             f"{config.optimizer.learning_rate:g}. share_upper_mode: share of "
             "free points nearer the upper mode (0.5 = both modes equally "
             "covered); share_near_a_mode: within 3 std of a mode."))
  print(text, flush=True)
  return rows
