"""The ib_regression family: model selection rules and the smoke configs end to end."""
import importlib
import json

import numpy as np
import pytest

from divlab import run as runner
from divlab.train import compilation
from experiments.ib_regression import experiment
from experiments.ib_regression import plots
from experiments.ib_regression import toy

def _config(name, arg=""):
  return importlib.import_module(f"configs.ib_regression.{name}").get_config(arg)


def _history_entry(step, val, test, fgsm):
  return {"step": step, "val_sq_err": val, "test_sq_err": test,
          "test_fgsm_0": test, "test_fgsm_0.1": fgsm}


class TestModelSelection:

  def test_step_is_chosen_on_validation_only(self):
    history = [{"step": 10, "train_loss": 1.0},
               _history_entry(10, 0.9, 0.1, 0.5),   # best test, worse validation
               _history_entry(20, 0.4, 0.7, 0.8),
               _history_entry(30, 0.4, 0.2, 0.3),   # tie on validation: earliest wins
               _history_entry(40, 0.6, 0.05, 0.1)]
    chosen = experiment.select_step(history, [0.0, 0.1])
    assert chosen["step"] == 20
    assert chosen["test_mse"] == 0.7
    assert chosen["fgsm_0.1"] == 0.8

  def test_beta_is_chosen_on_mean_validation_rmse(self):
    rows = [{"dataset": "d", "method": "cs_ib", "beta": 0.01, "val_rmse": 1.0,
             "test_rmse": 0.1},
            {"dataset": "d", "method": "cs_ib", "beta": 0.1, "val_rmse": 0.8,
             "test_rmse": 0.9},
            {"dataset": "d", "method": "mse", "beta": 0.0, "val_rmse": 0.9,
             "test_rmse": 0.5}]
    chosen = {r["method"]: r["beta"] for r in experiment.select_betas(rows)}
    assert chosen == {"cs_ib": 0.1, "mse": 0.0}

  def test_optimistic_protocol_selects_step_and_beta_on_test(self):
    history = [_history_entry(10, 0.9, 0.1, 0.5), _history_entry(20, 0.4, 0.7, 0.8),
               _history_entry(30, 0.5, 0.05, 0.3)]
    chosen = experiment.select_step(history, [0.0])
    assert chosen["test_mse"] == 0.7                      # validation's step (20)
    assert chosen["test_mse_selected_on_test"] == 0.05    # the lowest test error
    rows = [{"dataset": "d", "method": "cs_ib", "beta": b, "val_rmse": v,
             "test_rmse": t, "test_rmse_std": 0.0, "test_rmse_on_test": o,
             "test_rmse_on_test_std": 0.0, "seeds": 2}
            for b, v, t, o in ((0.01, 1.0, 0.9, 0.5), (0.1, 0.8, 1.1, 0.7))]
    (row,) = experiment.select_betas_on_test(rows)
    assert (row["beta_on_val"], row["test_rmse_val_selected"]) == (0.1, 1.1)
    assert (row["beta_on_test"], row["test_rmse_test_selected"]) == (0.01, 0.5)

  def test_no_logged_evaluation_raises(self):
    with pytest.raises(ValueError, match="eval_every"):
      experiment.select_step([{"step": 5, "train_loss": 1.0}], [0.0])


def test_unknown_method_and_bandwidth_raise(tmp_path):
  config = _config("regression", "smoke")
  config.methods = ("mse", "kl_ib")
  with pytest.raises(ValueError, match="kl_ib"):
    experiment.run(config, tmp_path)
  config = _config("regression", "smoke")
  config.loss.bandwidth_rule = "silverman"
  with pytest.raises(ValueError, match="bandwidth_rule"):
    experiment.run(config, tmp_path)


def test_regression_smoke_end_to_end_and_resume(tmp_path):
  config = _config("regression", "smoke")
  rows = runner.run(config, tmp_path)
  results = json.loads((tmp_path / "results.json").read_text())["rows"]
  assert len(results) == len(config.methods) == len(rows)
  for row in results:
    for key in ("dataset", "method", "beta", "test_rmse", "test_rmse_std", "seeds"):
      assert key in row
    assert row["seeds"] == config.num_seeds
    assert np.isfinite(row["test_rmse"]) and row["test_rmse"] > 0
  # FGSM at a small epsilon does not lower the error: it ascends it.
  robustness = json.loads((tmp_path / "robustness.json").read_text())["rows"]
  for row in robustness:
    assert row["rmse_eps0.1"] >= row["rmse_eps0"] - 1e-6
  # Selecting on test can only look better: its minimum runs over a superset.
  optimistic = json.loads((tmp_path / "optimistic.json").read_text())["rows"]
  assert {r["method"] for r in optimistic} == set(config.methods)
  for row in optimistic:
    assert row["test_rmse_test_selected"] <= row["test_rmse_val_selected"] + 1e-9
  sweep = json.loads((tmp_path / "sweep.json").read_text())["rows"]
  assert {r["method"] for r in sweep} == set(config.methods)
  assert all(np.isfinite(r["i_xt"]) and np.isfinite(r["i_yt"]) for r in sweep)
  assert (tmp_path / "information_plane.png").stat().st_size > 0
  assert (tmp_path / "beta_sweep.png").stat().st_size > 0
  text = (tmp_path / "results.md").read_text()
  assert "FGSM" in text and "cs_ib" in text and "Optimistic" in text
  # The three CS-IB variants train different objectives, so their models differ.
  cs_rows = {r["method"]: r["test_rmse"] for r in results if r["method"].startswith("cs_ib")}
  assert len(cs_rows) == 3 and len({round(v, 6) for v in cs_rows.values()}) == 3
  # Re-running the same workdir trains nothing and rebuilds the same table.
  marker = tmp_path / "runs" / "divlab_diabetes" / "cs_ib_beta0.1_seed0" / "summary.json"
  before = marker.stat().st_mtime_ns
  again = runner.run(config, tmp_path)
  assert marker.stat().st_mtime_ns == before
  assert [r["test_rmse"] for r in again] == [r["test_rmse"] for r in rows]


def test_two_gaussians_smoke(tmp_path):
  config = _config("two_gaussians", "smoke")
  rows = runner.run(config, tmp_path)
  before, after = rows
  assert before["stage"] == "before" and after["stage"] == "after"
  assert after["cs_divergence"] < 0.5 * before["cs_divergence"]
  assert (tmp_path / "two_gaussians.png").stat().st_size > 0
  target, free = toy.make_points(config)
  assert target.shape == (400, 2) and free.shape == (400, 2)
  # The target really is the two modes at (-4, -4) and (+4, +4).
  np.testing.assert_allclose(target[:200].mean(0), [-4, -4], atol=0.25)
  np.testing.assert_allclose(target[200:].mean(0), [4, 4], atol=0.25)


def test_two_gaussians_batch_must_be_the_whole_sample(tmp_path):
  config = _config("two_gaussians", "smoke")
  config.data.batch_size = 100
  with pytest.raises(ValueError, match="batch_size"):
    toy.run(config, tmp_path)


def test_a_beta_sweep_compiles_one_train_step_per_method(tmp_path):
  config = _config("regression", "smoke")
  config.methods = ("mse", "cs_ib")
  config.betas = (0.1, 1.0)
  config.num_seeds = 1
  with compilation.CompileTimer() as timer:
    runner.run(config, tmp_path)
  steps = {k: v for k, v in timer.programs.items() if "train_step" in k}
  assert sum(steps.values()) == len(config.methods), steps
  # The bound beta reaches the loss: the two CS-IB runs train different models.
  sweep = json.loads((tmp_path / "sweep.json").read_text())["rows"]
  cs_ib = {r["beta"]: r["test_rmse"] for r in sweep if r["method"] == "cs_ib"}
  assert set(cs_ib) == {0.1, 1.0} and cs_ib[0.1] != cs_ib[1.0]


def test_beta_sweep_plots_seed_means_and_sample_stds(tmp_path):
  records = [{"dataset": "d", "method": m, "beta": b, "test_rmse": v}
             for m, b, v in [("mse", 0.0, 2.0), ("mse", 0.0, 4.0),
                             ("cs_ib", 1.0, 1.0), ("cs_ib", 1.0, 3.0),
                             ("cs_ib", 0.1, 5.0), ("cs_ib", 0.1, 5.0)]]
  drawn = plots.beta_sweep(tmp_path / "sweep.png", records, ["d"], ["mse", "cs_ib"])
  betas, means, stds = drawn[("d", "cs_ib")]
  np.testing.assert_array_equal(betas, [0.1, 1.0])  # increasing beta
  np.testing.assert_allclose(means, [5.0, 2.0])
  np.testing.assert_allclose(stds, [0.0, np.sqrt(2.0)])  # ddof = 1
  np.testing.assert_allclose(drawn[("d", "mse")][1], [3.0])
  assert (tmp_path / "sweep.png").stat().st_size > 0
