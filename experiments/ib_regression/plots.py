"""Figures of the family: the beta sweep, the information plane, the two-Gaussian toy."""
from __future__ import annotations

import collections
import pathlib
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from divlab.train import figures
from experiments.ib_regression import methods as methods_lib


def _grouped(records: Sequence[dict], value) -> dict:
  """``{(dataset, method, beta): [value(record) for each seed]}``."""
  grouped = collections.defaultdict(list)
  for r in records:
    grouped[(r["dataset"], r["method"], r["beta"])].append(value(r))
  return grouped


def _betas(grouped: dict, dataset: str, method: str) -> list[float]:
  return sorted(b for (d, m, b) in grouped if d == dataset and m == method)


def _dataset_panels(datasets: Sequence[str], panel_height: float):
  """One panel per dataset, up to three a row; returns (fig, panels, spare panels)."""
  columns = min(3, len(datasets))
  rows = int(np.ceil(len(datasets) / columns))
  fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, panel_height * rows),
                           squeeze=False)
  flat = list(axes.flat)
  for ax in flat[len(datasets):]:
    ax.axis("off")
  for ax, dataset in zip(flat, datasets):
    ax.set_title(dataset, fontsize=9)
  return fig, flat[:len(datasets)], flat[len(datasets):]


def beta_sweep(path: pathlib.Path, records: Sequence[dict],
               datasets: Sequence[str], methods: Sequence[str]) -> dict:
  """Test RMSE against beta (log axis) per method: one panel per dataset.

  Each point is the mean over seeds of the test RMSE at the validation-selected
  step, with the sample standard deviation (ddof = 1) as its error bar. MSE,
  which has no beta, is a dashed horizontal line at its mean, so a method
  below it at some beta beats plain regression there.

  Returns:
    ``{(dataset, method): (betas, means, stds)}``, the drawn series.
  """
  grouped = _grouped(records, lambda r: r["test_rmse"])
  fig, panels, spare = _dataset_panels(datasets, 3.6)
  colours = plt.get_cmap("tab10")
  drawn = {}
  for dataset, ax in zip(datasets, panels):
    for index, method in enumerate(methods):
      betas = _betas(grouped, dataset, method)
      if not betas:
        continue
      values = [np.asarray(grouped[(dataset, method, b)]) for b in betas]
      means = np.array([v.mean() for v in values])
      stds = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in values])
      drawn[(dataset, method)] = (np.array(betas), means, stds)
      label = methods_lib.LABELS[method]
      if method == "mse":
        ax.axhline(means[0], color="k", ls="--", lw=1, label=label)
        continue
      ax.errorbar(betas, means, yerr=stds, fmt="o-", color=colours(index), ms=3,
                  capsize=2, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("β")
    ax.set_ylabel("test RMSE (original units)")
  # The legend goes into a spare panel when there is one, off the data.
  legend_ax = spare[-1] if spare else panels[0]
  legend_ax.legend(*panels[0].get_legend_handles_labels(), fontsize=7,
                   loc="center" if spare else "best")
  fig.tight_layout()
  figures.save_figure(fig, path, dpi=120)
  return drawn


def information_plane(path: pathlib.Path, records: Sequence[dict],
                      datasets: Sequence[str], methods: Sequence[str]) -> None:
  """I(X;T) (x-axis) vs I(Y;T) per beta: seed means, one panel per dataset.

  Each method is one line through its betas (in increasing order, the
  largest beta labelled); MSE is a single point.
  """
  grouped = _grouped(records, lambda r: (r["i_xt"], r["i_yt"]))
  fig, panels, _ = _dataset_panels(datasets, 3.8)
  colours = plt.get_cmap("tab10")
  for dataset, ax in zip(datasets, panels):
    for index, method in enumerate(methods):
      betas = _betas(grouped, dataset, method)
      if not betas:
        continue
      points = np.array([np.mean(grouped[(dataset, method, b)], axis=0)
                         for b in betas])
      ax.plot(points[:, 0], points[:, 1], "o-", color=colours(index), ms=4,
              label=methods_lib.LABELS[method])
      if len(betas) > 1:
        ax.annotate(f"β={betas[-1]:g}", points[-1], fontsize=7,
                    color=colours(index), xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("I(X;T)  (normalised CS-QMI)")
    ax.set_ylabel("I(Y;T)  (normalised CS-QMI)")
  panels[0].legend(fontsize=7)
  fig.tight_layout()
  figures.save_figure(fig, path, dpi=120)


def two_gaussians(path: pathlib.Path, target: np.ndarray, before: np.ndarray,
                  after: np.ndarray, title_after: str) -> None:
  """Side-by-side scatter of the free points before and after optimisation."""
  fig, axes = plt.subplots(1, 2, figsize=(9, 4.4), sharex=True, sharey=True)
  for ax, points, title in ((axes[0], before, "Before optimisation"),
                            (axes[1], after, title_after)):
    ax.plot(target[:, 0], target[:, 1], "kx", ms=4, label="target samples")
    ax.plot(points[:, 0], points[:, 1], "b.", ms=4, label="free points")
    ax.set_xlim(-10, 10)
    ax.set_ylim(-10, 10)
    ax.set_aspect("equal")
    ax.set_title(title)
  axes[0].legend(loc="upper left", fontsize=8)
  fig.tight_layout()
  figures.save_figure(fig, path, dpi=120)
