"""Loss-based membership inference (host-side numpy)."""
from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["mia_auc"]


def _losses(values, name: str) -> np.ndarray:
  values = np.asarray(values, dtype=np.float64)
  if values.ndim != 1 or values.size == 0:
    raise ValueError(f"`{name}` must be a non-empty 1-D array of per-example "
                     f"losses, got shape {values.shape}.")
  if np.isnan(values).any():
    raise ValueError(f"`{name}` contains NaN.")
  return values


def mia_auc(member_losses, nonmember_losses) -> float:
  """ROC AUC of the loss-threshold membership attack ("members have lower loss").

  ``AUC = P(l_member < l_nonmember) + 0.5 P(l_member = l_nonmember)`` over
  independent draws, i.e. the Mann-Whitney statistic of the score ``-loss``
  with members as positives. Ties count one half, which is what
  ``sklearn.metrics.roc_auc_score(labels, -losses)`` computes. 0.5 means the
  attack cannot tell the sets apart (the goal after unlearning, when
  comparing forget-set losses with held-out losses); 1 means every member has
  a lower loss than every non-member (Yeom et al., "Privacy Risk in Machine
  Learning", 2018, for the loss attack).

  Runs in numpy on host (float64, ``O(n log n)`` through ranks).

  Args:
    member_losses: ``[n_m]`` per-example losses on members (e.g. the forget set).
    nonmember_losses: ``[n_n]`` per-example losses on non-members (e.g. a
      held-out test set); ``+inf`` is allowed, NaN is not.

  Returns:
    The AUC as a Python float in ``[0, 1]``.

  Example:
    >>> mia_auc([0.1, 0.2], [0.3, 0.2])  # (1 + 1 + 1 + 0.5) / 4
    0.875
  """
  members = _losses(member_losses, "member_losses")
  nonmembers = _losses(nonmember_losses, "nonmember_losses")
  # Rank the score -loss (average ranks for ties); the members' rank sum minus
  # its minimum is the number of (member, non-member) pairs the member wins.
  ranks = stats.rankdata(-np.concatenate([members, nonmembers]), method="average")
  n_m, n_n = members.size, nonmembers.size
  wins = ranks[:n_m].sum() - n_m * (n_m + 1) / 2
  return float(wins / (n_m * n_n))
