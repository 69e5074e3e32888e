"""divlab as a library in your own code: an own module, loss and config.

What the README's "Using divlab from your own loop" promises: `run_config`
builds every key `train_model` reads, an own flax module trains without a fake
`model_spec` and loads back with `load_model(path, model=...)`, `read_metrics`
refuses a wrong path, and the progress bar stays off stdout.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from divlab import train
from divlab.divergences import entropy
from divlab.train import metrics as metrics_lib
from divlab.train import parallel


class TwoLayerNet(nn.Module):
  """A module that divlab.models does not know."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(jnp.tanh(nn.Dense(8)(x)))


_RNG = np.random.default_rng(0)
_X = _RNG.normal(size=(64, 4)).astype(np.float32)
ARRAYS = {"x": _X, "y": (_X[:, 0] > 0).astype(np.int32) + (_X[:, 1] > 0.5)}
MODEL = TwoLayerNet()


def _loss_fn(params, batch, rng):  # pylint: disable=unused-argument
  """Cross-entropy minus a small entropy bonus: a loss divlab does not ship."""
  logits = MODEL.apply({"params": params}, batch["x"])
  log_probs = jax.nn.log_softmax(logits)
  nll = -jnp.take_along_axis(log_probs, batch["y"][:, None], -1)[:, 0]
  return jnp.mean(nll - 0.01 * entropy(logits)), {"nll": jnp.mean(nll)}


def _accuracy(params, batch):
  logits = MODEL.apply({"params": params}, batch["x"])
  return {"accuracy": (jnp.argmax(logits, -1) == batch["y"]).astype(jnp.float32)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("own_module")
  config = train.run_config(batch_size=16, optimizer={"name": "adam", "learning_rate": 1e-2},
                            num_steps=6, log_every=2, progress=False)
  params, final = train.train_model(
      workdir=workdir, config=config, model=MODEL, loss_fn=_loss_fn,
      train_arrays=ARRAYS, eval_sets={"test": ARRAYS}, per_example_metrics=_accuracy,
      seed=0)
  return workdir, params, final


def test_run_config_holds_every_key_train_model_reads():
  config = train.run_config(batch_size=8, optimizer={"name": "sgd"}, num_steps=3)
  assert config.data.batch_size == 8 and config.train.num_steps == 3
  # Capped at num_steps so that a short run still logs and checkpoints.
  assert config.train.log_every == 3 and config.train.checkpoint_every == 3
  assert config.train.eval_every == 0 and config.train.keep_checkpoints == 1


def test_own_module_trains_without_model_spec_and_loads_with_model(trained):
  workdir, params, final = trained
  assert not (workdir / "model.json").exists()
  assert 0.0 <= final["test_accuracy"] <= 1.0
  model, loaded = train.load_model(workdir, model=MODEL)
  assert model is MODEL
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded), params)
  # The loaded parameters compute the reported accuracy again.
  logits = MODEL.apply({"params": loaded}, ARRAYS["x"])
  accuracy = float(np.mean(np.argmax(np.asarray(logits), -1) == ARRAYS["y"]))
  np.testing.assert_allclose(accuracy, final["test_accuracy"], rtol=1e-6)


def test_load_model_without_spec_or_model_names_the_argument(trained):
  workdir, _, _ = trained
  with pytest.raises(ValueError, match="`model=`"):
    train.load_model(workdir)


def test_read_metrics_has_train_prefixed_scalars(trained):
  workdir, _, _ = trained
  records = train.read_metrics(workdir)
  train_steps = [r["step"] for r in records if "train_loss" in r]
  assert train_steps == [2, 4, 6]
  assert all("train_nll" in r for r in records if "train_loss" in r)
  assert [r["step"] for r in records if "test_accuracy" in r] == [6]


def test_read_metrics_refuses_a_missing_path_and_a_file(tmp_path, trained):
  workdir, _, _ = trained
  with pytest.raises(ValueError, match="does not exist"):
    metrics_lib.read_metrics(tmp_path / "no_such_run")
  with pytest.raises(ValueError, match="is a file"):
    metrics_lib.read_metrics(workdir / "metrics.jsonl")
  assert metrics_lib.read_metrics(tmp_path) == []  # a run that has not logged yet


def test_progress_bar_writes_to_stderr_not_stdout(tmp_path, capsys):
  config = train.run_config(batch_size=16, optimizer={"name": "adam"}, num_steps=2,
                            progress=True)
  train.train_model(workdir=tmp_path, config=config, model=MODEL, loss_fn=_loss_fn,
                    train_arrays=ARRAYS, eval_sets={}, per_example_metrics=_accuracy,
                    seed=1, desc="own-loop")
  captured = capsys.readouterr()
  assert "own-loop" in captured.err
  assert "own-loop" not in captured.out and "\r" not in captured.out


def test_a_minimal_hand_written_config_trains(tmp_path):
  config = ml_collections.ConfigDict({"data": {"batch_size": 16},
                                      "train": {"num_steps": 3},
                                      "optimizer": {"name": "sgd", "learning_rate": 0.1},
                                      "progress": False})
  train.train_model(workdir=tmp_path, config=config, model=MODEL, loss_fn=_loss_fn,
                    train_arrays=ARRAYS, eval_sets={}, per_example_metrics=_accuracy,
                    seed=0)
  # log_every and checkpoint_every default to run_config's, capped at num_steps.
  assert [r["step"] for r in train.read_metrics(tmp_path) if "train_loss" in r] == [3]
  assert (tmp_path / "checkpoints").is_dir()


@pytest.mark.parametrize("missing", ["data.batch_size", "train.num_steps", "optimizer"])
def test_a_missing_required_key_is_named(tmp_path, missing):
  config = ml_collections.ConfigDict({"data": {"batch_size": 16},
                                      "train": {"num_steps": 3},
                                      "optimizer": {"name": "sgd"}})
  head, _, tail = missing.partition(".")
  if tail:
    del config[head][tail]
  else:
    del config[head]
  with pytest.raises(ValueError, match=f"`{missing}` is missing"):
    train.train_model(workdir=tmp_path, config=config, model=MODEL, loss_fn=_loss_fn,
                      train_arrays=ARRAYS, eval_sets={}, per_example_metrics=_accuracy,
                      seed=0)


@pytest.mark.parametrize("give", ["neither", "both"])
def test_train_model_takes_exactly_one_of_loss_fn_and_train_step(tmp_path, give):
  config = train.run_config(batch_size=16, optimizer={"name": "sgd"}, num_steps=1,
                            progress=False)
  step = parallel.make_train_step(_loss_fn, parallel.make_mesh())
  extra = {} if give == "neither" else {"loss_fn": _loss_fn, "train_step": step}
  with pytest.raises(ValueError, match="exactly one of `loss_fn` and `train_step`"):
    train.train_model(workdir=tmp_path, config=config, model=MODEL, train_arrays=ARRAYS,
                      eval_sets={}, per_example_metrics=_accuracy, seed=0, **extra)
  assert not list(tmp_path.iterdir())  # refused before writing anything
