"""Linear stability of the PLMS / heavy-ball / GHVB update rules on dy/dt = lambda y.

On the test equation with step delta and z = delta lambda, PLMS with heavy ball
(HB) reads

    v_{n+1} = (1 - beta) v_n + beta z sum_i c_i y_{n-i},   y_{n+1} = y_n + v_{n+1},

and GHVB reads `v_{n+1} = (1 - beta) v_n + beta z y_n`,
`y_{n+1} = y_n + sum_i c_i v_{n+1-i}`. Eliminating v (apply 1 - (1 - beta) E^{-1})
gives in both cases, with the family's weights c (Adams-Bashforth for PLMS/HB,
GHVB(beta) for GHVB), the characteristic polynomial

    rho_z(zeta) = (zeta - 1)(zeta - (1 - beta)) zeta^{k-1} - beta z sum_{i<k} c_i zeta^{k-i},

which is zeta times the Adams-Bashforth polynomial when beta = 1. The method is
stable at z when every root has |zeta| <= 1 (roots on the circle simple). The
boundary locus, used for plots, is the z solving rho_z(e^{i theta}) = 0:
z(theta) = (zeta - 1)(zeta - 1 + beta) zeta^{k-1} / (beta sum_i c_i zeta^{k-i}).

The real stability interval is (z_left, 0]; `real_stability_interval` finds
z_left among the real crossings of the boundary locus (the only places where a
root can cross the unit circle), checking stability between crossings. These are the quantities behind
Figs. 2, 4 and 6 of Wizadwongsa et al. (2023); the classical values are
Euler -2, AB2 -1, AB3 -6/11, AB4 -3/10.

References:
  Wizadwongsa et al. Diffusion Sampling with Momentum for Mitigating Divergence
  Artifacts (ICLR 2024), Sec. 2.3, 4 and App. A, D.
  Hairer, Wanner. Solving ODEs II, Sec. V.1 (stability of multistep methods).
"""
from __future__ import annotations

import numpy as np

from divlab.diffusion import multistep

__all__ = [
    "characteristic_polynomial",
    "spectral_radius",
    "boundary_locus",
    "real_stability_interval",
]

_FAMILIES = ("plms", "hb", "ghvb")


def _spec(name: str) -> multistep.SolverSpec:
  spec = multistep.parse_solver(name)
  if spec.family not in _FAMILIES:
    raise ValueError(
        f"stability is defined here for ddim / plms / hb / ghvb solvers, got `name`={name!r}.")
  return spec


def _weights(spec: multistep.SolverSpec) -> np.ndarray:
  if spec.family == "ghvb":
    return np.asarray(multistep.ghvb_coefficients(spec.order, spec.beta))
  return np.asarray(multistep.adams_bashforth_coefficients(spec.order))


def characteristic_polynomial(name: str, z: complex) -> np.ndarray:
  """Coefficients (highest degree first) of rho_z for the solver `name`.

  rho_z(zeta) = (zeta - 1)(zeta - 1 + beta) zeta^{k-1} - beta z sum_i c_i zeta^{k-i}.

  Args:
    name: 'ddim', 'plms<k>', 'hb<o>' or 'ghvb<o>'.
    z: delta * lambda, real or complex.

  Returns:
    `[k + 2]` complex numpy array for `np.roots`.
  """
  spec = _spec(name)
  k, beta = spec.order, spec.beta
  momentum_part = np.convolve([1.0, -1.0], [1.0, -(1.0 - beta)])  # degree 2
  lhs = np.concatenate([momentum_part, np.zeros(k - 1)])  # times zeta^{k-1}
  # beta z sum_i c_i zeta^{k-i}: degree k, no constant term.
  rhs = np.concatenate([[0.0], beta * z * _weights(spec), [0.0]])
  return lhs.astype(complex) - rhs


def spectral_radius(name: str, z: complex) -> float:
  """max |zeta| over the roots of rho_z: the growth factor per step on y' = lambda y.

  Args:
    name: 'ddim', 'plms<k>', 'hb<o>' or 'ghvb<o>'.
    z: delta * lambda.

  Returns:
    The largest root modulus (a Python float).
  """
  return float(np.max(np.abs(np.roots(characteristic_polynomial(name, z)))))


def boundary_locus(name: str, theta: np.ndarray) -> np.ndarray:
  """The boundary-locus curve z(theta) with a root of rho_z at zeta = e^{i theta}.

  Args:
    name: 'ddim', 'plms<k>', 'hb<o>' or 'ghvb<o>'.
    theta: `[M]` angles in [-pi, pi].

  Returns:
    `[M]` complex z values (the stability-region boundary lies on this curve).
  """
  spec = _spec(name)
  k, beta = spec.order, spec.beta
  zeta = np.exp(1j * np.asarray(theta, dtype=np.float64))
  weights = _weights(spec)
  denominator = beta * sum(weights[i] * zeta ** (k - i) for i in range(k))
  return (zeta - 1.0) * (zeta - 1.0 + beta) * zeta ** (k - 1) / denominator


def _real_locus_crossings(name: str, num_angles: int = 4096) -> np.ndarray:
  """Negative real points of the boundary locus, nearest to 0 first.

  A root crosses the unit circle only when z lies on the locus, so on the real
  axis stability can change only at these points. The locus is symmetric under
  theta -> -theta (real coefficients), so theta in (0, pi] suffices: theta = pi
  is a crossing, and sign changes of Im z(theta) are refined by bisection.
  """
  theta = np.linspace(0.0, np.pi, num_angles + 1)[1:]
  imag = boundary_locus(name, theta).imag
  crossings = [boundary_locus(name, np.array([np.pi]))[0].real]
  for j in np.nonzero(np.sign(imag[:-1]) * np.sign(imag[1:]) < 0)[0]:
    low, high = theta[j], theta[j + 1]
    sign_low = np.sign(imag[j])
    for _ in range(60):
      middle = 0.5 * (low + high)
      if np.sign(boundary_locus(name, np.array([middle]))[0].imag) == sign_low:
        low = middle
      else:
        high = middle
    crossings.append(boundary_locus(name, np.array([0.5 * (low + high)]))[0].real)
  crossings = np.asarray(crossings)
  return np.sort(crossings[np.isfinite(crossings) & (crossings < 0)])[::-1]


def real_stability_interval(name: str, *, z_min: float = -100.0) -> tuple[float, float]:
  """The real interval (z_left, 0) of z = delta lambda where the method is stable.

  Boundary-locus method: z_left is the first negative real crossing of the
  locus (walking left from 0) beyond which the spectral radius exceeds 1; the
  stability of each stretch between crossings is decided at its midpoint, away
  from the boundary, so no tolerance on the radius is needed.

  Args:
    name: 'ddim', 'plms<k>', 'hb<o>' or 'ghvb<o>'.
    z_min: how far left to look; the interval is clipped there.

  Returns:
    (z_left, 0.0).
  """
  _spec(name)
  if not z_min < 0:
    raise ValueError(f"`z_min` must be negative, got {z_min!r}.")
  right = 0.0
  for crossing in _real_locus_crossings(name):
    if crossing <= z_min:
      break
    if spectral_radius(name, 0.5 * (right + crossing)) > 1.0:
      return (float(right), 0.0)
    right = float(crossing)
  beyond = max(z_min, 2.0 * right - 1.0)
  if spectral_radius(name, 0.5 * (right + beyond)) > 1.0:
    return (right, 0.0)
  return (float(z_min), 0.0)
