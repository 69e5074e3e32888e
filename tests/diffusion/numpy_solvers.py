"""Float64 numpy transcriptions of the diffusion samplers, shared by the sampler tests.

The problem is a single Gaussian N(MU, diag VAR) under the linear VP schedule
with beta_min = 0.1, beta_max = 20 (`schedules.linear_schedule(0.1, 20.0)`),
whose eps is known in closed form. The solvers follow the authors'
algorithms with their hard-coded weights and warm-up: PLMS with heavy ball
(Algorithm 1) and GHVB (Algorithm 2) of Wizadwongsa et al. 2023, in the
x / alpha form against g = sigma / alpha, and DPM-Solver++(2M) (Lu et al.
2022) with heavy ball on its second-order D. Also the 2-D, three-component
mixture both files sample in float32. Not a test module: the test files
import it.
"""
import numpy as np

from divlab.diffusion import gmm

MU = np.array([1.0, -0.5])
VAR = np.array([0.25, 2.0])

# Adams-Bashforth weights of eps_n, eps_{n-1}, ... for orders 1-4.
AB = {1: [1.0], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12],
      4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}


def numpy_alpha_sigma(t):
  log_alpha = -0.25 * t ** 2 * (20.0 - 0.1) - 0.5 * t * 0.1
  return np.exp(log_alpha), np.sqrt(1.0 - np.exp(2.0 * log_alpha))


def numpy_eps(x, t):
  """eps of N(MU, diag VAR) noised to time t: sigma (x - alpha MU) / (alpha^2 VAR + sigma^2)."""
  a, s = numpy_alpha_sigma(t)
  return s * (x - a * MU) / (a ** 2 * VAR + s ** 2)


def ghvb_mixer(history, order, b):
  """AdamBmixer(order, history, b) / b: history oldest first, as in the authors' code."""
  e = history[::-1]
  cur = min(order, len(history))
  if cur == 1:
    prime = b * e[0]
  elif cur == 2:
    prime = ((2 + b) * e[0] - (2 - b) * e[1]) / 2
  elif cur == 3:
    prime = ((18 + 5 * b) * e[0] - (24 - 8 * b) * e[1] + (6 - b) * e[2]) / 12
  else:
    prime = ((46 + 9 * b) * e[0] - (78 - 19 * b) * e[1] + (42 - 5 * b) * e[2]
             - (10 - b) * e[3]) / 24
  return prime / b


def reference_eps_solver(kind, order, beta, x, t):
  """PLMS + HB ("hb") or GHVB ("ghvb") of `order` from x at t[0] along the grid t."""
  history, velocity = [], None
  for i in range(len(t) - 1):
    a0, s0 = numpy_alpha_sigma(t[i])
    a1, s1 = numpy_alpha_sigma(t[i + 1])
    eps = numpy_eps(x, t[i])
    if kind == "hb":
      history = (history + [eps])[-order:]
      cur = len(history)
      prime = sum(c * history[-1 - j] for j, c in enumerate(AB[cur]))
      velocity = prime if velocity is None else (1 - beta) * velocity + beta * prime
      direction = velocity
    else:
      velocity = eps if velocity is None else (1 - beta) * velocity + beta * eps
      history = (history + [velocity])[-order:]
      direction = ghvb_mixer(history, order, beta)
    x = (x / a0 + (s1 / a1 - s0 / a0) * direction) * a1
  return x


def reference_dpmpp_2m(beta, x, t, lower_order_final=False):
  """DPM-Solver++(2M) with the authors' momentum on D = D0 + D1 / 2.

  With `lower_order_final` the last step is first order, as in the library.
  """
  lam = [np.log(a / s) for a, s in map(numpy_alpha_sigma, t)]
  data_prev, velocity = None, None
  steps = len(t) - 1
  for i in range(steps):
    a0, s0 = numpy_alpha_sigma(t[i])
    a1, s1 = numpy_alpha_sigma(t[i + 1])
    h = lam[i + 1] - lam[i]
    data = (x - s0 * numpy_eps(x, t[i])) / a0
    if i == 0 or (lower_order_final and i == steps - 1):
      direction = data
    else:
      r = (lam[i] - lam[i - 1]) / h
      d = data + 0.5 * (data - data_prev) / r
      velocity = d if velocity is None else (1 - beta) * velocity + beta * d
      direction = velocity
    x = (s1 / s0) * x - a1 * (np.exp(-h) - 1.0) * direction
    data_prev = data
  return x


def three_component_mixture():
  """A 2-D mixture of three correlated Gaussians (labels 0, 1, 1) for float32 runs."""
  return gmm.gaussian_mixture(
      [0.3, 0.5, 0.2], [[2.0, 0.0], [-1.0, 1.0], [0.0, -2.0]],
      [[[0.3, 0.1], [0.1, 0.2]], [[0.5, 0.0], [0.0, 0.1]], [[0.2, -0.05], [-0.05, 0.4]]],
      labels=[0, 1, 1])
