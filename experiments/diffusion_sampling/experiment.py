"""The solver sweep: every (model, solver, NFE, guidance) with divergence metrics.

For each problem (see `problems`) one batch of starting noise x_T, with labels
cycling over the classes, is split into ``num_seeds`` groups of
``samples_per_seed``. Per (solver, NFE) one guidance-vmapped sampler run
produces the samples for every guidance scale w; the reference is the
same x_T and labels pushed through DDIM with ``reference_nfe`` steps (the
converged probability-flow ODE solution the few-step solvers approximate).

One compiled program per (problem, solver) serves every NFE: the time grid,
padded to the solver's largest step count, and the step count are arguments
(`divlab.diffusion.sample_on_grid` with ``num_steps``), and the padding
steps are never run, so each cell is bit for bit the run on its own unpadded
grid. DDIM's program also computes the reference.

Metrics per group (mean ± std over the groups):

* ``diverged_frac``: fraction of samples whose norm is not finite or exceeds
  the bound ``max(diverged_norm, reference_scale * q99)`` (q99: the 99th
  percentile of the reference samples' norms) for
  that guidance scale: the problem's fixed bound (10 for the exact mixtures,
  as in the paper's toy, with ``reference_scale`` 0), which the learned
  models (``reference_scale`` 2) raise where the converged ODE solution
  itself goes further: a strongly guided learned model leaves the data range
  even when solved exactly, and that is not a solver artifact;
* ``sliced_w`` (`divlab.divergences.sliced_wasserstein`, 128 projections) and
  ``mmd`` (`divlab.divergences.mmd`, biased, Gaussian kernel with the median
  distance of the reference samples as bandwidth) against the reference
  samples. Diverged samples are first pulled back onto the sphere of radius
  twice the bound (a non-finite one onto its first axis), so both metrics
  stay finite and still charge a divergence.
"""
from __future__ import annotations

import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from divlab import diffusion
from divlab import divergences
from divlab.train import metrics as metrics_lib
from experiments.diffusion_sampling import plots
from experiments.diffusion_sampling import problems


def _sampler(problem, solver: str):
  """``(params, x_T, labels, ws, grid, num_steps) -> [W, B, d]`` samples, jitted.

  ``grid`` is a padded `SamplingGrid` and ``num_steps`` the steps taken on it;
  both are traced, so one compiled program serves every NFE whose grid has
  the same padded length.
  """
  guided_eps = problem["guided_eps"]

  def one_scale(params, x_T, labels, w, grid, num_steps):
    eps_fn = lambda x, t: guided_eps(params, x, t, labels, w)
    return diffusion.sample_on_grid(solver, eps_fn, x_T, grid, num_steps=num_steps)

  return jax.jit(jax.vmap(one_scale, in_axes=(None, None, None, 0, None, None)))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _padded_grids(schedule, spacing: str, step_counts: tuple[int, ...], max_steps: int):
  """The grids of ``step_counts`` steps, each padded to ``max_steps``: one small
  program per (spacing, step counts), shared by the problems and solvers."""
  return [diffusion.padded_sampling_grid(schedule, n, max_steps, spacing)
          for n in step_counts]


def _step_counts(config) -> dict[str, tuple[int, ...]]:
  """Solver -> the step counts it runs; DDIM also runs the reference."""
  nfes = tuple(sorted({int(n) for n in config.nfes}))
  counts = {solver: nfes for solver in config.solvers}
  counts["ddim"] = tuple(sorted(set(counts.get("ddim", ())) | {int(config.reference_nfe)}))
  return counts


def _pull_back(x: jax.Array, radius: float) -> jax.Array:
  """Rows beyond ``radius`` (or not finite) moved onto the sphere of ``radius``."""
  finite = jnp.all(jnp.isfinite(x), axis=-1, keepdims=True)
  x = jnp.where(finite, x, jnp.zeros_like(x).at[..., 0].set(radius))
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return jnp.where(norm > radius, x * (radius / norm), x)


@jax.jit
def _group_metrics(x, reference, key, bandwidth, bound):
  """Metrics of ``x [G, n, d]`` against ``reference [G, n, d]``, per group."""
  norms = jnp.linalg.norm(x, axis=-1)
  diverged = jnp.mean(~jnp.isfinite(norms) | (norms > bound), axis=-1)
  x = _pull_back(x, 2.0 * bound)
  keys = jax.random.split(key, x.shape[0])
  sliced = jax.vmap(lambda a, b, k: divergences.sliced_wasserstein(a, b, k))(
      x, reference, keys)
  mmd = jax.vmap(lambda a, b: divergences.mmd(a, b, bandwidth))(x, reference)
  return diverged, sliced, mmd


def sweep(problem, config, schedule, bar) -> tuple[list[dict], dict]:
  """All (solver, NFE, w) runs on one problem: per-seed records and pictures."""
  groups, per_group = int(config.num_seeds), int(config.samples_per_seed)
  total = groups * per_group
  dim = int(np.prod(problem["shape"]))
  key = jax.random.key(int(config.seed))
  x_T = jax.random.normal(key, (total, dim))
  labels = jnp.arange(total) % problem["num_classes"]
  ws = jnp.asarray([float(w) for w in config.guidance])
  params = problem["params"]
  runs = {}
  for solver, counts in _step_counts(config).items():
    grids = _padded_grids(schedule, diffusion.default_spacing(solver), counts, max(counts))
    runs[solver] = (_sampler(problem, solver), dict(zip(counts, grids)))

  def solve(solver, nfe):
    sampler, grids = runs[solver]
    return sampler(params, x_T, labels, ws, grids[nfe], nfe)

  reference = solve("ddim", int(config.reference_nfe))
  reference = np.asarray(reference).reshape(len(ws), groups, per_group, dim)
  ref_flat = reference[0, 0]
  pair = np.linalg.norm(ref_flat[:, None] - ref_flat[None], axis=-1)
  bandwidth = float(np.median(pair[np.triu_indices(per_group, 1)]))
  # A percentile, not the maximum: a handful of outlying reference samples
  # must not lift the bound for everyone.
  reference_norm = np.percentile(
      np.linalg.norm(reference, axis=-1).reshape(len(ws), -1), 99, axis=1)
  bounds = np.maximum(float(problem["diverged_norm"]),
                      float(problem["reference_scale"]) * reference_norm)
  shown = [float(w) for w in config.guidance].index(float(config.picture_guidance))
  records, pictures = [], {"reference": reference[shown, 0]}
  metric_key = jax.random.key(int(config.seed) + 1)
  for solver in config.solvers:
    for nfe in config.nfes:
      out = solve(solver, int(nfe))
      out = np.asarray(out).reshape(len(ws), groups, per_group, dim)
      for wi, w in enumerate(config.guidance):
        diverged, sliced, mmd = jax.device_get(_group_metrics(
            out[wi], reference[wi], metric_key, bandwidth, bounds[wi]))
        for g in range(groups):
          records.append({"model": problem["name"], "solver": solver, "nfe": int(nfe),
                          "guidance": float(w), "seed": g,
                          "diverged_frac": float(diverged[g]),
                          "sliced_w": float(sliced[g]), "mmd": float(mmd[g])})
      if int(nfe) == int(config.picture_nfe):
        pictures[solver] = out[shown, 0]
      bar.update(1)
  return records, {"samples": pictures, "bandwidth": bandwidth,
                   "bounds": {float(w): float(b) for w, b in zip(config.guidance, bounds)}}


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[dict]:
  """Runs the sweep on every configured model; writes tables and figures."""
  workdir = pathlib.Path(workdir)
  if not config.models:
    raise ValueError("`models` must name at least one problem.")
  for name in ("solvers", "nfes", "guidance"):
    if not list(config[name]):
      raise ValueError(f"`{name}` must not be empty.")
  if int(config.picture_nfe) not in [int(n) for n in config.nfes]:
    raise ValueError(f"`picture_nfe`={config.picture_nfe} must be one of `nfes`.")
  if float(config.picture_guidance) not in [float(w) for w in config.guidance]:
    raise ValueError(f"`picture_guidance`={config.picture_guidance} must be one of "
                     "`guidance`.")
  schedule = diffusion.linear_schedule()
  records, extras, timings = [], {}, {}
  built = {name: problems.build(name, spec, config, workdir)
           for name, spec in config.models.items()}
  bar = tqdm.tqdm(total=len(built) * len(config.solvers) * len(config.nfes),
                  desc="diffusion sweep", unit="(solver, nfe)", dynamic_ncols=True,
                  disable=not config.progress)
  for name, problem in built.items():
    start = time.perf_counter()
    model_records, extras[name] = sweep(problem, config, schedule, bar)
    records += model_records
    timings[name] = time.perf_counter() - start
  bar.close()
  rows = metrics_lib.aggregate_seeds(records, keys=("model", "solver", "nfe", "guidance"),
                                     metrics=("diverged_frac", "sliced_w", "mmd"))
  metrics_lib.write_results(workdir, rows, title="Diffusion sampling sweep")
  text = plots.results_markdown(rows, config, extras)
  metrics_lib.write_text(workdir / "results.md", text)
  metrics_lib.write_json(workdir / "timings.json", timings, indent=2)
  plots.artifact_curves(rows, config, workdir / "artifacts.png")
  for name, problem in built.items():
    plots.sample_pictures(extras[name]["samples"], problem, config,
                          workdir / f"samples_{name}.png")
  print(text)
  return rows
