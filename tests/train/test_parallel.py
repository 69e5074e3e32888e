"""1-device vs 8-device parity of the data-parallel step (subprocesses)."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

SCRIPT = pathlib.Path(__file__).with_name("parity_script.py")


def _run(num_devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={num_devices}")
  env["JAX_PLATFORMS"] = "cpu"
  out = subprocess.run([sys.executable, str(SCRIPT)], env=env, check=True,
                       capture_output=True, text=True, timeout=300)
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs():
  return _run(1), _run(8)


def test_runs_really_used_1_and_8_devices(runs):
  one, eight = runs
  assert (one["devices"], one["batch_shards"]) == (1, 1)
  assert (eight["devices"], eight["batch_shards"]) == (8, 8)


def test_losses_match_across_device_counts(runs):
  one, eight = runs
  np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-5)


def test_whole_batch_loss_sees_the_global_batch(runs):
  one, eight = runs
  # Value and gradient of an MMD between the two halves of the global batch:
  # a per-shard computation would give different numbers on 8 devices.
  np.testing.assert_allclose(eight["mmds"], one["mmds"], rtol=1e-5)
  for g1, g8 in zip(one["grad_leaves"], eight["grad_leaves"]):
    np.testing.assert_allclose(g8, g1, rtol=1e-4, atol=1e-7)


def test_steps_per_call_is_bit_identical_on_1_and_8_devices(runs):
  one, eight = runs
  assert one["steps_per_call_bit_identical"]
  assert eight["steps_per_call_bit_identical"]


def test_donating_step_keeps_the_callers_params():
  # The step donates its state; create_state must not alias the caller's
  # arrays, or they would be deleted by the first step.
  import optax  # pylint: disable=g-import-not-at-top
  from divlab.train import parallel, trainer  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh()
  params = {"w": jnp.ones((3,))}

  def loss_fn(p, batch, rng):
    del rng
    return jnp.mean((batch["x"] @ p["w"]) ** 2), {}

  state = trainer.create_state(params, optax.sgd(0.1), 0, mesh)
  step = parallel.make_train_step(loss_fn, mesh)
  batch = parallel.shard_batch({"x": np.ones((len(jax.devices()), 3), np.float32)}, mesh)
  step(state, batch)
  np.testing.assert_array_equal(np.asarray(params["w"]), np.ones(3))
