"""Figures of the unlearning family: collapse curves, trade-offs, KLoM histograms."""
from __future__ import annotations

import pathlib
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from divlab.train import figures


def collapse(path: pathlib.Path, trajectories: Mapping[str, Mapping[str, np.ndarray]],
             labels: Mapping[str, str], *, title: str = "") -> None:
  """Forget-KL and retain-KL against steps: seed median, min-max band.

  The median, not the mean, draws the line: on a log axis a single seed that
  has already blown up would otherwise hide what the others do.

  Args:
    path: the PNG to write.
    trajectories: ``{method: {"steps": [T], "forget_kl": [T, S],
      "retain_kl": [T, S]}}`` (S seeds).
    labels: display name per method.
    title: figure title.
  """
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  colours = plt.get_cmap("tab10")
  for index, (method, curves) in enumerate(trajectories.items()):
    for ax, key in zip(axes, ("forget_kl", "retain_kl")):
      values = np.asarray(curves[key])
      ax.plot(curves["steps"], np.median(values, axis=1), color=colours(index),
              label=labels.get(method, method))
      ax.fill_between(curves["steps"], values.min(1), values.max(1),
                      color=colours(index), alpha=0.15, linewidth=0)
  for ax, name in zip(axes, ("forget distribution", "retain distribution")):
    ax.set_yscale("log")
    ax.set_xlabel("unlearning step")
    ax.set_ylabel("KL(retain-only model || model)")
    ax.set_title(name)
    ax.grid(alpha=0.3, which="both")
  axes[0].legend()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  figures.save_figure(fig, path, dpi=120)


def tradeoff(path: pathlib.Path, panels: Mapping[str, Mapping[str, dict]],
             labels: Mapping[str, str],
             references: Mapping[str, Mapping[str, tuple[float, float]]]) -> None:
  """Retain accuracy against forget accuracy along each method's trajectory.

  Args:
    path: the PNG to write.
    panels: ``{forget_set: {method: {"forget_acc": [T], "retain_acc": [T]}}}``
      (member means at each evaluation; the first point is the start).
    labels: display name per method.
    references: ``{forget_set: {name: (forget_acc, retain_acc)}}`` drawn as
      single markers (the original model, the retrained oracle).
  """
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.6),
                           squeeze=False)
  colours = plt.get_cmap("tab20")
  methods = sorted({m for curves in panels.values() for m in curves},
                   key=list(labels).index if labels else None)
  for ax, (forget_set, curves) in zip(axes[0], panels.items()):
    for method, curve in curves.items():
      colour = colours(methods.index(method) % 20)
      ax.plot(curve["forget_acc"], curve["retain_acc"], "-", color=colour,
              marker=".", ms=4, label=labels.get(method, method))
      ax.plot(curve["forget_acc"][-1], curve["retain_acc"][-1], "o", color=colour,
              ms=6)
    for (name, (f_acc, r_acc)), marker in zip(references.get(forget_set, {}).items(),
                                               ("*", "P", "X")):
      ax.plot(f_acc, r_acc, marker, color="black", ms=12, label=name, ls="none")
    ax.set_xlabel("forget accuracy")
    ax.set_ylabel("retain accuracy")
    ax.set_title(f"forget set: {forget_set}")
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=7, loc="lower right", ncol=2)
  fig.tight_layout()
  figures.save_figure(fig, path, dpi=120)


def klom_histograms(path: pathlib.Path, values: Mapping[str, np.ndarray],
                    *, title: str = "", bins: int = 30) -> None:
  """Histograms of per-point KLoM values, one line per method.

  Args:
    path: the PNG to write.
    values: ``{label: [M] per-point KLoM}``.
    title: figure title.
    bins: histogram bins over the common range.
  """
  fig, ax = plt.subplots(figsize=(6.4, 4))
  upper = max(float(np.max(v)) for v in values.values())
  edges = np.linspace(0.0, max(upper, 1e-6), bins + 1)
  for label, v in values.items():
    ax.hist(v, bins=edges, histtype="step", linewidth=1.6, label=label, density=True)
  ax.set_xlabel("KLoM per point (nats)")
  ax.set_ylabel("density")
  ax.set_yscale("log")
  ax.legend()
  if title:
    ax.set_title(title)
  fig.tight_layout()
  figures.save_figure(fig, path, dpi=120)



def klom_scaling(path: pathlib.Path, curves: Mapping[str, dict], *, title: str = "") -> None:
  """Forget-set KLoM of DMM against the number of subset models, per forget set.

  Args:
    path: the PNG to write.
    curves: ``{forget_set: {"sizes": [S], "klom_forget": [S],
      "klom_target_forget": [S], "references": {label: klom}}}``: DMM after
      unlearning, the datamodel targets themselves, and horizontal reference
      levels (the original models, independent oracles).
    title: figure title.
  """
  fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.8), squeeze=False)
  for ax, (name, curve) in zip(axes[0], curves.items()):
    ax.plot(curve["sizes"], curve["klom_forget"], "o-", label="DMM (after unlearning)")
    ax.plot(curve["sizes"], curve["klom_target_forget"], "s--",
            label="datamodel targets")
    for (label, level), style in zip(curve["references"].items(), (":", "-.")):
      ax.axhline(level, color="black", linestyle=style, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("subset models for the datamodels")
    ax.set_ylabel("KLoM on the forget set (95th pct, nats)")
    ax.set_title(name)
    ax.grid(alpha=0.3, which="both")
  axes[0][0].legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  figures.save_figure(fig, path, dpi=120)
