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


def test_sigterm_saves_and_exits_cleanly(tmp_path, uninterrupted):
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
             keep_checkpoints=2, progress=False)
  assert info.value.code == 0 and info.value.step == 7
  assert (tmp_path / "checkpoints" / "7").is_dir()
  state, _ = _fit(tmp_path)
  assert _params_equal(state.params, uninterrupted[0].params)


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
