"""The unlearning family: smoke configs end to end, and its pieces against references."""
import importlib
import json

import numpy as np
import pytest
from scipy import integrate
from scipy import special
from scipy import stats

from divlab import run as runner
from divlab.train import compilation
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
  with compilation.CompileTimer() as timer:
    rows = runner.run(config, tmp_path)
  # One train-step program per trained method, shared by both forget sets,
  # plus the base ensemble's.
  trained = [m for m in config.methods if m not in ("noop", "retrain")]
  steps = {k: v for k, v in timer.programs.items() if "train_step" in k}
  assert sum(steps.values()) == len(trained) + 1, steps
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


# ----------------------------------------------------------------------------
# Each method row computes its own objective (a row silently running another
# method's loss, e.g. NPO running gradient ascent, fails here).
# ----------------------------------------------------------------------------


def _np_log_softmax(logits):
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _np_logp(logits, labels):
  return _np_log_softmax(logits)[np.arange(len(labels)), labels]


def _np_npo(logp, ref_logp, beta):
  """-(2/beta) log sigmoid(beta (log pi_ref - log pi)), batch mean."""
  return np.mean(-(2.0 / beta) * np.log(special.expit(beta * (ref_logp - logp))))


def test_synthetic_objectives_against_numpy():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(4)
  dim, features, n = 3, 6, 10
  params = {"w": rng.normal(size=(features, dim)).astype(np.float32),
            "a": rng.normal(size=(features, 1)).astype(np.float32)}
  forget = {"x": rng.normal(size=(n, dim)).astype(np.float32),
            "y": rng.integers(0, 2, size=n).astype(np.int32),
            "ref_logits": rng.normal(size=(n, 2)).astype(np.float32)}
  retain = {"x": rng.normal(size=(n, dim)).astype(np.float32),
            "y": rng.integers(0, 2, size=n).astype(np.int32)}

  def np_logits(x):
    scores = np.maximum(x.astype(np.float64) @ params["w"].T, 0) @ params["a"]
    return np.concatenate([scores, np.zeros_like(scores)], axis=-1)

  logp_f = _np_logp(np_logits(forget["x"]), forget["y"])
  logp_r = _np_logp(np_logits(retain["x"]), retain["y"])
  ref = _np_logp(forget["ref_logits"].astype(np.float64), forget["y"])
  beta = 1.0
  expected = {"ga": logp_f.mean(), "grad_diff": logp_f.mean() - logp_r.mean(),
              "npo": _np_npo(logp_f, ref, beta),
              "npo_rt": _np_npo(logp_f, ref, beta) - logp_r.mean()}
  assert set(expected) == set(synthetic.METHOD_LABELS)
  batch = {"forget": {k: jnp.asarray(v) for k, v in forget.items()},
           "retain": {k: jnp.asarray(v) for k, v in retain.items()}}
  for method, want in expected.items():
    got, _ = synthetic.make_loss_fn(method, beta)(params, batch, None)
    np.testing.assert_allclose(float(got), want, rtol=1e-5, err_msg=method)


def test_classifier_objectives_and_official_regime_against_numpy():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from experiments.unlearning import methods as methods_lib  # pylint: disable=g-import-not-at-top
  config = _config("mnist1d", "").unlearn
  rng = np.random.default_rng(5)
  n, dim, classes = 12, 4, 3
  w = rng.normal(size=(dim, classes)).astype(np.float32)
  apply_fn = lambda params, x: x @ params["w"]
  forget = {"x": rng.normal(size=(n, dim)).astype(np.float32),
            "y": rng.integers(0, classes, size=n).astype(np.int32),
            "ref_logp": np.log(rng.uniform(0.05, 0.9, size=n)).astype(np.float32)}
  retain = {"x": rng.normal(size=(n, dim)).astype(np.float32),
            "y": rng.integers(0, classes, size=n).astype(np.int32)}
  logp_f = _np_logp(forget["x"].astype(np.float64) @ w, forget["y"])
  logp_r = _np_logp(retain["x"].astype(np.float64) @ w, retain["y"])
  ref = forget["ref_logp"].astype(np.float64)

  def np_simnpo(beta, gamma):  # length 1: -(2/beta) log sigmoid(-beta logp - gamma)
    return np.mean(-(2.0 / beta) * np.log(special.expit(-beta * logp_f - gamma)))

  official_beta = config.official.npo_beta
  expected = {
      "finetune": -logp_r.mean(), "ga": logp_f.mean(),
      "grad_diff": logp_f.mean() - logp_r.mean(),
      "npo": _np_npo(logp_f, ref, config.npo_beta),
      "npo_rt": _np_npo(logp_f, ref, config.npo_beta) - logp_r.mean(),
      "simnpo": np_simnpo(config.simnpo_beta, config.simnpo_gamma),
      "npo_official": _np_npo(logp_f, ref, official_beta),
      "npo_rt_official": _np_npo(logp_f, ref, official_beta) - logp_r.mean(),
      "simnpo_official": np_simnpo(config.simnpo_beta, config.simnpo_gamma)}
  batch = {"forget": {k: jnp.asarray(v) for k, v in forget.items()},
           "retain": {k: jnp.asarray(v) for k, v in retain.items()}}
  params = {"w": jnp.asarray(w)}
  for name, want in expected.items():
    method = methods_lib.make_method(name, apply_fn, config)
    got, _ = method.loss_fn(params, batch, None)
    np.testing.assert_allclose(float(got), want, rtol=1e-5, err_msg=name)
  # The official regime really is another beta: its NPO value differs.
  assert official_beta != config.npo_beta
  assert abs(expected["npo_official"] - expected["npo"]) > 1e-3
  # Its optimizer warms up from 0 to the official (scaled) lr, then decays;
  # the current regime steps at full lr from the first step (Adam: |update| = lr).
  zeros = {"w": jnp.zeros((dim, classes))}
  grads = {"w": jnp.ones((dim, classes))}

  def update_sizes(tx, steps):
    state, sizes = tx.init(zeros), []
    for _ in range(steps):
      updates, state = tx.update(grads, state, zeros)
      sizes.append(float(jnp.abs(updates["w"]).max()))
    return np.array(sizes)

  warmup = config.official.warmup_steps
  official = update_sizes(methods_lib.make_method("npo_official", apply_fn, config).tx,
                          warmup + 2)
  assert official[0] == 0.0
  np.testing.assert_allclose(official[warmup], config.official.learning_rate, rtol=1e-3)
  assert np.all(np.diff(official[:warmup + 1]) > 0)
  current = update_sizes(methods_lib.make_method("npo", apply_fn, config).tx, 2)
  np.testing.assert_allclose(current, config.optimizer.learning_rate, rtol=1e-3)


def test_dmm_scaling_smoke(tmp_path):
  from experiments.unlearning import dmm_scaling  # pylint: disable=g-import-not-at-top
  config = _config("dmm_scaling")
  rows = runner.run(config, tmp_path)
  sizes = list(config.datamodels.sizes)
  assert [(r["method"], r["num_subset_models"]) for r in rows] == (
      [("original (no-op)", 0), ("retrain (oracle)", 0)]
      + [("DMM (datamodel matching)", m) for m in sizes])
  cap = np.log((1 + config.klom.num_bins * config.klom.floor) / config.klom.floor)
  for row in rows:
    for split in ("forget", "retain", "val"):
      assert 0.0 <= row[f"klom_{split}"] <= cap + 1e-9
  assert (tmp_path / "dmm_scaling.png").stat().st_size > 0
  # Each size fitted its own datamodels.
  for size in sizes:
    assert (tmp_path / "runs" / f"datamodels_M{size}" / "final_metrics.json").exists()
  with pytest.raises(ValueError, match="sizes"):
    dmm_scaling.check_sizes([1, 4])
