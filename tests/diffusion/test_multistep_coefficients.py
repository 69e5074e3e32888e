"""Adams-Bashforth / GHVB weights against textbook and paper formulas, and their order."""
import math

import numpy as np
import pytest

from divlab.diffusion import multistep

AB_TEXTBOOK = {
    1: [1.0],
    2: [3 / 2, -1 / 2],
    3: [23 / 12, -16 / 12, 5 / 12],
    4: [55 / 24, -59 / 24, 37 / 24, -9 / 24],
    5: [1901 / 720, -2774 / 720, 2616 / 720, -1274 / 720, 251 / 720],
}


def paper_ghvb(order, b):
  """Wizadwongsa et al. (2023) Algorithm 2 / the authors' AdamBmixer, divided by b."""
  if order == 1:
    c, scale = [b], 1
  elif order == 2:
    c, scale = [2 + b, -(2 - b)], 2
  elif order == 3:
    c, scale = [18 + 5 * b, -(24 - 8 * b), 6 - b], 12
  elif order == 4:
    c, scale = [46 + 9 * b, -(78 - 19 * b), 42 - 5 * b, -(10 - b)], 24
  else:
    c, scale = [1650 + 251 * b, -(3420 - 646 * b), 2880 - 264 * b, -(1380 - 106 * b),
                270 - 19 * b], 720
  return [ci / scale / b for ci in c]


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_adams_bashforth_textbook(order):
  np.testing.assert_allclose(multistep.adams_bashforth_coefficients(order), AB_TEXTBOOK[order],
                             rtol=1e-15)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("beta", [0.1, 0.5, 0.8, 0.9])
def test_ghvb_matches_paper(order, beta):
  np.testing.assert_allclose(multistep.ghvb_coefficients(order, beta), paper_ghvb(order, beta),
                             rtol=1e-13)


@pytest.mark.parametrize("order", range(1, multistep.MAX_ORDER + 1))
def test_ghvb_at_beta_one_is_adams_bashforth_bit_for_bit(order):
  assert multistep.ghvb_coefficients(order, 1.0) == multistep.adams_bashforth_coefficients(order)


def truncation_error(weights, beta, h, t=0.3):
  """Local error of x_{n+1} - x_n - (1-b)(x_n - x_{n-1}) = h b sum_i c_i f_{n-i} on x = e^t.

  Both HB (c = Adams-Bashforth) and GHVB (c = GHVB(b)) take this form once the
  velocity is eliminated (Wizadwongsa et al., eqs. 60 and 63).
  """
  x = math.exp
  lhs = x(t + h) - x(t) - (1 - beta) * (x(t) - x(t - h))
  return lhs - h * beta * sum(c * x(t - i * h) for i, c in enumerate(weights))


def observed_local_order(weights, beta):
  errors = [abs(truncation_error(weights, beta, h)) for h in (0.1, 0.05)]
  return math.log2(errors[0] / errors[1])


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("beta", [0.5, 0.8, 1.0])
def test_ghvb_has_order_k(order, beta):
  # Local error O(h^{k+1}): order k for every beta (the paper's Theorem 2).
  weights = multistep.ghvb_coefficients(order, beta)
  assert observed_local_order(weights, beta) == pytest.approx(order + 1, abs=0.15)


@pytest.mark.parametrize("order", [2, 3, 4])
@pytest.mark.parametrize("beta", [0.5, 0.8])
def test_heavy_ball_drops_to_first_order(order, beta):
  # Local error O(h^2) as soon as beta < 1 (the paper's Theorem 1).
  weights = multistep.adams_bashforth_coefficients(order)
  assert observed_local_order(weights, beta) == pytest.approx(2.0, abs=0.15)


def test_warmup_table_rows_are_lower_orders():
  table = multistep.multistep_coefficients("ghvb", 3, 0.8)
  np.testing.assert_allclose(table[0], [1.0, 0.0, 0.0], rtol=1e-15)
  np.testing.assert_allclose(table[1, :2], paper_ghvb(2, 0.8), rtol=1e-13)
  np.testing.assert_allclose(table[2], paper_ghvb(3, 0.8), rtol=1e-13)
  plms = multistep.multistep_coefficients("plms", 4)
  for r in range(4):
    np.testing.assert_allclose(plms[r, : r + 1], AB_TEXTBOOK[r + 1], rtol=1e-15)
    assert not np.any(plms[r, r + 1:])


@pytest.mark.parametrize("name,expected", [
    ("ddim", ("plms", 1, 1.0)),
    ("plms4", ("plms", 4, 1.0)),
    ("hb3.8", ("hb", 4, 0.8)),
    ("hb3", ("hb", 3, 1.0)),
    ("hb0.5", ("hb", 1, 0.5)),
    ("ghvb3.9", ("ghvb", 4, 0.9)),
    ("ghvb1.5", ("ghvb", 2, 0.5)),
    ("dpmpp2m", ("dpmpp2m", 2, 1.0)),
    ("dpmpp2m_hb0.8", ("dpmpp2m_hb", 2, 0.8)),
    ("GHVB2.25", ("ghvb", 3, 0.25)),
])
def test_parse_solver(name, expected):
  assert tuple(multistep.parse_solver(name)) == expected
  # The damping is the decimal fraction itself, not 3.8 - 3 in floating point.
  assert multistep.parse_solver(name).beta == expected[2]


@pytest.mark.parametrize("name", [
    "adams4", "plms", "plms2.5", "plms9", "hb", "hb0", "ghvb7.5", "dpmpp2m_hb", "dpmpp2m_hb1.5",
    "ddim2", "hb-1",
])
def test_parse_solver_rejects(name):
  with pytest.raises(ValueError):
    multistep.parse_solver(name)


def test_bad_order_and_beta_raise():
  with pytest.raises(ValueError, match="order"):
    multistep.adams_bashforth_coefficients(0)
  with pytest.raises(ValueError, match="beta"):
    multistep.ghvb_coefficients(2, 0.0)
  with pytest.raises(ValueError, match="family"):
    multistep.multistep_coefficients("dpmpp2m", 2)
