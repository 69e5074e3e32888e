"""The distillation family: smoke config end to end, teacher reuse, pieces vs references."""
import importlib
import json

import numpy as np
import pytest

from divlab import run as runner
from experiments.distillation import experiment
from experiments.distillation import methods


def _config(name="mnist1d", arg="smoke"):
  return importlib.import_module(f"configs.distillation.{name}").get_config(arg)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("distill")
  config = _config()
  rows = runner.run(config, workdir)
  return config, workdir, rows


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
