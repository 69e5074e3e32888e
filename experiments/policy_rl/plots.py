"""Figures of the policy-RL family (matplotlib, Agg backend)."""
from __future__ import annotations

import pathlib
from typing import Mapping, Sequence

import numpy as np

from divlab.train import figures


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _pass_at_k(q: np.ndarray, k: np.ndarray) -> np.ndarray:
  return np.mean(1 - (1 - np.clip(q, 0, 1)[None]) ** k[:, None], axis=-1)


def exact_figures(workdir: pathlib.Path, dph: Mapping[str, Mapping[str, np.ndarray]],
                  off_policy: Mapping[str, Mapping[str, np.ndarray]], ks: Sequence[int],
                  level: float, off_labels: Mapping[str, str]) -> None:
  """``dph_pass_at_k.png``: held-out pass@k vs k at matched train pass@1 (seed
  0; ``dph`` maps a label to a trajectory); ``off_policy.png``: |W| and train pass@1 over steps (seed 0)."""
  plt = _pyplot()
  k = np.unique(np.geomspace(1, max(ks), 32).astype(int))
  fig, ax = plt.subplots(figsize=(5.5, 4))
  first = next(iter(dph.values()))
  ax.plot(k, _pass_at_k(first["q_test"][0, 0], k), "k--", label="pi_0")
  for method, t in dph.items():
    q_train = t["q_train"][0].mean(-1)
    reached = np.flatnonzero(q_train >= level - 1e-9)
    step = reached[0] if len(reached) else len(q_train) - 1
    ax.plot(k, _pass_at_k(t["q_test"][0, step], k), label=f"{method}, step {step}")
  ax.set_xscale("log")
  ax.set_xlabel("k")
  ax.set_ylabel("held-out pass@k (exact)")
  ax.set_title(f"matched train pass@1 = {level:.3f}")
  ax.legend(fontsize=7)
  fig.tight_layout()
  figures.save_figure(fig, workdir / "dph_pass_at_k.png", dpi=120)

  fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
  for method, t in off_policy.items():
    left.plot(t["norm"][0], label=off_labels[method])
    right.plot(t["q_train"][0].mean(-1), label=off_labels[method])
  left.set_yscale("log")
  left.set_xlabel("Adam step")
  left.set_ylabel("|W|_F")
  right.set_xlabel("Adam step")
  right.set_ylabel("train pass@1")
  left.legend(fontsize=7)
  fig.tight_layout()
  figures.save_figure(fig, workdir / "off_policy.png", dpi=120)


def task_figure(path: pathlib.Path, rows: Sequence[Mapping[str, float]],
                ks: Sequence[int]) -> None:
  """Held-out pass@k vs k per method (mean over seeds, std as a band)."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for row in rows:
    mean = np.array([row[f"pass@{k}"] for k in ks])
    std = np.array([row.get(f"pass@{k}_std", 0.0) for k in ks])
    ax.plot(ks, mean, marker="o", markersize=3, label=row["label"])
    ax.fill_between(ks, mean - std, mean + std, alpha=0.15)
  ax.set_xscale("log")
  ax.set_xlabel("k")
  ax.set_ylabel("held-out pass@k (unbiased estimate)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  figures.save_figure(fig, path, dpi=120)
