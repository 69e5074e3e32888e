"""Denoising score matching against float64 numpy and exact-oracle identities."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divlab.diffusion import linear_schedule
from divlab.losses import diffusion as dsm

SCHEDULE = linear_schedule()


def test_eps_prediction_error_matches_numpy():
  rng = np.random.default_rng(0)
  pred, eps = rng.normal(size=(2, 5, 3, 2))
  mask = np.array([True, False, True, True, False])
  expected = ((pred - eps) ** 2).reshape(5, -1).mean(axis=1)
  np.testing.assert_allclose(dsm.eps_prediction_error(pred, eps), expected, rtol=1e-6)
  np.testing.assert_allclose(dsm.eps_prediction_error(pred, eps, where=mask,
                                                      reduction="mean"),
                             expected[mask].mean(), rtol=1e-6)


def test_eps_prediction_error_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="eps_pred"):
    dsm.eps_prediction_error(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def _oracle(x0, offset=0.0):
  """Recovers the added noise exactly from x_t, t and the clean batch."""
  def eps_fn(x_t, t, labels):
    del labels
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    return ((x_t - SCHEDULE.alpha(t).reshape(shape) * x0)
            / SCHEDULE.sigma(t).reshape(shape) + offset)
  return eps_fn


def test_exact_noise_oracle_has_zero_loss_and_offset_costs_its_square():
  x0 = jnp.asarray(np.random.default_rng(1).normal(size=(256, 3)), jnp.float32)
  key = jax.random.key(0)
  assert float(dsm.denoising_score_matching(_oracle(x0), x0, key, SCHEDULE)) < 1e-6
  np.testing.assert_allclose(
      float(dsm.denoising_score_matching(_oracle(x0, 0.5), x0, key, SCHEDULE)), 0.25,
      rtol=1e-4)


def test_loss_is_the_mean_squared_error_of_the_drawn_noise():
  # Record the (t, x_t) the loss feeds the network, recover its noise from the
  # linear schedule's closed form, eps = (x_t - alpha_t x0) / sigma_t, and
  # score a fixed affine predictor in float64: mean over examples of
  # ||eps_hat - eps||^2 / d.
  x0 = np.random.default_rng(6).normal(size=(32, 3, 2))
  seen = {}

  def predictor(x_t, t, labels):
    del labels
    seen["x_t"], seen["t"] = x_t, t
    return 0.3 * x_t + 0.1

  with jax.enable_x64(True):
    loss = float(dsm.denoising_score_matching(predictor, jnp.asarray(x0), jax.random.key(7),
                                              SCHEDULE))
  x_t, t = np.asarray(seen["x_t"]), np.asarray(seen["t"])
  assert np.all((t >= SCHEDULE.t_min) & (t <= SCHEDULE.t_max)) and np.ptp(t) > 0.5
  log_alpha = (-0.25 * t ** 2 * (20.0 - 0.1) - 0.5 * t * 0.1)[:, None, None]
  alpha, sigma = np.exp(log_alpha), np.sqrt(-np.expm1(2 * log_alpha))
  eps = (x_t - alpha * x0) / sigma
  # The recovered noise is standard normal (a loose sanity check of the draws).
  assert abs(eps.mean()) < 0.3 and abs(eps.std() - 1) < 0.2
  expected = np.mean(np.sum((0.3 * x_t + 0.1 - eps) ** 2, axis=(1, 2)) / 6)
  np.testing.assert_allclose(loss, expected, rtol=1e-10)


def test_zero_predictor_costs_the_noise_variance():
  # E ||eps||^2 / d = 1: with 20000 x 4 draws, within 2% (about 7 sigma).
  loss = dsm.denoising_score_matching(lambda x, t, y: jnp.zeros_like(x),
                                      jnp.zeros((20000, 4)), jax.random.key(3), SCHEDULE)
  assert abs(float(loss) - 1.0) < 0.02


def test_label_dropout_rate_and_times_in_range():
  seen = {}

  def recorder(x_t, t, labels):
    seen["t"], seen["labels"] = t, labels
    return jnp.zeros_like(x_t)

  labels = jnp.arange(10000) % 3
  dsm.denoising_score_matching(recorder, jnp.zeros((10000, 2)), jax.random.key(4),
                               SCHEDULE, labels=labels, null_label=3, p_uncond=0.2)
  dropped = np.asarray(seen["labels"]) == 3
  assert abs(dropped.mean() - 0.2) < 0.02
  kept = ~dropped
  np.testing.assert_array_equal(np.asarray(seen["labels"])[kept], np.asarray(labels)[kept])
  t = np.asarray(seen["t"])
  assert t.min() >= SCHEDULE.t_min and t.max() <= SCHEDULE.t_max


def test_dropout_needs_a_null_label():
  with pytest.raises(ValueError, match="null_label"):
    dsm.denoising_score_matching(lambda x, t, y: x, jnp.zeros((2, 2)), jax.random.key(0),
                                 SCHEDULE, labels=jnp.zeros(2, jnp.int32))


def test_gradient_matches_finite_differences():
  x0 = jnp.asarray(np.random.default_rng(2).normal(size=(64, 2)))
  key = jax.random.key(5)

  def loss(scale):
    return dsm.denoising_score_matching(lambda x, t, y: scale * x, x0, key, SCHEDULE)

  with jax.enable_x64(True):
    grad = float(jax.grad(loss)(jnp.float64(0.3)))
    h = 1e-5
    numeric = (float(loss(jnp.float64(0.3 + h))) - float(loss(jnp.float64(0.3 - h)))) / (2 * h)
  np.testing.assert_allclose(grad, numeric, rtol=1e-5)
