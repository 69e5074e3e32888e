"""The language-task setting's figure: test reward against KL to the SFT model."""
from __future__ import annotations

import pathlib
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from divlab.train import figures  # pylint: disable=g-import-not-at-top


def reward_vs_kl(path: pathlib.Path, rows: Sequence[Mapping]) -> None:
  """One point per method: mean over seeds, bars = std over seeds.

  Args:
    path: the PNG to write.
    rows: table rows with ``label``, ``reward``, ``reward_std``, ``kl``, ``kl_std``.
  """
  fig, ax = plt.subplots(figsize=(6.4, 4.6))
  colours = plt.get_cmap("tab10")
  for index, row in enumerate(rows):
    ax.errorbar(row["kl"], row["reward"], xerr=row.get("kl_std", 0.0),
                yerr=row.get("reward_std", 0.0), fmt="o", capsize=3,
                color=colours(index % 10), label=row["label"])
  ax.set_xlabel("KL(pi || pi_SFT) per completion (nats, Monte Carlo)")
  ax.set_ylabel("test reward (mean partial credit)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="best")
  fig.tight_layout()
  figures.save_figure(fig, path, dpi=120)
