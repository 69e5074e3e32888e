"""The unlearning family: smoke configs end to end, and its pieces against references."""
import importlib
import json

import numpy as np
import pytest
from scipy import integrate
from scipy import special
from scipy import stats

from divlab import run as runner
from experiments.unlearning import experiment
from experiments.unlearning import synthetic

def _config(name, arg="smoke"):
  return importlib.import_module(f"configs.unlearning.{name}").get_config(arg)


def test_npo_synthetic_smoke_end_to_end(tmp_path):
  config = _config("npo_synthetic")
  rows = runner.run(config, tmp_path)
  saved = json.loads((tmp_path / "results.json").read_text())["rows"]
  assert [r["method"] for r in saved] == ["GA", "GradDiff", "NPO", "NPO+RT"]
  assert [r["method"] for r in rows] == [r["method"] for r in saved]
  for row in saved:
    assert row["seeds"] == config.num_seeds
    for key in ("forget_kl_start", "forget_kl_final", "retain_kl_final"):
      assert np.isfinite(row[key]) and row[key] >= 0 and f"{key}_std" in row
    # All methods start from the same original models.
    assert row["forget_kl_start"] == pytest.approx(saved[0]["forget_kl_start"])
  assert (tmp_path / "collapse.png").stat().st_size > 0
  curves = np.load(tmp_path / "trajectories.npz")
  steps = config.train.num_steps // config.train.eval_every + 1
  assert curves["npo/forget_kl"].shape == (steps, config.num_seeds)


def test_synthetic_labels_follow_the_logistic_model():
  """P(target class) = E[sigmoid(N(intercept, 1))] for the released model."""
  rng = np.random.default_rng(0)
  arrays = synthetic.sample_mode(rng, 40000, dim=16, mean_sign=1.0, target_class=1,
                                 alpha=1.0, intercept=1.0, theta_scale=1.0,
                                 num_classes=2)
  expected, _ = integrate.quad(
      lambda t: special.expit(t) * stats.norm.pdf(t, loc=1.0), -12, 14)
  assert arrays["y"].mean() == pytest.approx(expected, abs=0.01)
  np.testing.assert_allclose(arrays["x"].mean(0), np.ones(16), atol=0.03)


def test_reference_models_follow_plain_gradient_descent():
  """The last layer after a few full-batch steps, against numpy GD on the logistic loss."""
  rng = np.random.default_rng(1)
  weights = rng.normal(size=(6, 3)).astype(np.float32) / np.sqrt(3)
  x = rng.normal(size=(20, 3)).astype(np.float32)
  y = rng.integers(0, 2, size=20).astype(np.int32)
  params, _ = synthetic.fit_last_layer(weights, x, y, num_classes=2, num_steps=5,
                                       learning_rate=0.5)
  z = np.maximum(x.astype(np.float64) @ weights.T.astype(np.float64), 0)
  a = np.zeros(6)
  for _ in range(5):
    p0 = special.expit(z @ a)  # logits (z.a, 0): p(class 0) = sigmoid(z.a)
    a -= 0.5 * z.T @ (p0 - (y == 0)) / len(y)
  np.testing.assert_allclose(np.asarray(params["a"])[:, 0], a, rtol=1e-4, atol=1e-6)


def test_tradeoff_point_interpolates_the_first_crossing():
  forget = np.array([0.9, 0.7, 0.3, 0.1, 0.4])
  retain = np.array([0.8, 0.8, 0.6, 0.2, 0.7])
  # Crossing 0.5 between 0.7 and 0.3: halfway, so retain 0.7.
  assert experiment.tradeoff_point(forget, retain, 0.5) == pytest.approx(0.7)
  assert experiment.tradeoff_point(forget, retain, 0.95) == pytest.approx(0.8)
  assert np.isnan(experiment.tradeoff_point(forget, retain, 0.05))


def test_forget_sets_and_base_members():
  config = _config("mnist1d", "")
  labels = np.repeat(np.arange(10), 50)
  sets = experiment.forget_sets(config, labels)
  assert len(sets["random10"]) == 50 and len(np.unique(sets["random10"])) == 50
  np.testing.assert_array_equal(sets["class3"], np.arange(150, 200))
  members = experiment.base_members(config, len(labels), sets)
  n, m = config.num_models, config.datamodels.num_models
  assert len(members) == n + 2 * 2 * n + m
  assert len({mem["seed"] for mem in members}) == len(members)  # distinct seeds
  for index in experiment.select(members, "oracle", "class3"):
    assert not np.isin(members[index]["indices"], sets["class3"]).any()
  sizes = {len(members[i]["indices"]) for i in experiment.select(members, "subset")}
  assert sizes == {250}


def _check_classification_rows(rows, config):
  methods = {"noop": "original (no-op)", "ga": "GA", "npo_gu": "NPO+GU",
             "dmm": "DMM (datamodel matching)", "retrain": "retrain (oracle)"}
  expected = [(fs, methods[m]) for fs in ("random10", "class3") for m in config.methods]
  assert [(r["forget_set"], r["method"]) for r in rows] == expected
  for row in rows:
    assert row["seeds"] == config.num_models
    for key in ("forget_acc", "retain_acc", "test_acc", "mia_auc", "klom_forget",
                "klom_retain", "klom_val"):
      assert f"{key}_std" in row and np.isfinite(row[key]), key
    for key in ("forget_acc", "retain_acc", "test_acc", "mia_auc"):
      assert 0.0 <= row[key] <= 1.0
    # KLoM is capped by the oracle-probability floor: q >= floor / (1 + bins floor)
    # after renormalisation.
    cap = np.log((1 + config.klom.num_bins * config.klom.floor) / config.klom.floor)
    assert 0.0 <= row["klom_forget"] <= cap + 1e-9


def test_mnist1d_smoke_end_to_end_and_resume(tmp_path):
  config = _config("mnist1d")
  rows = runner.run(config, tmp_path)
  saved = json.loads((tmp_path / "results.json").read_text())["rows"]
  _check_classification_rows(saved, config)
  trade = json.loads((tmp_path / "tradeoff.json").read_text())["rows"]
  assert {r["method"] for r in trade} == {"GA", "NPO+GU", "DMM (datamodel matching)"}
  gu = [r for r in trade if r["method"] == "NPO+GU"]
  # GU's projected forget gradient is orthogonal to the retain gradient.
  assert all(abs(r["gu_cos_after"]) < 1e-3 for r in gu)
  for name in ("tradeoff.png", "klom_random10.png", "klom_class3.png"):
    assert (tmp_path / name).stat().st_size > 0
  values = np.load(tmp_path / "klom_values.npz")
  assert values["random10/ga/forget"].shape == (400,)
  # Every sub-run left its marker: a re-run only rebuilds the tables, identically.
  again = runner.run(config, tmp_path)
  assert [r["klom_forget"] for r in again] == [r["klom_forget"] for r in rows]
  assert [r["forget_acc"] for r in again] == [r["forget_acc"] for r in rows]


def test_retrain_row_uses_oracles_independent_of_the_klom_reference():
  config = _config("mnist1d", "")
  labels = np.repeat(np.arange(10), 20)
  sets = experiment.forget_sets(config, labels)
  members = experiment.base_members(config, len(labels), sets)
  klom_reference = set(experiment.select(members, "oracle", "random10"))
  retrain_row = set(experiment.select(members, "oracle_om", "random10"))
  assert klom_reference.isdisjoint(retrain_row)
  assert len(retrain_row) == config.num_models


def test_margins_helper_matches_the_definition():
  logits = np.array([[[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]]], np.float32)
  labels = np.array([0, 1])
  expected = [2.0 - np.log(2.0), 1.0 - np.log(1.0 + np.exp(3.0))]
  np.testing.assert_allclose(experiment._margins(logits, labels)[0], expected,
                             rtol=1e-6)
