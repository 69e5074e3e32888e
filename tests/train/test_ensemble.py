"""Ensembles: K models in one vmapped step equal K separate single-model runs."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from divlab import data
from divlab import models
from divlab.losses import softmax_cross_entropy
from divlab.losses import unlearning as unlearning_losses
from divlab.train import ensemble
from divlab.train import parallel
from divlab.train import trainer
from divlab.train import zipped

MESH = parallel.make_mesh()
MODEL = models.build("mlp", 3, hidden=(8,))


def _arrays(n, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 4)).astype(np.float32)
  return {"x": x, "y": (x[:, 0] + x[:, 1] > 0).astype(np.int32) + (x[:, 2] > 1)}


def _apply(params, x):
  return MODEL.apply({"params": params}, x)


def _loss_fn(params, batch, rng):
  del rng
  return softmax_cross_entropy(_apply(params, batch["x"]), batch["y"],
                               reduction="mean"), {"logit_mean": jnp.mean(
                                   _apply(params, batch["x"]))}


def _train_config(num_steps):
  return ml_collections.ConfigDict(dict(num_steps=num_steps, log_every=2, eval_every=0,
                                        checkpoint_every=2, keep_checkpoints=1))


def test_init_matches_single_model_init():
  x = _arrays(5, 0)["x"]
  stacked = ensemble.init_ensemble_params(MODEL, x, [3, 7])
  for k, seed in enumerate([3, 7]):
    single = trainer.init_params(MODEL, x, seed)
    # Same random draws; on a GPU the vmapped initialiser may round differently.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[k], b, rtol=2e-6, atol=1e-7),
                 stacked, single)


def test_loader_serves_each_members_single_model_stream():
  members = [_arrays(10, 0), _arrays(14, 1)]
  loader = ensemble.EnsembleLoader(members, 4, seeds=[5, 6])
  references = [data.Loader(m, 4, seed=s) for m, s in zip(members, [5, 6])]
  for _ in range(5):  # crosses epoch boundaries of both members
    batch = next(loader)
    assert batch["x"].shape == (4, 2, 4) and batch["y"].shape == (4, 2)
    for k, reference in enumerate(references):
      expected = next(reference)
      np.testing.assert_array_equal(batch["x"][:, k], expected["x"])
      np.testing.assert_array_equal(batch["y"][:, k], expected["y"])
  state = loader.get_state()
  resumed = ensemble.EnsembleLoader(members, 4, seeds=[5, 6])
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["x"], next(loader)["x"])


def test_loader_rejects_bad_arguments():
  with pytest.raises(ValueError, match="one seed per member"):
    ensemble.EnsembleLoader([_arrays(4, 0)], 2, seeds=[0, 1])
  with pytest.raises(ValueError, match="same keys"):
    ensemble.EnsembleLoader([_arrays(4, 0), {"x": np.zeros((4, 4))}], 2, seeds=[0, 1])
  loader = ensemble.EnsembleLoader([_arrays(4, 0)], 2, seeds=[0])
  with pytest.raises(ValueError, match="1 members"):
    loader.set_state({"members": []})


def _reference_run(params, arrays, seed, tx, num_steps, batch_size):
  """One model trained by a plain Python loop: jax.grad + optax, no divlab.train."""
  loader = data.Loader(arrays, batch_size, seed=seed)
  opt_state = tx.init(params)
  for _ in range(num_steps):
    batch = next(loader)
    grads = jax.grad(lambda p: _loss_fn(p, batch, None)[0])(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_ensemble_training_equals_separate_runs(tmp_path):
  members = [_arrays(24, 0), _arrays(24, 1), _arrays(16, 2)]
  seeds = [0, 1, 2]
  tx = optax.adam(0.05)
  initial = ensemble.init_ensemble_params(MODEL, members[0]["x"], seeds)
  params, _ = ensemble.train_ensemble(
      workdir=tmp_path, train_config=_train_config(6), params=initial, tx=tx,
      loader=ensemble.EnsembleLoader(members, 8, seeds=seeds), seed=0,
      loss_fn=_loss_fn, progress=False)
  for k in range(3):
    expected = _reference_run(ensemble.member(initial, k), members[k], seeds[k], tx, 6, 8)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 ensemble.member(params, k), expected)


def test_resumed_training_is_identical(tmp_path):
  members = [_arrays(24, 0), _arrays(24, 1)]
  initial = ensemble.init_ensemble_params(MODEL, members[0]["x"], [0, 1])
  kwargs = dict(params=initial, tx=optax.adam(0.05), seed=0, loss_fn=_loss_fn,
                progress=False)
  straight, _ = ensemble.train_ensemble(
      workdir=tmp_path / "a", train_config=_train_config(6),
      loader=ensemble.EnsembleLoader(members, 8, seeds=[0, 1]), **kwargs)
  ensemble.train_ensemble(workdir=tmp_path / "b", train_config=_train_config(4),
                          loader=ensemble.EnsembleLoader(members, 8, seeds=[0, 1]),
                          **kwargs)
  resumed, _ = ensemble.train_ensemble(
      workdir=tmp_path / "b", train_config=_train_config(6),
      loader=ensemble.EnsembleLoader(members, 8, seeds=[0, 1]), **kwargs)
  jax.tree.map(np.testing.assert_array_equal, straight, resumed)


def test_gradient_fn_with_gu_projection_matches_hand_computed_update():
  """A GU step per member: -lr (g_r + g_f - <g_f, g_r>/<g_r, g_r> g_r), numpy."""
  rng = np.random.default_rng(0)
  forget = [{"x": rng.normal(size=(4, 3)).astype(np.float32)} for _ in range(2)]
  retain = [{"x": rng.normal(size=(4, 3)).astype(np.float32)} for _ in range(2)]
  w0 = rng.normal(size=(2, 3)).astype(np.float32)
  lr = 0.1

  # Quadratic losses with closed-form gradients: L_f = -0.5 mean (x.w)^2 (an
  # ascent-like term), L_r = 0.5 mean (x.w - 1)^2.
  def gradient_fn(params, batch, rng_key):
    del rng_key
    forget_loss = lambda p: -0.5 * jnp.mean((batch["forget"]["x"] @ p["w"]) ** 2)
    retain_loss = lambda p: 0.5 * jnp.mean((batch["retain"]["x"] @ p["w"] - 1) ** 2)
    g_f = jax.grad(forget_loss)(params)
    g_r = jax.grad(retain_loss)(params)
    return forget_loss(params) + retain_loss(params), {}, unlearning_losses.gu_inputs(
        g_f, g_r)

  tx = optax.chain(unlearning_losses.gu_project(), optax.sgd(lr))
  state = ensemble.create_ensemble_state({"w": w0}, tx, 0, MESH)
  step = ensemble.make_ensemble_train_step(mesh=MESH, gradient_fn=gradient_fn)
  loader = zipped.ZippedLoader({
      "forget": ensemble.EnsembleLoader(forget, 4, seeds=[0, 1], shuffle=False),
      "retain": ensemble.EnsembleLoader(retain, 4, seeds=[0, 1], shuffle=False)})
  state, metrics = step(state, parallel.shard_batch(next(loader), MESH))
  for k in range(2):
    xf = forget[k]["x"].astype(np.float64)
    xr = retain[k]["x"].astype(np.float64)
    w = w0[k].astype(np.float64)
    g_f = -(xf.T @ (xf @ w)) / 4
    g_r = xr.T @ (xr @ w - 1) / 4
    projected = g_f - (g_f @ g_r) / (g_r @ g_r) * g_r
    np.testing.assert_allclose(np.asarray(state.params["w"][k]),
                               w - lr * (g_r + projected), rtol=1e-5, atol=1e-6)
  assert np.isfinite(float(metrics["loss"])) and "grad_norm" in metrics


def test_step_needs_exactly_one_objective():
  with pytest.raises(ValueError, match="exactly one"):
    ensemble.make_ensemble_train_step(mesh=MESH)


def test_ensemble_outputs_equal_per_member_apply():
  x = _arrays(37, 3)["x"]  # not a power of two: padded chunks
  params = ensemble.init_ensemble_params(MODEL, x, [0, 1])
  outputs = ensemble.ensemble_outputs(_apply, params, x, batch_size=16)
  assert outputs.shape == (2, 37, 3)
  for k in range(2):
    np.testing.assert_allclose(outputs[k], _apply(ensemble.member(params, k), x),
                               rtol=1e-6, atol=1e-6)


def test_stack_and_member_round_trip():
  trees = [{"a": np.full(2, float(i)), "b": {"c": np.array(i)}} for i in range(3)]
  stacked = ensemble.stack_members(trees)
  assert ensemble.num_members(stacked) == 3
  np.testing.assert_array_equal(ensemble.member(stacked, 2)["a"], [2.0, 2.0])
  with pytest.raises(ValueError, match="disagree"):
    ensemble.num_members({"a": np.zeros(2), "b": np.zeros(3)})
