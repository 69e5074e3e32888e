"""The distillation family: smoke config end to end, teacher reuse, pieces vs references."""
import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from divlab import run as runner
from divlab.train import compilation
from experiments.distillation import experiment
from experiments.distillation import methods


def _config(name="mnist1d", arg="smoke"):
  return importlib.import_module(f"configs.distillation.{name}").get_config(arg)


_SMOKE_COMPILES = {}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("distill")
  config = _config()
  with compilation.CompileTimer() as timer:
    rows = runner.run(config, workdir)
  _SMOKE_COMPILES.update(timer.programs)
  return config, workdir, rows


def test_smoke_compiles_each_loss_once_across_regimes_and_seeds(smoke_run):
  config = smoke_run[0]
  steps = {k: v for k, v in _SMOKE_COMPILES.items() if "train_step" in k}
  # Seeds train side by side and both regimes reuse a method's step: one
  # program per method, plus the teacher's step.
  assert len(config.regimes) == 2 and config.num_seeds == 2
  assert sum(steps.values()) == len(config.methods) + 1, steps


def test_smoke_end_to_end_writes_table_plot_and_rows(smoke_run):
  config, workdir, rows = smoke_run
  saved = json.loads((workdir / "results.json").read_text())["rows"]
  assert [(r["regime"], r["method"]) for r in saved] == [
      (regime, m) for regime in config.regimes for m in config.methods]
  for row in saved:
    assert row["seeds"] == config.num_seeds
    assert 0.0 <= row["test_acc"] <= 1.0 and "test_acc_std" in row
    assert "gap_to_ce" in row
  for row in saved:
    if row["method"] == "ce":
      assert row["gap_to_ce"] == 0.0
  limited = [r for r in saved if r["regime"] == "limited"]
  assert limited[0]["train_examples"] == round(0.2 * 4000)
  assert (workdir / "results.png").stat().st_size > 0
  assert "gap_to_ce" in (workdir / "results.md").read_text()
  assert json.loads((workdir / "teacher.json").read_text())["sinkhorn_plan_marginal_error"] < 1e-4
  assert rows == saved


def test_smoke_students_learn(smoke_run):
  """Every student's loss falls and its test accuracy beats chance (0.1).

  A student that never trains (e.g. student and teacher swapped in the loss,
  so the student sits in the constant teacher slot) stays at its initial
  loss and at chance accuracy.
  """
  config, workdir, rows = smoke_run
  for row in rows:
    log = [json.loads(line) for line in
           (experiment.run_dir(workdir, row["regime"], row["method"]) / "metrics.jsonl")
           .read_text().splitlines()]
    losses = [entry["train_loss"] for entry in log if "train_loss" in entry]
    assert len(losses) == config.train.num_steps // config.train.log_every
    # KD-type losses fall fast (soft targets); CE alone only a little in 24 steps.
    assert losses[-1] < (1.0 if row["method"] == "ce" else 0.85) * losses[0], (
        row["regime"], row["method"], losses)
    assert row["test_acc"] > 0.15, (row["regime"], row["method"], row["test_acc"])


def test_rerun_reuses_subruns_and_a_teacher_by_path(smoke_run, tmp_path):
  config, workdir, rows = smoke_run
  before = {p: p.stat().st_mtime_ns for p in (workdir / "runs").rglob("summary.json")}
  assert runner.run(config, workdir) == rows
  assert before == {p: p.stat().st_mtime_ns
                    for p in (workdir / "runs").rglob("summary.json")}
  # A second experiment loads the first one's teacher instead of training one.
  config.teacher_path = str(workdir / "teacher")
  config.methods = ("ce",)
  runner.run(config, tmp_path)
  assert not (tmp_path / "teacher").exists()
  assert json.loads((tmp_path / "teacher.json").read_text())["test_acc"] == pytest.approx(
      json.loads((workdir / "teacher.json").read_text())["test_acc"])


def test_regime_subset_is_fixed_sorted_and_sized():
  a = experiment.regime_subset(1000, 0.2, seed=3)
  np.testing.assert_array_equal(a, experiment.regime_subset(1000, 0.2, seed=3))
  assert len(a) == 200 and np.all(np.diff(a) > 0)
  np.testing.assert_array_equal(experiment.regime_subset(7, 1.0, 0), np.arange(7))
  with pytest.raises(ValueError, match="regimes"):
    experiment.regime_subset(10, 0.0, 0)


def test_paired_gap_to_ce_matches_numpy():
  rng = np.random.default_rng(0)
  ce, kd = rng.uniform(size=(2, 4))
  records = ([{"regime": "full", "method": "ce", "seed": s, "train_examples": 10,
               "test_acc": float(ce[s])} for s in range(4)]
             + [{"regime": "full", "method": "kd", "seed": s, "train_examples": 10,
                 "test_acc": float(kd[s])} for s in range(4)])
  rows = experiment._rows_with_gap(records)  # pylint: disable=protected-access
  kd_row = rows[1]
  assert kd_row["gap_to_ce"] == pytest.approx(np.mean(kd - ce))
  assert kd_row["gap_to_ce_std"] == pytest.approx(np.std(kd - ce, ddof=1))


def test_method_losses_reduce_to_their_definitions():
  config = _config(arg="")
  rng = np.random.default_rng(1)
  s, t = rng.normal(size=(2, 8, 5)).astype(np.float32)
  y = rng.integers(0, 5, size=8)
  log_p = s - np.log(np.exp(s).sum(-1, keepdims=True))
  ce = -log_p[np.arange(8), y].mean()
  np.testing.assert_allclose(methods.make_batch_loss("ce", config, 5)(s, t, y), ce,
                             rtol=1e-5)
  # The dual-head student's prediction head is its first C outputs.
  both = np.concatenate([s, t], axis=-1)
  np.testing.assert_array_equal(methods.prediction_logits("dual_head_kd", both, 5), s)
  for name in methods.METHODS:
    outputs = both if name == "dual_head_kd" else s
    value = float(methods.make_batch_loss(name, config, 5)(outputs, t, y))
    assert np.isfinite(value), name
  with pytest.raises(ValueError, match="methods"):
    methods.check_methods(["kd", "nope"])


def _np_plackett_luce(s, ranking, weights):
  """sum_k w_k [log sum_{l >= k} exp(s_{pi_l}) - s_{pi_k}], by explicit loops."""
  out = np.zeros(s.shape[0])
  for b in range(s.shape[0]):
    ordered = s[b, ranking[b]]
    for k in range(s.shape[1]):
      tail = ordered[k:]
      out[b] += weights[b, k] * (np.log(np.exp(tail - tail.max()).sum()) + tail.max()
                                 - ordered[k])
  return out


def _np_teacher_ranking(t, y):
  """The true label first, then the other classes by descending teacher logit."""
  return np.stack([np.concatenate([[y[b]], [c for c in np.argsort(-t[b], kind="stable")
                                            if c != y[b]]]) for b in range(len(y))])


def test_paper_settings_and_their_ablations_against_numpy():
  """PLD at tau = 4 and 1, ListMLE at 1/C and 1, SinKD's T^2-scaled weight."""
  config = _config(arg="")
  assert config.kd.pld_temperature == 4.0 and config.kd.pld_ablation_temperature == 1.0
  rng = np.random.default_rng(2)
  num_classes = 6
  s, t = rng.normal(size=(2, 8, num_classes)).astype(np.float64) * 2
  y = rng.integers(0, num_classes, size=8)
  ranking = _np_teacher_ranking(t, y)
  loss = lambda name: float(methods.make_batch_loss(name, config, num_classes)(
      s.astype(np.float32), t.astype(np.float32), y))
  for name, tau in (("pld", 4.0), ("pld_tau1", 1.0)):
    probs = np.exp(t / tau) / np.exp(t / tau).sum(-1, keepdims=True)
    weights = np.take_along_axis(probs, ranking, -1)
    np.testing.assert_allclose(loss(name), _np_plackett_luce(s, ranking, weights).mean(),
                               rtol=1e-5)
  assert abs(loss("pld") - loss("pld_tau1")) > 1e-3
  unit = _np_plackett_luce(s, ranking, np.ones_like(s)).mean()
  np.testing.assert_allclose(loss("listmle_unit"), unit, rtol=1e-5)
  np.testing.assert_allclose(loss("listmle"), unit / num_classes, rtol=1e-5)
  # SinKD: the Sinkhorn term enters T^2 times more than in the unscaled ablation.
  temperature = config.kd.temperature
  kd = loss("kd")
  sinkhorn_official, sinkhorn_unscaled = loss("sinkhorn_kd") - kd, loss("sinkhorn_kd_unscaled") - kd
  assert sinkhorn_unscaled > 1e-6
  np.testing.assert_allclose(sinkhorn_official, temperature**2 * sinkhorn_unscaled,
                             rtol=2e-3)


@pytest.mark.parametrize("name", methods.METHODS)
def test_every_method_teaches_free_student_logits(name):
  """Adam on free student logits: the loss falls and argmax reaches the labels.

  Labels are the teacher's argmax, so every objective (label CE, teacher
  matching, rankings) pulls the same way; a loss whose gradient does not
  reach the student (student and teacher swapped) leaves it at chance.
  """
  config = _config(arg="")
  rng = np.random.default_rng(3)
  num_classes, batch = 5, 32
  teacher = jnp.asarray(3.0 * rng.normal(size=(batch, num_classes)), jnp.float32)
  labels = jnp.argmax(teacher, -1)
  width = methods.num_student_outputs(name, num_classes)
  batch_loss = methods.make_batch_loss(name, config, num_classes)
  tx = optax.adam(0.1)
  value_and_grad = jax.jit(jax.value_and_grad(lambda z: batch_loss(z, teacher, labels)))
  student = jnp.zeros((batch, width), jnp.float32)
  state = tx.init(student)
  first, _ = value_and_grad(student)
  for _ in range(60):
    value, grad = value_and_grad(student)
    updates, state = tx.update(grad, state)
    student = optax.apply_updates(student, updates)
  assert float(value) < float(first), name
  predicted = np.argmax(np.asarray(methods.prediction_logits(name, student, num_classes)), -1)
  assert np.mean(predicted == np.asarray(labels)) >= 0.9, name
