"""Seeded numpy generators behind the synthetic embedded datasets.

Two generative recipes live here, as pure functions of a seed, so that
experiments can reach the same ground truth the stored datasets were drawn
from (the ring means for analytic Bayes rules and scores, the noise-free
regression function for an oracle error):

- :func:`sample_ring_gmm`: a class-conditional Gaussian mixture on a ring
  (``divlab_gmm``).
- :func:`sample_noisy_regression`: a smooth function of ``x`` in ``[-1, 1]^8``
  plus bimodal, Student-t noise (``divlab_noisy_regression``).

Draws use ``np.random.default_rng(seed)`` in the order written in each
docstring, so the arrays are reproducible from the docstring alone.
"""
from __future__ import annotations

import numpy as np

RING_GMM_NUM_COMPONENTS = 8
RING_GMM_RADIUS = 2.0
RING_GMM_SCALE = 0.5

NOISY_REGRESSION_DIM = 8
NOISY_REGRESSION_SHIFT = 0.5
NOISY_REGRESSION_T_SCALE = 0.2
NOISY_REGRESSION_T_DOF = 3.0


def _check_num_samples(num_samples: int) -> None:
  if int(num_samples) != num_samples or num_samples < 1:
    raise ValueError(f"`num_samples` must be a positive integer, got {num_samples!r}.")


def ring_gmm_means(num_components: int = RING_GMM_NUM_COMPONENTS,
                   radius: float = RING_GMM_RADIUS) -> np.ndarray:
  """The mixture means: ``radius * (cos(2 pi k / K), sin(2 pi k / K))``.

  Args:
    num_components: K, the number of components (one class each).
    radius: the ring's radius.

  Returns:
    float64 ``[K, 2]``; row ``k`` is the mean of class ``k``.
  """
  if int(num_components) != num_components or num_components < 1:
    raise ValueError(
        f"`num_components` must be a positive integer, got {num_components!r}.")
  if not radius > 0:
    raise ValueError(f"`radius` must be positive, got {radius!r}.")
  angles = 2.0 * np.pi * np.arange(num_components) / num_components
  return radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)


def sample_ring_gmm(num_samples: int,
                    seed: int,
                    *,
                    num_components: int = RING_GMM_NUM_COMPONENTS,
                    radius: float = RING_GMM_RADIUS,
                    scale: float = RING_GMM_SCALE) -> tuple[np.ndarray, np.ndarray]:
  """Draws ``(x, y)`` from an equal-weight isotropic Gaussian mixture on a ring.

  ``y ~ Uniform{0..K-1}``, ``x | y ~ N(ring_gmm_means()[y], scale^2 I_2)``.
  With the defaults (K=8, radius 2, scale 0.5) neighbouring means are 1.53
  apart, about three standard deviations, so classes overlap a little and the
  Bayes error is small but not zero.

  Draw order: ``rng = np.random.default_rng(seed)``;
  ``y = rng.integers(0, K, num_samples)``;
  ``x = means[y] + scale * rng.standard_normal((num_samples, 2))``.

  Args:
    num_samples: how many pairs to draw.
    seed: the generator's seed.
    num_components: K.
    radius: the ring's radius.
    scale: each component's standard deviation (per coordinate).

  Returns:
    ``(x, y)``: float64 ``[num_samples, 2]`` and int64 ``[num_samples]``.
  """
  _check_num_samples(num_samples)
  if not scale > 0:
    raise ValueError(f"`scale` must be positive, got {scale!r}.")
  means = ring_gmm_means(num_components, radius)
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_components, num_samples)
  points = means[labels] + scale * rng.standard_normal((num_samples, 2))
  return points, labels


def noisy_regression_mean(x: np.ndarray) -> np.ndarray:
  """The noise-free target ``f(x) = E[y | x]`` of ``divlab_noisy_regression``.

  ``f(x) = sin(pi x_1) + x_2 x_3 + x_4^2 + 0.5 tanh(2 x_5)`` (1-based
  coordinates); ``x_6, x_7, x_8`` are nuisance inputs that ``f`` ignores, which
  a compressed representation should learn to drop.

  Args:
    x: ``[..., 8]`` inputs.

  Returns:
    ``[...]`` float64 values of ``f``.
  """
  x = np.asarray(x, dtype=np.float64)
  if x.ndim < 1 or x.shape[-1] != NOISY_REGRESSION_DIM:
    raise ValueError(
        f"`x` must have a last axis of size {NOISY_REGRESSION_DIM}, got shape {x.shape}.")
  return (np.sin(np.pi * x[..., 0]) + x[..., 1] * x[..., 2] + x[..., 3] ** 2
          + 0.5 * np.tanh(2.0 * x[..., 4]))


def sample_noisy_regression(num_samples: int,
                            seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Draws ``(x, y)`` with ``y = f(x) + eps``, ``eps`` bimodal and heavy-tailed.

  ``x ~ Uniform[-1, 1]^8``; ``f`` is :func:`noisy_regression_mean`;
  ``eps = 0.5 s + 0.2 t`` with ``s`` uniform on ``{-1, +1}`` and ``t`` Student-t
  with 3 degrees of freedom. So ``y | x`` has two modes at ``f(x) +- 0.5`` and
  polynomial tails: the mean-squared-error predictor ``f(x)`` sits between the
  modes, and rare large residuals dominate a squared loss, which is what
  divergence-based (information-bottleneck) regression losses are tested
  against. ``E[eps] = 0``, ``Var[eps] = 0.25 + 0.04 * 3 = 0.37``.

  Draw order: ``rng = np.random.default_rng(seed)``;
  ``x = rng.uniform(-1, 1, (num_samples, 8))``;
  ``s = 2 * rng.integers(0, 2, num_samples) - 1``;
  ``t = rng.standard_t(3, num_samples)``.

  Args:
    num_samples: how many pairs to draw.
    seed: the generator's seed.

  Returns:
    ``(x, y)``: float64 ``[num_samples, 8]`` and float64 ``[num_samples]``.
  """
  _check_num_samples(num_samples)
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1.0, 1.0, (num_samples, NOISY_REGRESSION_DIM))
  signs = 2 * rng.integers(0, 2, num_samples) - 1
  t_noise = rng.standard_t(NOISY_REGRESSION_T_DOF, num_samples)
  noise = NOISY_REGRESSION_SHIFT * signs + NOISY_REGRESSION_T_SCALE * t_noise
  return x, noisy_regression_mean(x) + noise
