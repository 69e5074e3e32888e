"""Metrics of sampled answers (numpy, host)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["pass_at_k"]


def pass_at_k(num_correct: np.ndarray, num_samples: int, ks: Sequence[int]) -> np.ndarray:
  """Unbiased pass@k from n samples per problem (Chen et al. 2021, Codex).

  ``pass@k = 1 - C(n - c, k) / C(n, k)``, the probability that at least one
  of k samples drawn without replacement from the n is correct, averaged over
  problems; computed as a product to stay finite for large n.

  Args:
    num_correct: ``[P]`` correct samples c of each problem.
    num_samples: n, samples per problem (>= max k).
    ks: the k values.

  Returns:
    ``[len(ks)]`` mean pass@k over problems.

  Example:
    >>> pass_at_k(np.array([0, 1, 4]), 4, (1, 4)).round(4).tolist()
    [0.4167, 0.6667]
  """
  c = np.asarray(num_correct, np.int64)
  n = int(num_samples)
  if np.any(c < 0) or np.any(c > n):
    raise ValueError(f"`num_correct` must lie in [0, {n}].")
  out = []
  for k in ks:
    if not 1 <= int(k) <= n:
      raise ValueError(f"`ks` must lie in [1, num_samples={n}], got {k}.")
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i).
    fail = np.array([np.prod(1.0 - k / np.arange(n - ci + 1, n + 1)) if n - ci >= k else 0.0
                     for ci in c])
    out.append(float(np.mean(1.0 - fail)))
  return np.array(out)
