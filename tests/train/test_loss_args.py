"""Traced loss arguments: one compiled train step for a sweep over a loss weight."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from divlab.train import parallel, trainer

LEARNING_RATE = 0.1
X = np.array([[1.0, -2.0, 0.5], [0.25, 1.5, -1.0]], np.float32)
W0 = np.array([0.3, -0.7, 1.1], np.float32)


def weighted_loss(params, batch, rng, beta):
  """beta * mean((x w)^2) + (1 - beta) * |w|^2 / 2: beta moves the minimum."""
  del rng
  fit = jnp.mean((batch["x"] @ params["w"]) ** 2)
  return beta * fit + (1.0 - beta) * 0.5 * jnp.sum(params["w"] ** 2), {"fit": fit}


def sgd_reference(beta, num_steps):
  """The same SGD steps in float64 numpy: grad = beta 2 X^T X w / n + (1 - beta) w."""
  x = X.astype(np.float64)
  w = W0.astype(np.float64)
  for _ in range(num_steps):
    grad = beta * 2.0 * x.T @ (x @ w) / len(x) + (1.0 - beta) * w
    w = w - LEARNING_RATE * grad
  return w


@pytest.fixture(scope="module")
def setup():
  mesh = parallel.make_mesh()
  tx = optax.sgd(LEARNING_RATE)
  step = parallel.make_train_step(weighted_loss, mesh, loss_args={"beta": 0.1})
  batch = parallel.shard_batch({"x": np.tile(X, (len(jax.devices()), 1))}, mesh)
  return mesh, tx, step, batch


def fresh_state(mesh, tx):
  return trainer.create_state({"w": jnp.asarray(W0)}, tx, 0, mesh)


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0])
def test_rebound_steps_match_float64_sgd(setup, beta):
  mesh, tx, step, batch = setup
  bound = step.with_loss_args(beta=beta)
  state = fresh_state(mesh, tx)
  for _ in range(3):
    state, metrics = bound(state, batch)
  np.testing.assert_allclose(np.asarray(state.params["w"]), sgd_reference(beta, 3),
                             rtol=1e-5, atol=1e-6)
  assert set(metrics) == {"loss", "grad_norm", "fit"}


def test_scan_of_k_steps_takes_the_loss_args(setup):
  mesh, tx, step, batch = setup
  bound = step.with_loss_args(beta=0.7)
  batches = jax.tree.map(lambda x: jnp.stack([x] * 4), batch)
  state, metrics = bound.run(fresh_state(mesh, tx), batches)
  np.testing.assert_allclose(np.asarray(state.params["w"]), sgd_reference(0.7, 4),
                             rtol=1e-5, atol=1e-6)
  assert metrics["loss"].shape == (4,)


def test_a_sweep_compiles_once(setup):
  mesh, tx, step, batch = setup
  for beta in (0.2, 0.3, 0.9):
    step.with_loss_args(beta=beta)(fresh_state(mesh, tx), batch)
  step(fresh_state(mesh, tx), batch)
  # One entry: every value above ran the program compiled for the first.
  assert step._one._cache_size() == 1  # pylint: disable=protected-access


def test_the_rebound_step_leaves_the_original_alone(setup):
  _, _, step, _ = setup
  bound = step.with_loss_args(beta=0.9)
  assert float(step.loss_args["beta"]) == pytest.approx(0.1)
  assert float(bound.loss_args["beta"]) == pytest.approx(0.9)
  assert bound.loss_args["beta"].dtype == jnp.float32


def test_a_step_without_loss_args_calls_the_loss_with_three_arguments():
  mesh = parallel.make_mesh()

  def loss_fn(params, batch, rng):
    del rng
    return jnp.sum(params["w"] * batch["x"]), {}

  step = parallel.make_train_step(loss_fn, mesh)
  batch = parallel.shard_batch({"x": np.ones((len(jax.devices()), 3), np.float32)}, mesh)
  state, _ = step(fresh_state(mesh, optax.sgd(1.0)), batch)
  # d/dw sum over the rows of w * 1 = the number of rows, per entry.
  np.testing.assert_allclose(np.asarray(state.params["w"]), W0 - len(jax.devices()))
  assert step.loss_args == {}


@pytest.mark.parametrize("values, match", [
    ({"gamma": 0.5}, "`gamma` is not one of this step's"),
    ({"beta": np.ones(2)}, "`beta` must keep its shape"),
    ({"beta": "0.5"}, "`beta` must be a number or an array"),
    ({"beta": None}, "`beta` must be a number or an array"),
    ({"beta": 1 + 2j}, "`beta` is float32 in this step and cannot take"),
])
def test_bad_rebinding_is_a_value_error(setup, values, match):
  _, _, step, _ = setup
  with pytest.raises(ValueError, match=match):
    step.with_loss_args(**values)


@pytest.mark.parametrize("loss_args, match", [
    ([("beta", 0.1)], "`loss_args` must be a dict"),
    ({"beta": "high"}, "`beta` must be a number or an array"),
])
def test_bad_loss_args_are_a_value_error(loss_args, match):
  with pytest.raises(ValueError, match=match):
    parallel.make_train_step(weighted_loss, parallel.make_mesh(), loss_args=loss_args)


def test_an_integer_loss_argument_refuses_a_fraction_rather_than_truncating_it():
  step = parallel.make_train_step(weighted_loss, parallel.make_mesh(), loss_args={"beta": 1})
  with pytest.raises(ValueError, match="`beta` is int32 in this step and cannot take 0.5"):
    step.with_loss_args(beta=0.5)
  assert int(step.with_loss_args(beta=3).loss_args["beta"]) == 3
