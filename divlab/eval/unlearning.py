"""KLoM: KL divergence of margins between unlearned and oracle models (numpy).

For every evaluation point, N unlearned models and N' oracle models (models
retrained without the forget set) each give a margin (`divlab.eval.margins`);
KLoM compares the two empirical margin distributions with a histogram KL.
It runs on host in float64 numpy: it is an evaluation over stored margins,
not a training objective, and it is not differentiable (binning).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["klom", "klom_summary"]


def _margins(values, name: str) -> np.ndarray:
  values = np.asarray(values, dtype=np.float64)
  if values.ndim != 2 or values.shape[0] == 0:
    raise ValueError(f"`{name}` must have shape [num_models, num_points] with at "
                     f"least one model, got {values.shape}.")
  if np.isnan(values).any():
    raise ValueError(f"`{name}` contains NaN.")
  return values


def _bin_counts(samples: np.ndarray, low: np.ndarray, high: np.ndarray,
                num_bins: int) -> np.ndarray:
  """Per-column histogram counts, ``[M, num_bins]``, with np.histogram's bins.

  Column m uses ``num_bins`` equal bins over ``[low[m], high[m]]``: every bin
  is half-open ``[e_i, e_{i+1})`` except the last, which is closed, so every
  sample is counted. Indices come from the same edges (``np.linspace``) and
  the same off-by-one corrections as ``np.histogram``, so the counts agree
  exactly with ``np.histogram(column, num_bins, range=(low, high))``.
  """
  num_points = samples.shape[1]
  edges = np.linspace(low, high, num_bins + 1, axis=-1)  # [M, B + 1]
  columns = np.broadcast_to(np.arange(num_points), samples.shape)
  index = ((samples - low) / (high - low) * num_bins).astype(np.intp)
  index = np.clip(index, 0, num_bins - 1)
  # Floating-point rounding can put a sample one bin off; fix it with the edges.
  index -= samples < edges[columns, index]
  index += (samples >= edges[columns, index + 1]) & (index != num_bins - 1)
  counts = np.zeros((num_points, num_bins))
  np.add.at(counts, (columns, index), 1.0)
  return counts


def klom(unlearned_margins,
         oracle_margins,
         *,
         num_bins: int = 20,
         clip: float = 100.0,
         floor: float = 1e-5) -> np.ndarray:
  """KL divergence of margins, per evaluation point: KL(P_unlearned || P_oracle).

  For each point (column) m:

  1. clip both margin samples to ``[-clip, clip]``;
  2. take ``num_bins`` equal-width bins over the joint range ``[lo, hi]`` of
     the two samples (``hi = lo + 1`` when all margins coincide);
  3. histogram each sample into probabilities ``p`` (unlearned) and ``q``
     (oracle);
  4. floor ``q`` at ``floor`` in the bins where ``p > 0``, renormalise it, and
     return ``sum_b p_b log(p_b / q_b)`` (terms with ``p_b = 0`` are 0).

  Follows the released KLoM code of Georgiev et al., "Attribute-to-Delete:
  Machine Unlearning via Datamodel Matching" (2024), including its
  floor-then-renormalise step (``scipy.stats.entropy`` normalises ``qk``),
  with one deliberate difference: the released code bins with ``np.digitize``
  over ``num_bins + 1`` edges and then drops every sample equal to the joint
  maximum (it falls past the last edge); here the last bin is closed, as in
  ``np.histogram``, so all samples count. They agree whenever no sample sits
  at the joint maximum; when every unlearned margin is the maximum, the
  released code returns NaN and this one a finite value.

  Args:
    unlearned_margins: ``[N, M]`` margins of N unlearned models on M points.
    oracle_margins: ``[N', M]`` margins of N' oracle models on the same points.
    num_bins: number of bins (a Python int >= 1); the paper uses 20.
    clip: clipping bound (> 0); the paper uses 100.
    floor: floor of the oracle probabilities, in ``(0, 1)``; the paper uses
      1e-5, which caps a point's KLoM near ``log(1 / floor) = 11.5``.

  Returns:
    ``[M]`` float64 array of KLoM values (>= 0; 0 = indistinguishable).

  Example:
    >>> klom([[0.0], [0.0], [1.0], [3.0]], [[0.0], [1.0], [2.0], [4.0]],
    ...      num_bins=4)  # p = (.5, .25, 0, .25), q = (.25,) * 4: 0.5 log 2
    array([0.34657359])
  """
  if not isinstance(num_bins, int) or isinstance(num_bins, bool) or num_bins < 1:
    raise ValueError(f"`num_bins` must be a Python int >= 1, got {num_bins!r}.")
  if not clip > 0:
    raise ValueError(f"`clip` must be positive, got {clip!r}.")
  if not 0 < floor < 1:
    raise ValueError(f"`floor` must lie in (0, 1), got {floor!r}.")
  unlearned = _margins(unlearned_margins, "unlearned_margins")
  oracle = _margins(oracle_margins, "oracle_margins")
  if unlearned.shape[1] != oracle.shape[1]:
    raise ValueError("`unlearned_margins` and `oracle_margins` must cover the same "
                     f"points, got {unlearned.shape[1]} and {oracle.shape[1]} "
                     "columns.")
  unlearned = np.clip(unlearned, -clip, clip)
  oracle = np.clip(oracle, -clip, clip)
  low = np.minimum(unlearned.min(axis=0), oracle.min(axis=0))
  high = np.maximum(unlearned.max(axis=0), oracle.max(axis=0))
  high = np.where(low >= high, low + 1.0, high)
  p = _bin_counts(unlearned, low, high, num_bins) / unlearned.shape[0]
  q = _bin_counts(oracle, low, high, num_bins) / oracle.shape[0]
  q = np.where(p > 0, np.maximum(q, floor), q)
  q = q / q.sum(axis=-1, keepdims=True)
  safe_q = np.where(p > 0, q, 1.0)
  terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / safe_q), 0.0)
  return terms.sum(axis=-1)


def klom_summary(values,
                 percentiles: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
  """Mean and percentiles of per-point KLoM values.

  The DMM paper reports KLoM per split (forget / retain / validation) as a
  high percentile over points (the 95th in its tables): unlearning must work
  for nearly every point, not on average.

  Args:
    values: ``[M]`` per-point values, e.g. from `klom`.
    percentiles: percentiles in ``[0, 100]`` (numpy's linear interpolation).

  Returns:
    ``{'mean': ..., 'p50': ..., 'p95': ..., ...}`` of Python floats; a
    fractional percentile such as 99.9 is keyed ``'p99.9'``.

  Example:
    >>> klom_summary(np.arange(101.0), percentiles=(50, 95))
    {'mean': 50.0, 'p50': 50.0, 'p95': 95.0}
  """
  values = np.asarray(values, dtype=np.float64)
  if values.ndim != 1 or values.size == 0:
    raise ValueError(f"`values` must be a non-empty 1-D array, got shape "
                     f"{values.shape}.")
  if np.isnan(values).any():
    raise ValueError("`values` contains NaN.")
  percentiles = tuple(percentiles)
  for pct in percentiles:
    if not 0 <= pct <= 100:
      raise ValueError(f"`percentiles` must lie in [0, 100], got {pct!r}.")
  summary = {"mean": float(values.mean())}
  for pct in percentiles:
    key = f"p{int(pct)}" if float(pct).is_integer() else f"p{pct}"
    summary[key] = float(np.percentile(values, pct))
  return summary
