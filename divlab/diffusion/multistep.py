"""Linear multistep coefficients (Adams-Bashforth, GHVB) and solver names.

Both families advance `x_{n+1} = x_n + delta * sum_i c_i y_{n-i}`, where `y` is
the history of noise predictions (Adams-Bashforth / PLMS, optionally followed
by heavy-ball averaging) or of heavy-ball velocities (GHVB). The coefficients
are derived exactly in rational arithmetic from the backward-difference form

    Delta x_{n+1} = delta (sum_j gamma_j Delta^j) f_n,
    gamma = 1, 1/2, 5/12, 3/8, 251/720, ...   (sum_{i<=j} gamma_i / (j+1-i) = 1),

so any order is available and beta = 1 gives the same floats as plain
Adams-Bashforth.

GHVB (Wizadwongsa et al. 2023, Sec. 4.2): with the velocity
`v_{n+1} = (1 - beta) v_n + beta f_n`, i.e. `(beta + (1-beta) Delta) v_{n+1} = beta f_n`,
multiply the Adams-Bashforth series by `(beta + (1-beta) Delta)` and keep k terms:

    Delta x_{n+1} = delta sum_{j<k} (a_j / beta) Delta^j v_{n+1},
    a_j = beta gamma_j + (1 - beta) gamma_{j-1}        (gamma_{-1} = 0).

For k = 4 this is the paper's `[(46+9b) v_n - (78-19b) v_{n-1} + (42-5b) v_{n-2}
- (10-b) v_{n-3}] / (24 b)`; k = 1 is Euler with heavy-ball momentum.

Solver names (shared by `samplers.sample` and `stability`):
  'ddim'            DDIM (eta = 0) = PLMS order 1.
  'plms<k>'         PLMS / Adams-Bashforth of order k on eps, e.g. 'plms4'.
  'hb<o>'           PLMS with Polyak heavy ball, momentum number o: order
                    k = ceil(o), damping beta = o - (k - 1) (beta = 1 for integer o),
                    e.g. 'hb3.8' = PLMS4 with beta 0.8.
  'ghvb<o>'         generalised heavy ball, same reading of o, e.g. 'ghvb3.8'.
  'dpmpp2m'         DPM-Solver++(2M).
  'dpmpp2m_hb<b>'   DPM-Solver++(2M) with heavy ball, damping b, e.g. 'dpmpp2m_hb0.8'.

References:
  Wizadwongsa, Chinchuthakun, Khungurn, Raj, Suwajanakorn. Diffusion Sampling
  with Momentum for Mitigating Divergence Artifacts (ICLR 2024); the authors'
  `AdamBmixer` and PLMS/GHVB schedulers were read to check these formulas.
  Liu et al. Pseudo Numerical Methods for Diffusion Models on Manifolds (2022).
"""
from __future__ import annotations

import fractions
import math
import re
from typing import NamedTuple

import numpy as np

__all__ = [
    "MAX_ORDER",
    "SolverSpec",
    "parse_solver",
    "adams_bashforth_coefficients",
    "ghvb_coefficients",
    "multistep_coefficients",
]

MAX_ORDER = 6
FAMILIES = ("plms", "hb", "ghvb", "dpmpp2m", "dpmpp2m_hb")

Fraction = fractions.Fraction


def _adams_bashforth_gammas(order: int) -> list[Fraction]:
  """Backward-difference coefficients gamma_0 .. gamma_{order-1} (exact)."""
  gammas: list[Fraction] = []
  for j in range(order):
    gammas.append(1 - sum(gammas[i] / (j + 1 - i) for i in range(j)))
  return gammas


def _expand_backward_differences(series: list[Fraction]) -> list[Fraction]:
  """Coefficients of y_n, y_{n-1}, ... in sum_j series[j] Delta^j y_n."""
  coeffs = [Fraction(0)] * len(series)
  for j, s_j in enumerate(series):
    for i in range(j + 1):
      coeffs[i] += s_j * (-1) ** i * math.comb(j, i)
  return coeffs


def _check_order(order: int) -> None:
  if not isinstance(order, (int, np.integer)) or not 1 <= order <= MAX_ORDER:
    raise ValueError(f"`order` must be an integer in [1, {MAX_ORDER}], got {order!r}.")


def _check_beta(beta: float) -> None:
  if not 0 < beta <= 1:
    raise ValueError(f"`beta` must lie in (0, 1], got {beta!r}.")


def adams_bashforth_coefficients(order: int) -> tuple[float, ...]:
  """Adams-Bashforth weights c_0..c_{k-1} of f_n, f_{n-1}, ..., f_{n-k+1}.

  x_{n+1} = x_n + delta sum_i c_i f_{n-i}; e.g. order 4 gives (55, -59, 37, -9)/24.

  Args:
    order: k in [1, MAX_ORDER].

  Returns:
    A tuple of k floats (rounded once from exact rationals).
  """
  _check_order(order)
  return tuple(float(c) for c in _expand_backward_differences(_adams_bashforth_gammas(order)))


def ghvb_coefficients(order: int, beta: float) -> tuple[float, ...]:
  """GHVB weights c_0..c_{k-1} of v_{n+1}, v_n, ..., v_{n-k+2} (module docstring).

  x_{n+1} = x_n + delta sum_i c_i v_{n+1-i}; order 4 gives
  ((46+9b), -(78-19b), (42-5b), -(10-b)) / (24 b). beta = 1 returns exactly
  `adams_bashforth_coefficients(order)`.

  Args:
    order: k in [1, MAX_ORDER].
    beta: damping in (0, 1].

  Returns:
    A tuple of k floats (rounded once from exact rationals in beta's binary value).
  """
  _check_order(order)
  _check_beta(beta)
  b = Fraction(beta)
  gammas = _adams_bashforth_gammas(order)
  series = [(b * gammas[j] + (1 - b) * (gammas[j - 1] if j else 0)) / b for j in range(order)]
  return tuple(float(c) for c in _expand_backward_differences(series))


def multistep_coefficients(family: str, order: int, beta: float = 1.0) -> np.ndarray:
  """Warm-up table: row r holds the weights used while only r + 1 values exist.

  The first steps of a k-step method have fewer than k past values; like the
  authors' code, they use the same family at the lower order min(k, n + 1):
  Adams-Bashforth of lower order for 'plms' and 'hb', GHVB of lower order with
  the same beta for 'ghvb'. Row r is zero-padded to length k.

  Args:
    family: 'plms', 'hb' (both Adams-Bashforth weights) or 'ghvb'.
    order: k.
    beta: damping, used by 'ghvb' only.

  Returns:
    `[k, k]` float64 numpy array.
  """
  if family not in ("plms", "hb", "ghvb"):
    raise ValueError(f"`family` must be 'plms', 'hb' or 'ghvb', got {family!r}.")
  _check_order(order)
  table = np.zeros((order, order), dtype=np.float64)
  for r in range(order):
    if family == "ghvb":
      row = ghvb_coefficients(r + 1, beta)
    else:
      row = adams_bashforth_coefficients(r + 1)
    table[r, : r + 1] = row
  return table


class SolverSpec(NamedTuple):
  """A parsed solver name.

  Attributes:
    family: 'plms', 'hb', 'ghvb', 'dpmpp2m' or 'dpmpp2m_hb'.
    order: k, the number of past values combined (2 for the DPM-Solver++ ones).
    beta: heavy-ball damping in (0, 1]; 1 means no momentum.
  """

  family: str
  order: int
  beta: float


_NAME = re.compile(r"^(ddim|plms|hb|ghvb|dpmpp2m_hb|dpmpp2m)([0-9]*\.?[0-9]*)$")


def _momentum_number(text: str, name: str) -> tuple[int, float]:
  """Reads 'o' as (k, beta) = (ceil(o), o - (k - 1)) exactly from its decimal text."""
  try:
    number = Fraction(text)
  except (ValueError, ZeroDivisionError):
    raise ValueError(f"solver name {name!r} needs a number after its family.") from None
  if number <= 0:
    raise ValueError(f"the momentum number in {name!r} must be positive.")
  order = math.ceil(number)
  beta = float(number - (order - 1))
  return order, beta


def parse_solver(name: str) -> SolverSpec:
  """Parses a solver name such as 'ddim', 'plms4', 'hb3.8', 'ghvb2.5', 'dpmpp2m_hb0.8'.

  The momentum number o of 'hb<o>' / 'ghvb<o>' is read from its decimal text,
  so 'hb3.8' gives k = 4 and beta = 0.8 exactly (not 3.8 - 3 in floating point).

  Args:
    name: the solver name (see the module docstring).

  Returns:
    A `SolverSpec`.

  Raises:
    ValueError: for an unknown family, a missing or malformed number, an order
      outside [1, MAX_ORDER] or a beta outside (0, 1].
  """
  if not isinstance(name, str):
    raise ValueError(f"`name` must be a string, got {type(name).__name__}.")
  match = _NAME.match(name.strip().lower())
  if match is None:
    raise ValueError(
        f"unknown solver `name` {name!r}; expected ddim, plms<k>, hb<o>, ghvb<o>, "
        "dpmpp2m or dpmpp2m_hb<beta>.")
  family, number = match.groups()
  if family in ("ddim", "dpmpp2m"):
    if number:
      raise ValueError(f"solver `name` {name!r} takes no number.")
    return SolverSpec("plms", 1, 1.0) if family == "ddim" else SolverSpec("dpmpp2m", 2, 1.0)
  if family == "plms":
    if not number.isdigit():
      raise ValueError(f"solver `name` {name!r} needs an integer order, e.g. 'plms4'.")
    order = int(number)
    _check_order(order)
    return SolverSpec("plms", order, 1.0)
  if family == "dpmpp2m_hb":
    beta = float(Fraction(number)) if number and number != "." else None
    if beta is None:
      raise ValueError(f"solver `name` {name!r} needs a damping, e.g. 'dpmpp2m_hb0.8'.")
    _check_beta(beta)
    return SolverSpec("dpmpp2m_hb", 2, beta)
  order, beta = _momentum_number(number, name)
  _check_order(order)
  return SolverSpec(family, order, beta)
