"""Policy-gradient RL with divergence regularisers (GRPO family, KL
estimators, TOPR, DPH-RL).

``config.setting`` picks the experiment:

* ``"exact"`` (`experiments.policy_rl.exact`): tabular policies, every
  quantity exact by enumeration: the KL-estimator gradient table, DPH-RL's
  mass-covering divergences and pass@k, TOPR vs naive off-policy REINFORCE.
* ``"task"`` (`experiments.policy_rl.task`): a small TransformerLM trained by
  SFT on a verifiable language task, then by GRPO (no KL, k3 in the loss, k1 in
  the reward, DPH forward-KL rehearsal) and offline TOPR; pass@k on held-out
  prompts.
"""
from __future__ import annotations

import pathlib

import ml_collections


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path):
  """Runs the experiment named by ``config.setting``."""
  setting = config.get("setting", "")
  if setting == "exact":
    from experiments.policy_rl import exact  # pylint: disable=g-import-not-at-top
    return exact.run(config, workdir)
  if setting == "task":
    from experiments.policy_rl import task  # pylint: disable=g-import-not-at-top
    return task.run(config, workdir)
  raise ValueError(f"`setting`={setting!r}: use 'exact' or 'task'.")


__all__ = ["run"]
