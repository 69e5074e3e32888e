"""Preference optimisation (DPO and its divergence, token-level and
reference-free variants).

``config.setting`` picks the experiment:

* ``"enumerable"`` (`experiments.alignment.enumerable`): every completion of a
  tiny autoregressive policy enumerated, each loss trained on its exact
  expectation over Bradley-Terry pairs; exact reward, KL, coverage and SeqKL;
  f-DPO's closed-form optimum.
* ``"task"`` (`experiments.alignment.task`): a small TransformerLM trained by
  SFT on a verifiable language task, then by the preference losses on pairs
  sampled from it and labelled by the task reward.
"""
from __future__ import annotations

import pathlib

import ml_collections


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path):
  """Runs the experiment named by ``config.setting``."""
  setting = config.get("setting", "")
  if setting == "enumerable":
    from experiments.alignment import enumerable  # pylint: disable=g-import-not-at-top
    return enumerable.run(config, workdir)
  if setting == "task":
    from experiments.alignment import task  # pylint: disable=g-import-not-at-top
    return task.run(config, workdir)
  raise ValueError(f"`setting`={setting!r}: use 'enumerable' or 'task'.")


__all__ = ["run"]
