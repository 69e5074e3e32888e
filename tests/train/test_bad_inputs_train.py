"""Bad and edge inputs to the runner, the workdir and the checkpoints.

Each case asserts the exact outcome: the exit status, the one line naming the
path or key, and which files exist afterwards. The CLI runs in-process
(`divlab.run.main(argv)`), so the runs share compilations.
"""
import json
import os
import pathlib
import re
import shutil
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from divlab import run as run_lib
from divlab import train
from divlab.train import checkpoint as checkpoint_lib
from divlab.train import figures
from divlab.train import metrics as metrics_lib
from divlab.train import parallel
from divlab.train import trainer

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "classify" / "mnist1d.py")
SMOKE = [f"--config={CONFIG}:smoke", "--config.progress=False"]
# Smaller models still, for the cases that train a run of their own.
TINY = [*SMOKE, "--config.models.mlp.hidden=(8,)", "--config.models.cnn.channels=(4,)"]


def cli(*args, cwd=None):
  """Runs `python -m divlab.run ARGS` in this process: (status, stdout, stderr)."""
  import io  # pylint: disable=g-import-not-at-top
  import contextlib  # pylint: disable=g-import-not-at-top
  argv = ["divlab.run", *args]
  out, err = io.StringIO(), io.StringIO()
  saved_argv, saved_cwd = sys.argv, os.getcwd()
  sys.argv = argv  # config_flags reads its overrides from sys.argv
  try:
    if cwd is not None:
      os.chdir(cwd)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        run_lib.main(argv)
        code = 0
      except SystemExit as exit_:
        code = exit_.code or 0
  finally:
    sys.argv = saved_argv
    os.chdir(saved_cwd)
  return code, out.getvalue(), err.getvalue()


def error_lines(stderr):
  return [line for line in stderr.splitlines() if line.startswith("error:")]


def flip_bytes(step_dir):
  """Flips 16 bytes in the middle of the step's largest array file (same size)."""
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
  target = max(files, key=lambda p: p.stat().st_size)
  data = bytearray(target.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
  target.write_bytes(bytes(data))
  return target


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished smoke run (two models, checkpoints at steps 10 and 20)."""
  workdir = tmp_path_factory.mktemp("finished")
  code, _, err = cli(*SMOKE, f"--workdir={workdir}")
  assert code == 0, err
  return workdir


def copy_run(finished, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir)
  return workdir


# --- The command line and the workdir: refused before anything is written. ---

def _file(tmp_path):
  path = tmp_path / "a_file"
  path.write_text("not a directory")
  return path


def _run(t):
  return f"--workdir={t / 'run'}"


USAGE_CASES = {
    # name: t (a temporary folder) -> (arguments, words expected in the error line)
    "empty_workdir": lambda t: ([*SMOKE, "--workdir="], ["--workdir is empty"]),
    "no_workdir": lambda t: ([*SMOKE], ["--workdir is empty"]),
    "workdir_is_a_file": lambda t: (
        [*SMOKE, f"--workdir={_file(t)}"],
        [f"--workdir={t / 'a_file'} is an existing file, not a directory"]),
    "workdir_below_a_file": lambda t: (
        [*SMOKE, f"--workdir={_file(t)}/run"],
        [f"--workdir={t / 'a_file' / 'run'} is not writable"]),
    "missing_config_file": lambda t: (
        [f"--config={t / 'nonexistent.py'}", _run(t)],
        [f"--config={t / 'nonexistent.py'}: no such config file"]),
    "missing_config_file_with_override": lambda t: (
        [f"--config={t / 'nonexistent.py'}:smoke", "--config.seed=1", _run(t)],
        [f"--config={t / 'nonexistent.py'}: no such config file"]),
    "unknown_top_level_key": lambda t: (
        [*SMOKE, "--config.sed=1", _run(t)],
        ["unknown config key `sed`", "closest valid key is `seed`"]),
    "unknown_nested_key": lambda t: (
        [*SMOKE, "--config.train.num_step=5", _run(t)],
        ["unknown config key `train.num_step`", "closest valid key is `train.num_steps`"]),
    "unknown_key_foo": lambda t: (
        [*SMOKE, "--config.foo=1", _run(t)],
        ["unknown config key `foo`", "closest valid key is `"]),
    "wrong_type": lambda t: (
        [*SMOKE, "--config.train.num_steps=abc", _run(t)],
        ["--config.train.num_steps=abc"]),
    "negative_num_steps": lambda t: (
        [*SMOKE, "--config.train.num_steps=-5", _run(t)],
        ["`train.num_steps` must be >= 0, got -5"]),
    "negative_eval_every": lambda t: (
        [*SMOKE, "--config.train.eval_every=-1", _run(t)],
        ["`train.eval_every` must be >= 0, got -1"]),
    "zero_keep_checkpoints": lambda t: (
        [*SMOKE, "--config.train.keep_checkpoints=0", _run(t)],
        ["`train.keep_checkpoints` must be >= 1, got 0"]),
    "zero_batch_size": lambda t: (
        [*SMOKE, "--config.data.batch_size=0", _run(t)],
        ["`data.batch_size` must be >= 1, got 0"]),
    "unknown_experiment": lambda t: (
        [*SMOKE, "--config.experiment=no_such_family", _run(t)],
        ["`experiment`='no_such_family' names no package"]),
    "incomplete_multiprocess_flags": lambda t: (
        [*SMOKE, "--num_processes=2", _run(t)],
        ["multi-process settings are incomplete", "`coordinator_address`",
         "`process_id`"]),
    "process_id_out_of_range": lambda t: (
        [*SMOKE, "--num_processes=2", "--process_id=2",
         "--coordinator_address=localhost:1", _run(t)],
        ["`process_id`=2 must be in [0, num_processes=2)"]),
}


@pytest.mark.parametrize("case", sorted(USAGE_CASES))
def test_usage_error_is_one_line_and_writes_nothing(case, tmp_path, monkeypatch):
  if "JAX_COORDINATOR_ADDRESS" in os.environ:
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS")
  args, expected = USAGE_CASES[case](tmp_path)
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  code, out, err = cli(*args, cwd=cwd)
  assert code == 2, (out, err)
  lines = error_lines(err)
  assert len(lines) == 1, err
  for words in expected:
    assert words in lines[0], lines[0]
  assert "Traceback" not in err
  assert not list(cwd.iterdir())  # nothing written into the current directory
  assert not (tmp_path / "run" / "config.json").exists()


def test_coordinator_address_alone_names_the_missing_settings(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  env = {**os.environ, "JAX_COORDINATOR_ADDRESS": "localhost:1", "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-m", "divlab.run", *SMOKE,
                        f"--workdir={tmp_path / 'run'}"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  (line,) = error_lines(out.stderr)
  assert "Number of processes must be defined" in line
  assert "--num_processes and --process_id" in line and "DIVLAB_PROCESS_ID" in line
  assert not (tmp_path / "run").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only directories")
def test_read_only_workdir_is_refused(tmp_path):
  workdir = tmp_path / "ro"
  workdir.mkdir()
  workdir.chmod(0o555)
  try:
    code, _, err = cli(*SMOKE, f"--workdir={workdir}")
  finally:
    workdir.chmod(0o755)
  assert code == 2
  assert error_lines(err) == [error_lines(err)[0]]
  assert f"--workdir={workdir} is not writable" in err
  assert not list(workdir.iterdir())


def test_refused_bad_value_leaves_no_config_so_the_fix_runs(tmp_path):
  workdir = tmp_path / "run"
  code, _, err = cli(*TINY, "--config.data.name=no_such_dataset", f"--workdir={workdir}")
  assert code == 2 and "no_such_dataset" in err
  assert not (workdir / "config.json").exists()
  code, _, err = cli(*TINY, "--config.train.num_steps=4", f"--workdir={workdir}")
  assert code == 0, err
  assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == 4


# --- A finished run. ---

def test_finished_run_says_so_and_rebuilds_the_same_table(finished, tmp_path):
  workdir = copy_run(finished, tmp_path)
  before = (workdir / "results.json").read_text()
  code, out, err = cli(*SMOKE, f"--workdir={workdir}")
  assert code == 0, err
  assert f"{workdir} already finished; rebuilt results from its checkpoints." in out
  assert (workdir / "results.json").read_text() == before


def test_finished_run_refuses_more_steps_even_with_allow_config_change(finished, tmp_path):
  workdir = copy_run(finished, tmp_path)
  code, _, err = cli(*SMOKE, "--config.train.num_steps=30", "--allow_config_change",
                     f"--workdir={workdir}")
  assert code == 2
  assert error_lines(err) == [
      f"error: {workdir} already finished with train.num_steps=20; "
      "--allow_config_change does not extend a finished run (its models and tables "
      "are final): use a new --workdir."]
  assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == 20


def test_finished_run_refuses_a_changed_config_without_the_flag(finished, tmp_path):
  workdir = copy_run(finished, tmp_path)
  code, _, err = cli(*SMOKE, "--config.seed=3", f"--workdir={workdir}")
  assert code == 2
  assert "holds a run with a different config (keys differing: seed)" in err


def test_unfinished_run_continues_with_more_steps(tmp_path):
  workdir = tmp_path / "run"
  code, _, err = cli(*TINY, "--config.train.num_steps=10", f"--workdir={workdir}")
  assert code == 0, err
  (workdir / "finished.json").unlink()  # as if it had been killed before the end
  for sub in (workdir / "runs").iterdir():
    (sub / "final_metrics.json").unlink()
  code, _, err = cli(*TINY, "--config.train.num_steps=20", "--allow_config_change",
                     f"--workdir={workdir}")
  assert code == 0, err
  steps = [r["step"] for r in metrics_lib.read_metrics(workdir / "runs" / "mlp_seed0")]
  assert max(steps) == 20


@pytest.mark.parametrize("model", ["cnn", "mlp"])
def test_corrupt_latest_checkpoint_of_a_finished_run(finished, tmp_path, model):
  workdir = copy_run(finished, tmp_path)
  run_dir = workdir / "runs" / f"{model}_seed0"
  flipped = flip_bytes(run_dir / "checkpoints" / "20")
  assert flipped.stat().st_size == (finished / flipped.relative_to(workdir)).stat().st_size
  code, out, err = cli(*SMOKE, f"--workdir={workdir}")
  assert code == 0, err
  assert f"checkpoint at step 20 in {run_dir / 'checkpoints'} is corrupt" in out
  assert "already finished" not in out
  assert (run_dir / "checkpoints_corrupt" / "20").is_dir()
  assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["10", "20"]
  for name in ("results.json", "results.md"):
    assert (workdir / name).read_text() == (finished / name).read_text()
  for sub in ("cnn_seed0", "mlp_seed0"):
    assert ((workdir / "runs" / sub / "metrics.jsonl").read_text()
            == (finished / "runs" / sub / "metrics.jsonl").read_text())


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path):
  workdir = tmp_path / "run"
  # Adam moves every weight by ~lr per step: the logits overflow at once.
  code, _, err = cli(*SMOKE, "--config.optimizer.learning_rate=1e30",
                     "--config.optimizer.warmup_steps=0", f"--workdir={workdir}")
  assert code == 1
  (line,) = error_lines(err)
  assert "loss is nan at step" in line and "stopping" in line
  assert not (workdir / "results.md").exists()
  assert not (workdir / "finished.json").exists()


def test_nan_metrics_are_flagged_and_exit_non_zero(tmp_path, monkeypatch):
  import experiments.classify  # pylint: disable=g-import-not-at-top

  def diverged_run(config, workdir):
    del config
    rows = [{"model": "cnn", "test_acc": 0.102, "test_loss": float("nan")}]
    metrics_lib.write_results(workdir, rows, title="Classification")
    return rows

  # The experiment is replaced by one whose evaluation diverged; what is under
  # test is the runner's handling of its table.
  monkeypatch.setattr(experiments.classify, "run", diverged_run)
  workdir = tmp_path / "run"
  code, _, err = cli(*SMOKE, f"--workdir={workdir}")
  assert code == 3
  (line,) = error_lines(err)
  assert f"non-finite metrics in {workdir / 'results.json'}: test_loss (row 0)" in line
  assert "WARNING: non-finite metrics (test_loss (row 0))" in (
      workdir / "results.md").read_text()
  assert not (workdir / "finished.json").exists()


def test_documented_nan_column_is_not_flagged(tmp_path):
  rows = [{"method": "ga", "reached_at": float("nan"), "acc": 0.5},
          {"method": "npo", "reached_at": 0.8, "acc": float("inf")}]
  text = metrics_lib.write_results(tmp_path, rows, nan_allowed=("reached_at",))
  assert "WARNING: non-finite metrics (acc (row 1))" in text
  assert metrics_lib.find_non_finite_results(tmp_path) == {"results.json": ["acc (row 1)"]}
  rows[1]["acc"] = 0.7
  text = metrics_lib.write_results(tmp_path, rows, nan_allowed=("reached_at",))
  assert "WARNING" not in text
  assert metrics_lib.find_non_finite_results(tmp_path) == {}


# --- Checkpoints below the runner. ---

def _state(value):
  params = {"w": jnp.full((64,), value, jnp.float32)}
  return trainer.create_state(params, optax.sgd(0.1), 0, parallel.make_mesh())


def test_checkpointer_skips_a_flipped_step_and_saves_it_again(tmp_path):
  checkpointer = checkpoint_lib.Checkpointer(tmp_path / "checkpoints", keep=3)
  checkpointer.save(1, _state(1.0), {"pos": 1})
  checkpointer.save(2, _state(2.0), {"pos": 2})
  flip_bytes(tmp_path / "checkpoints" / "2")
  step, state, data_state = checkpointer.restore_latest(_state(0.0))
  assert (step, data_state) == (1, {"pos": 1})
  np.testing.assert_array_equal(np.asarray(state.params["w"]), np.full(64, 1.0))
  assert checkpointer.all_steps() == [1]
  assert checkpointer.save(2, _state(2.0), {"pos": 2})  # not blocked by the bad copy
  assert checkpoint_lib.verify_step(tmp_path / "checkpoints" / "2") is None
  checkpointer.close()


def test_verify_step_names_missing_and_extra_files(tmp_path):
  checkpointer = checkpoint_lib.Checkpointer(tmp_path / "checkpoints")
  checkpointer.save(5, _state(1.0), {})
  checkpointer.close()
  step_dir = tmp_path / "checkpoints" / "5"
  (step_dir / "stray").write_text("x")
  assert checkpoint_lib.verify_step(step_dir) == "stray was not part of the saved checkpoint"
  (step_dir / "stray").unlink()
  (step_dir / "data" / "metadata").unlink()
  assert checkpoint_lib.verify_step(step_dir) == "data/metadata is missing"


def test_load_model_restores_a_teacher_saved_on_8_devices(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  script = textwrap.dedent(f"""
      import json, pathlib
      import flax, jax, numpy as np, optax
      from divlab import models
      from divlab.train import parallel, trainer
      from divlab.train.checkpoint import Checkpointer
      assert jax.device_count() == 8
      path = pathlib.Path({str(tmp_path)!r})
      spec = {{"name": "mlp", "num_outputs": 3, "hidden": [8]}}
      params = trainer.init_params(models.build(**spec), np.ones((1, 5), np.float32), 7)
      state = trainer.create_state(params, optax.adam(1e-3), 7, parallel.make_mesh())
      (path / "model.json").write_text(json.dumps(spec))
      checkpointer = Checkpointer(path / "checkpoints")
      checkpointer.save(1, state, {{}})
      checkpointer.close()
      flat = flax.traverse_util.flatten_dict(jax.device_get(params), sep="/")
      np.savez(path / "params.npz", **flat)
  """)
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu"}
  subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=ROOT,
                 timeout=300)
  model, params = trainer.load_model(tmp_path)
  import flax  # pylint: disable=g-import-not-at-top
  saved = np.load(tmp_path / "params.npz")
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  assert sorted(flat) == sorted(saved.files)
  for key, value in flat.items():
    np.testing.assert_array_equal(np.asarray(value), saved[key])
  logits = model.apply({"params": params}, jnp.ones((2, 5)))
  assert logits.shape == (2, 3)


# --- Notebooks. ---

def _install_cell(path):
  nb = json.loads(path.read_text())
  cells = [''.join(c["source"]) for c in nb["cells"]
           if c["cell_type"] == "code" and "DIVLAB_SOURCE" in ''.join(c["source"])]
  assert len(cells) == 1, path
  return cells[0]


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_colab_install_cell_stops_when_the_source_is_unset(path, monkeypatch):
  import importlib.util  # pylint: disable=g-import-not-at-top
  cell = _install_cell(path)
  assert 'DIVLAB_SOURCE = ""' in cell
  monkeypatch.delenv("DIVLAB_SOURCE", raising=False)
  # As on a fresh Colab runtime: google.colab loaded, divlab not installed.
  monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "divlab" else real_find_spec(name, *a))
  with pytest.raises(RuntimeError, match="DIVLAB_SOURCE is not set"):
    exec(compile(cell, str(path), "exec"), {})  # pylint: disable=exec-used


def test_no_guessed_repository_url_anywhere():
  guessed = "github.com/" + "divlab"
  hits = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
          if p.is_file() and ".git" not in p.parts and p.suffix in
          {".py", ".md", ".ipynb", ".txt", ".cfg", ".toml", ".yaml", ".yml"}
          and guessed in p.read_text(errors="ignore")]
  assert hits == []


def test_save_tree_round_trips_and_load_tree_names_a_missing_file(tmp_path):
  from divlab.train import checkpoint  # pylint: disable=g-import-not-at-top
  tree = {"dense": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3),
                    "bias": np.array([np.nan, -np.inf], np.float32)},
          "step": np.array(7, np.int32), "half": np.ones(3, jnp.bfloat16)}
  checkpoint.save_tree(tmp_path / "stage" / "params.msgpack", tree)
  back = checkpoint.load_tree(tmp_path / "stage" / "params.msgpack")
  for got, want in zip(jax.tree.leaves(back), jax.tree.leaves(tree)):
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(np.asarray(got, np.float64), np.asarray(want, np.float64))
  with pytest.raises(ValueError, match="`path`"):
    checkpoint.load_tree(tmp_path / "missing.msgpack")


# ----------------------------------------------------------------------------
# Library functions of the training layer: loss arguments and learning curves.


def _weighted_loss(params, batch, rng, beta):
  del rng
  return beta * jnp.sum(params["w"] * batch["x"]), {}


def _loss_step(**loss_args):
  return parallel.make_train_step(_weighted_loss, parallel.make_mesh(),
                                  loss_args=loss_args)


_HISTORY = [{"step": 1, "train_loss": 1.0}]

LIBRARY_CASES = {
    "make_train_step loss_args not a dict": (lambda: parallel.make_train_step(
        _weighted_loss, parallel.make_mesh(), loss_args=[("beta", 0.1)]), "`loss_args`"),
    "make_train_step loss arg a string": (lambda: _loss_step(beta="0.1"), "`beta`"),
    "with_loss_args unknown name": (lambda: _loss_step(beta=0.1).with_loss_args(
        gamma=1.0), "`gamma`"),
    "with_loss_args new shape": (lambda: _loss_step(beta=0.1).with_loss_args(
        beta=np.ones(2)), "`beta`"),
    "with_loss_args None": (lambda: _loss_step(beta=0.1).with_loss_args(beta=None),
                            "`beta`"),
    "with_loss_args fraction into int": (lambda: _loss_step(beta=1).with_loss_args(
        beta=0.5), "`beta`"),
    "learning_curves keys a string": (lambda: figures.learning_curves(
        "c.png", {"a": [_HISTORY]}, "train_loss"), "`keys`"),
    "learning_curves histories empty": (lambda: figures.learning_curves(
        "c.png", {}, ("train_loss",)), "`histories`"),
    "learning_curves one run not wrapped in a list": (lambda: figures.learning_curves(
        "c.png", {"a": _HISTORY}, ("train_loss",)), "`histories`['a']"),
    "learning_curves record without step": (lambda: figures.learning_curves(
        "c.png", {"a": [[{"train_loss": 1.0}]]}, ("train_loss",)), "`histories`['a']"),
    "learning_curves nothing logged": (lambda: figures.learning_curves(
        "c.png", {"a": [_HISTORY]}, ("test_accuracy",)), "`keys`"),
}


@pytest.mark.parametrize("case", sorted(LIBRARY_CASES))
def test_training_layer_bad_input_names_the_argument(case, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  call, name = LIBRARY_CASES[case]
  with pytest.raises(ValueError, match=re.escape(name)):
    call()
  assert not list(tmp_path.iterdir())  # nothing drawn or written


def test_nan_loss_argument_gives_a_nan_loss_and_bf16_values_rebind():
  mesh = parallel.make_mesh()
  state = train.create_state({"w": jnp.ones(3)}, optax.sgd(0.1), 0, mesh)
  batch = parallel.shard_batch({"x": np.ones((len(jax.devices()), 3), np.float32)}, mesh)
  step = _loss_step(beta=0.5)
  _, metrics = step.with_loss_args(beta=np.nan)(state, batch)
  assert np.isnan(float(metrics["loss"]))
  bf16_step = _loss_step(beta=jnp.asarray(0.5, jnp.bfloat16))
  rebound = bf16_step.with_loss_args(beta=0.25)
  assert rebound.loss_args["beta"].dtype == jnp.bfloat16
  state = train.create_state({"w": jnp.ones(3)}, optax.sgd(0.1), 0, mesh)
  _, metrics = rebound(state, batch)
  # 0.25 * sum(w * x) over the rows: 0.25 * 3 per row.
  np.testing.assert_allclose(float(metrics["loss"]), 0.75 * len(jax.devices()))


def test_learning_curves_carry_a_nan_metric_as_a_nan_mean(tmp_path):
  runs = [[{"step": 1, "train_loss": 1.0}, {"step": 2, "train_loss": float("nan")}],
          [{"step": 1, "train_loss": 3.0}, {"step": 2, "train_loss": 1.0}]]
  lines = figures.learning_curves(tmp_path / "c.png", {"a": runs}, ("train_loss",))
  mean = lines[("a", "train_loss")][1]
  assert mean[0] == 2.0 and np.isnan(mean[1])
