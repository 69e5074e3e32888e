"""Central differences of float64 numpy functions: the gradient references of the tests.

Imported as ``from finite_differences import central_differences`` (pytest puts
this folder, the one holding ``conftest.py``, on ``sys.path``).
"""
import numpy as np


def central_differences(fn, x, step=1e-6):
  """d fn(x) / dx of a scalar numpy function, one entry at a time, in float64.

  Each entry is (fn(x + step e_i) - fn(x - step e_i)) / (2 step): error
  O(step^2) from the function's curvature plus O(eps |fn| / step) from
  rounding, so `step` is chosen per test from the scale of `x` (1e-6 for
  logits of order 1, larger for logits of 1e4).
  """
  x = np.asarray(x, np.float64)
  grad = np.zeros_like(x)
  for index in np.ndindex(x.shape):
    up, down = x.copy(), x.copy()
    up[index] += step
    down[index] -= step
    grad[index] = (fn(up) - fn(down)) / (2 * step)
  return grad
