"""Machine unlearning: GA's collapse vs NPO, GU, oracle and datamodel matching.

``config.setup`` picks the experiment:

* ``"npo_synthetic"`` (`experiments.unlearning.synthetic`): the NPO paper's
  random-features task; KL to the retain-only model along GA / NPO
  trajectories (``collapse.png``).
* ``"classification"`` (`experiments.unlearning.experiment`): forgetting a
  random 10% or a whole class of an embedded classification set with GA,
  GradDiff, NPO, NPO+RT, SimNPO, GU, oracle matching and datamodel matching,
  scored by accuracies, MIA AUC and KLoM against retrained oracles.
* ``"dmm_scaling"`` (`experiments.unlearning.dmm_scaling`): datamodel
  matching's KLoM against the number of subset models its datamodels use.

Every training job is a resumable sub-run under ``<workdir>/runs/``.
"""
from __future__ import annotations

import pathlib

import ml_collections


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path):
  """Runs the experiment named by ``config.setup``."""
  setup = config.get("setup", "")
  if setup == "npo_synthetic":
    from experiments.unlearning import synthetic  # pylint: disable=g-import-not-at-top
    return synthetic.run(config, workdir)
  if setup == "classification":
    from experiments.unlearning import experiment  # pylint: disable=g-import-not-at-top
    return experiment.run(config, workdir)
  if setup == "dmm_scaling":
    from experiments.unlearning import dmm_scaling  # pylint: disable=g-import-not-at-top
    return dmm_scaling.run(config, workdir)
  raise ValueError(f"`setup`={setup!r}: use 'npo_synthetic', 'classification' or "
                   "'dmm_scaling'.")


__all__ = ["run"]
