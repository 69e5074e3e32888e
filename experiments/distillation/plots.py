"""The bar plot of student accuracy per method and regime."""
from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from divlab.train import figures  # pylint: disable=g-import-not-at-top,wrong-import-position


def accuracy_bars(rows, path: pathlib.Path, *, teacher_acc: float) -> None:
  """One panel per regime: mean test accuracy with ± std error bars."""
  regimes = list(dict.fromkeys(r["regime"] for r in rows))
  fig, axes = plt.subplots(1, len(regimes), figsize=(6 * len(regimes), 4.2),
                           squeeze=False, sharey=True)
  for ax, regime in zip(axes[0], regimes):
    sub = [r for r in rows if r["regime"] == regime]
    colors = ["0.55" if r["method"] == "ce" else "tab:blue" for r in sub]
    ax.bar(range(len(sub)), [r["test_acc"] for r in sub],
           yerr=[r["test_acc_std"] for r in sub], color=colors, capsize=3)
    ax.axhline(teacher_acc, color="tab:red", ls="--", lw=1, label="teacher")
    ce = [r["test_acc"] for r in sub if r["method"] == "ce"]
    if ce:
      ax.axhline(ce[0], color="0.4", ls=":", lw=1, label="CE only")
    ax.set_xticks(range(len(sub)))
    ax.set_xticklabels([r["label"] for r in sub], rotation=60, ha="right", fontsize=8)
    low = min(r["test_acc"] - r["test_acc_std"] for r in sub)
    ax.set_ylim(max(0.0, low - 0.05), min(1.0, max(teacher_acc, 0.0) + 0.03))
    ax.set_title(f"{regime} ({sub[0]['train_examples']} training examples)")
    ax.set_ylabel("student test accuracy")
    ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  figures.save_figure(fig, path, dpi=120)
