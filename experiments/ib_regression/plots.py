"""Figures of the family: the information plane and the two-Gaussian toy."""
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


def information_plane(path: pathlib.Path, records: Sequence[dict],
                      datasets: Sequence[str], methods: Sequence[str]) -> None:
  """I(X;T) (x-axis) vs I(Y;T) per beta: seed means, one panel per dataset.

  Each method is one line through its betas (in increasing order, the
  largest beta labelled); MSE is a single point.
  """
  grouped = collections.defaultdict(list)
  for r in records:
    grouped[(r["dataset"], r["method"], r["beta"])].append((r["i_xt"], r["i_yt"]))
  columns = min(3, len(datasets))
  rows = int(np.ceil(len(datasets) / columns))
  fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.8 * rows),
                           squeeze=False)
  colours = plt.get_cmap("tab10")
  for panel, dataset in enumerate(datasets):
    ax = axes[panel // columns][panel % columns]
    for index, method in enumerate(methods):
      betas = sorted(b for (d, m, b) in grouped if d == dataset and m == method)
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
    ax.set_title(dataset, fontsize=9)
    ax.set_xlabel("I(X;T)  (normalised CS-QMI)")
    ax.set_ylabel("I(Y;T)  (normalised CS-QMI)")
  for panel in range(len(datasets), rows * columns):
    axes[panel // columns][panel % columns].axis("off")
  axes[0][0].legend(fontsize=7)
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
