"""The fit loop: resume identity, NaN stop, broken checkpoint fallback, SIGTERM."""
import json
import os
import pathlib
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from divlab import data
from divlab import models
from divlab.losses import softmax_cross_entropy
from divlab.train import loop
from divlab.train import metrics as metrics_lib
from divlab.train import parallel
from divlab.train import trainer

MESH = parallel.make_mesh()
MODEL = models.build("mlp", 3, hidden=(16,))


def _arrays(n=96, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 5)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)
  return {"x": x, "y": y}


ARRAYS = _arrays()


def _loss_fn(params, batch, rng):
  logits = MODEL.apply({"params": params}, batch["x"])
  # A little randomness from the step key, so resuming must restore the RNG.
  noise = 1e-3 * jax.random.normal(rng, logits.shape)
  return softmax_cross_entropy(logits + noise, batch["y"], reduction="mean"), {}


STEP = parallel.make_train_step(_loss_fn, MESH)


def _fresh_state(seed=0):
  params = trainer.init_params(MODEL, ARRAYS["x"], seed)
  return trainer.create_state(params, optax.adam(1e-2), seed, MESH)


class _CrashingLoader(data.Loader):
  """Raises after a given number of batches: a crash at an arbitrary step."""

  def __init__(self, *args, crash_after=None, **kwargs):
    super().__init__(*args, **kwargs)
    self.crash_after = crash_after
    self.served_here = 0

  def __next__(self):
    if self.crash_after is not None and self.served_here >= self.crash_after:
      raise KeyboardInterrupt("simulated crash")
    self.served_here += 1
    return super().__next__()


def _fit(workdir, num_steps=30, crash_after=None, step=STEP, **kwargs):
  loader = _CrashingLoader(ARRAYS, 16, seed=3, crash_after=crash_after)
  return loop.fit(workdir=workdir, state=_fresh_state(), train_step=step,
                  loader=loader, mesh=MESH, num_steps=num_steps, log_every=5,
                  checkpoint_every=kwargs.pop("checkpoint_every", 10),
                  keep_checkpoints=2, progress=False, **kwargs)


def _params_equal(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  state, _ = _fit(workdir)
  return state, metrics_lib.read_metrics(workdir)


@pytest.mark.parametrize("crash_after", [3, 10, 17, 29])
def test_crash_and_resume_is_bit_identical(tmp_path, uninterrupted, crash_after):
  with pytest.raises(KeyboardInterrupt):
    _fit(tmp_path, crash_after=crash_after)
  state, _ = _fit(tmp_path)  # same call again: resumes
  ref_state, ref_metrics = uninterrupted
  assert int(state.step) == 30
  assert _params_equal(state.params, ref_state.params)
  assert _params_equal(state.opt_state, ref_state.opt_state)
  assert metrics_lib.read_metrics(tmp_path) == ref_metrics


def test_keeps_only_the_last_checkpoints(tmp_path):
  _fit(tmp_path)
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert steps == [20, 30]


def test_nan_loss_names_the_step_and_keeps_last_good_checkpoint(tmp_path):

  bad_step = 13

  def poisoned_step(state, batch):
    new_state, metrics = STEP(state, batch)
    poisoned = jnp.where(new_state.step >= bad_step, jnp.nan, metrics["loss"])
    return new_state, {**metrics, "loss": poisoned}

  with pytest.raises(loop.NonFiniteLossError, match=f"step {bad_step}"):
    _fit(tmp_path, step=poisoned_step)
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert steps == [10]


def test_broken_latest_checkpoint_falls_back(tmp_path, uninterrupted, capsys):
  with pytest.raises(KeyboardInterrupt):
    _fit(tmp_path, crash_after=25)  # checkpoints at 10 and 20
  latest = tmp_path / "checkpoints" / "20"
  for f in latest.rglob("*"):
    if f.is_file() and f.stat().st_size > 0 and "state" in str(f):
      f.write_bytes(b"\0garbage")
  state, _ = _fit(tmp_path)
  assert "falling back" in capsys.readouterr().out
  assert _params_equal(state.params, uninterrupted[0].params)


@pytest.mark.parametrize("steps_per_call, saved_step", [(1, 6), (None, 5)])
def test_sigterm_saves_and_exits_cleanly(tmp_path, uninterrupted, steps_per_call,
                                         saved_step):
  class SigtermLoader(data.Loader):
    def __next__(self):
      batch = super().__next__()
      if self.get_state()["batches_served"] == 7:
        os.kill(os.getpid(), signal.SIGTERM)
      return batch

  loader = SigtermLoader(ARRAYS, 16, seed=3)
  with pytest.raises(loop.Preempted) as info:
    loop.fit(workdir=tmp_path, state=_fresh_state(), train_step=STEP, loader=loader,
             mesh=MESH, num_steps=30, log_every=5, checkpoint_every=10,
             keep_checkpoints=2, progress=False, steps_per_call=steps_per_call)
  # The loop reads the next call's batches while the device works, so the
  # signal (sent as batch 7 is read) arrives during the call before: with one
  # step per call the loop saves step 6; with 5 steps per call, step 5.
  assert info.value.code == 0 and info.value.step == saved_step
  assert (tmp_path / "checkpoints" / str(saved_step)).is_dir()
  state, _ = _fit(tmp_path)
  assert _params_equal(state.params, uninterrupted[0].params)


@pytest.mark.parametrize("requested, periods, expected", [
    (16, (100, 1000), 10), (32, (100, 1000), 25), (16, (5, 10), 5), (4, (5, 10), 1),
    (8, (8, 16), 8), (1, (100,), 1), (64, (7, 700, 49), 7)])
def test_steps_per_call_divides_every_period(requested, periods, expected):
  assert loop._steps_per_call(requested, periods) == expected  # pylint: disable=protected-access


def test_steps_per_call_must_be_positive(tmp_path):
  with pytest.raises(ValueError, match="train.steps_per_call"):
    _fit(tmp_path, steps_per_call=0)


def _fit_grid(workdir, steps_per_call, model=MODEL, arrays=ARRAYS, crash_after=None):
  """30 steps logging every 8 and saving every 16: K=8 leaves 6 single steps."""
  params = trainer.init_params(model, arrays["x"], 0)

  def loss_fn(params, batch, rng):
    logits = model.apply({"params": params}, batch["x"])
    noise = 1e-3 * jax.random.normal(rng, logits.shape)
    return softmax_cross_entropy(logits + noise, batch["y"], reduction="mean"), {}

  state = trainer.create_state(params, optax.adam(1e-2), 0, MESH)
  loader = _CrashingLoader(arrays, 16, seed=3, crash_after=crash_after)
  return loop.fit(workdir=workdir, state=state,
                  train_step=_GRID_STEPS.setdefault(
                      id(model), parallel.make_train_step(loss_fn, MESH)),
                  loader=loader, mesh=MESH, num_steps=30, log_every=8,
                  checkpoint_every=16, keep_checkpoints=2, progress=False,
                  steps_per_call=steps_per_call)[0]


_GRID_STEPS = {}
CNN = models.build("cnn1d", 3, channels=(4, 4))


def _signal_arrays(n=96, length=40, seed=1):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 3, size=n).astype(np.int32)
  t = np.linspace(0, 1, length, dtype=np.float32)
  x = np.sin(2 * np.pi * (y[:, None] + 1) * t) + 0.3 * rng.normal(size=(n, length))
  return {"x": x.astype(np.float32), "y": y}


@pytest.mark.parametrize("model, arrays", [(MODEL, ARRAYS), (CNN, _signal_arrays())],
                         ids=["mlp", "cnn1d"])
def test_steps_per_call_never_changes_the_result(tmp_path, model, arrays):
  """Same data order, step keys and parameters (bit for bit) for every K.

  For the MLP, K > 1 runs a `lax.scan` and K = 1 single steps; the CNN runs
  single steps on the CPU whatever K says (see the next test).
  """
  reference = None
  for k in (1, 3, 8):
    workdir = tmp_path / f"k{k}"
    state = _fit_grid(workdir, k, model, arrays)
    assert int(state.step) == 30
    result = (jax.device_get(state.params), metrics_lib.read_metrics(workdir))
    if reference is None:
      reference = result
      continue
    assert _params_equal(result[0], reference[0]), f"steps_per_call={k}"
    assert result[1] == reference[1]
  # Killed under K=8 after 21 batches (last checkpoint: step 16), resumed with K=3.
  workdir = tmp_path / "mixed"
  with pytest.raises(KeyboardInterrupt):
    _fit_grid(workdir, 8, model, arrays, crash_after=21)
  state = _fit_grid(workdir, 3, model, arrays)
  assert _params_equal(jax.device_get(state.params), reference[0])
  assert metrics_lib.read_metrics(workdir) == reference[1]


def test_convolutions_run_one_step_per_call_on_the_cpu():
  """XLA:CPU's convolutions in a loop are slow: fit must not scan them there."""
  batch = {k: v[:16] for k, v in _signal_arrays().items()}
  mlp_batch = {k: v[:16] for k, v in ARRAYS.items()}

  def step_for(model, arrays):
    def loss_fn(params, batch, rng):
      del rng
      logits = model.apply({"params": params}, batch["x"])
      return softmax_cross_entropy(logits, batch["y"], reduction="mean"), {}
    params = trainer.init_params(model, arrays["x"], 0)
    return (parallel.make_train_step(loss_fn, MESH),
            trainer.create_state(params, optax.adam(1e-2), 0, MESH))

  cnn_step, cnn_state = step_for(CNN, batch)
  mlp_step, mlp_state = step_for(MODEL, mlp_batch)
  on_cpu = jax.default_backend() == "cpu"
  assert cnn_step.loops_well(cnn_state, batch) is (not on_cpu)
  assert mlp_step.loops_well(mlp_state, mlp_batch)


def test_bad_loop_arguments(tmp_path):
  with pytest.raises(ValueError, match="train.checkpoint_every"):
    _fit(tmp_path, checkpoint_every=0)


def test_write_results_formats_mean_and_std(tmp_path):
  rows = metrics_lib.aggregate_seeds(
      [{"method": "a", "acc": 0.5}, {"method": "a", "acc": 0.7},
       {"method": "b", "acc": 0.9}], keys=("method",), metrics=("acc",))
  assert rows[0]["acc"] == pytest.approx(0.6)
  assert rows[0]["acc_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
  assert rows[1]["seeds"] == 1 and rows[1]["acc_std"] == 0.0
  text = metrics_lib.write_results(tmp_path, rows, title="T", precision=2)
  assert "| a | 0.60 ± 0.14 | 2 |" in text
  assert json.loads((tmp_path / "results.json").read_text())["rows"] == rows
