"""Tables and pictures of the sweep: pivoted Markdown, metric-vs-NFE curves, samples."""
from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from divlab.train import figures  # pylint: disable=g-import-not-at-top,wrong-import-position

METRICS = (("diverged_frac", "fraction diverged", ".2f"),
           ("sliced_w", "sliced W2 to the reference", ".3f"),
           ("mmd", "MMD^2 to the reference", ".1e"))


def results_markdown(rows, config, extras) -> str:
  """Per model and metric: rows (guidance, solver), columns NFE, mean ± std."""
  nfes = [int(n) for n in config.nfes]
  lines = ["# Diffusion sampling: divergence artifacts vs NFE", ""]
  by_key = {(r["model"], r["solver"], r["nfe"], r["guidance"]): r for r in rows}
  for model in config.models:
    info = extras[model]
    lines += [f"## {model}", "",
              "Diverged: norm not finite or above the bound, per guidance w: "
              + ", ".join(f"w={w:g}: {b:.3g}" for w, b in info["bounds"].items())
              + f". MMD bandwidth "
              f"{info['bandwidth']:.3g} (median reference distance). Mean ± std over "
              f"{config.num_seeds} groups of {config.samples_per_seed} samples.", ""]
    for metric, title, digits in METRICS:
      lines += [f"### {title}", "",
                "| w | solver | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
                "|---|---|" + "---|" * len(nfes)]
      for w in config.guidance:
        for solver in config.solvers:
          cells = []
          for n in nfes:
            r = by_key[(model, solver, n, float(w))]
            cells.append(f"{r[metric]:{digits}} ± {r[metric + '_std']:{digits}}")
          lines.append(f"| {w:g} | {solver} | " + " | ".join(cells) + " |")
      lines.append("")
  return "\n".join(lines)


def artifact_curves(rows, config, path: pathlib.Path) -> None:
  """Sliced W and diverged fraction vs NFE: one row of panels per model."""
  models = list(config.models)
  scales = [float(w) for w in config.guidance]
  fig, axes = plt.subplots(2 * len(models), len(scales),
                           figsize=(3.6 * len(scales), 2.8 * 2 * len(models)),
                           squeeze=False)
  for mi, model in enumerate(models):
    for wi, w in enumerate(scales):
      for ri, (metric, title, _) in enumerate(METRICS[:2]):
        ax = axes[2 * mi + ri, wi]
        for solver in config.solvers:
          sub = sorted((r for r in rows if r["model"] == model and r["solver"] == solver
                        and r["guidance"] == w), key=lambda r: r["nfe"])
          ax.errorbar([r["nfe"] for r in sub], [r[metric] for r in sub],
                      yerr=[r[metric + "_std"] for r in sub], marker="o", ms=3,
                      capsize=2, label=solver)
        if metric == "sliced_w":
          ax.set_yscale("log")
        ax.set_title(f"{model}, w = {w:g}", fontsize=9)
        ax.set_xlabel("NFE", fontsize=8)
        ax.set_ylabel(title, fontsize=8)
  axes[0, -1].legend(fontsize=7)
  fig.tight_layout()
  figures.save_figure(fig, path, dpi=110)


def sample_pictures(samples, problem, config, path: pathlib.Path) -> None:
  """Samples per solver at ``picture_nfe`` and ``picture_guidance``."""
  names = list(samples)
  fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 2.8), squeeze=False)
  bound = 2.0 * max(problem["diverged_norm"], float(np.nanmax(np.linalg.norm(
      np.nan_to_num(np.asarray(samples["reference"])), axis=-1))))
  for ax, name in zip(axes[0], names):
    x = np.asarray(samples[name])
    title = name if name == "reference" else f"{name}, NFE {config.picture_nfe}"
    if problem["images"]:
      tiles = np.clip((x[:16].reshape(-1, 8, 8) + 1) / 2, 0, 1)
      tiles = np.nan_to_num(tiles)
      grid = tiles.reshape(4, 4, 8, 8).transpose(0, 2, 1, 3).reshape(32, 32)
      ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1)
      ax.set_xticks([])
      ax.set_yticks([])
    else:
      finite = np.all(np.isfinite(x), axis=1)
      shown = np.clip(x[finite][:, :2], -bound, bound)
      ax.scatter(shown[:, 0], shown[:, 1], s=2, alpha=0.5)
      ax.set_xlim(-bound, bound)
      ax.set_ylim(-bound, bound)
      ax.set_aspect("equal")
    ax.set_title(title, fontsize=8)
  fig.suptitle(f"{problem['name']}: w = {float(config.picture_guidance):g}", fontsize=9)
  fig.tight_layout()
  figures.save_figure(fig, path, dpi=110)
