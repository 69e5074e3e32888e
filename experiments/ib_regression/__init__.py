"""Information-bottleneck regression: CS-IB against MSE, VIB, NIB and HSIC.

``config.task`` picks the run: ``"regression"`` (the comparison of methods x
betas x seeds on the regression datasets: test RMSE at the beta selected on a
validation split, an FGSM robustness table and the information plane) or
``"two_gaussians"`` (the paper's toy: free points moved onto two Gaussians by
gradient descent on the Cauchy-Schwarz divergence).
"""
from __future__ import annotations

import pathlib

import ml_collections

from experiments.ib_regression import experiment
from experiments.ib_regression import toy

__all__ = ["run"]

TASKS = {"regression": experiment.run, "two_gaussians": toy.run}


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path):
  """Runs ``config.task`` in ``workdir``; see the package docstring."""
  task = config.get("task", "regression")
  if task not in TASKS:
    raise ValueError(f"`task`={task!r}: choose one of {sorted(TASKS)}.")
  return TASKS[task](config, workdir)
