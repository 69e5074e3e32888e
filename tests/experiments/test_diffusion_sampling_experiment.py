"""The diffusion-sampling family: smoke configs end to end and the metric pieces."""
import importlib
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from divlab import run as runner
from experiments.diffusion_sampling import experiment
from experiments.diffusion_sampling import problems

KEYS = ("model", "solver", "nfe", "guidance", "diverged_frac", "sliced_w", "mmd",
        "diverged_frac_std", "sliced_w_std", "mmd_std", "seeds")


def _config(name, arg="smoke"):
  return importlib.import_module(f"configs.diffusion_sampling.{name}").get_config(arg)


def test_gmm_smoke_end_to_end(tmp_path):
  config = _config("gmm")
  runner.run(config, tmp_path)
  rows = json.loads((tmp_path / "results.json").read_text())["rows"]
  assert len(rows) == (len(config.models) * len(config.solvers) * len(config.nfes)
                       * len(config.guidance))
  for row in rows:
    assert set(KEYS) <= set(row) and row["seeds"] == config.num_seeds
    assert 0.0 <= row["diverged_frac"] <= 1.0 and np.isfinite(row["sliced_w"])
    # At w = 15 five steps are far from the 50-step reference (MMD 0.14-0.48,
    # sliced W 2-9 here); a metric taken between a sample and itself is 0.
    if row["guidance"] == 15.0:
      assert row["mmd"] > 0.05 and row["sliced_w"] > 0.5, row
  for name in ("artifacts.png", "samples_gmm2d.png", "samples_gmm16d.png"):
    assert (tmp_path / name).stat().st_size > 0
  assert "NFE 5" in (tmp_path / "results.md").read_text()


def test_learned_smoke_trains_once_and_reuses(tmp_path):
  config = _config("learned")
  runner.run(config, tmp_path)
  checkpoints = sorted((tmp_path / "models").rglob("checkpoints/*"))
  assert checkpoints and (tmp_path / "models" / "digits" / "model.json").exists()
  log = tmp_path / "models" / "digits" / "metrics.jsonl"
  before = (log.read_text(), checkpoints)
  runner.run(config, tmp_path)   # restores the finished models: no new steps
  after = (log.read_text(), sorted((tmp_path / "models").rglob("checkpoints/*")))
  assert after == before
  assert (tmp_path / "samples_digits.png").stat().st_size > 0


def test_group_metrics_count_divergence_and_pull_back():
  x = np.zeros((1, 4, 2), np.float32)
  x[0, 0] = [100.0, 0.0]          # far beyond the bound
  x[0, 1] = [np.nan, 0.0]         # not finite
  reference = np.zeros((1, 4, 2), np.float32)
  diverged, sliced, mmd = experiment._group_metrics(  # pylint: disable=protected-access
      jnp.asarray(x), jnp.asarray(reference), jax.random.key(0), 1.0, 10.0)
  assert float(diverged[0]) == 0.5
  assert np.isfinite(float(sliced[0])) and np.isfinite(float(mmd[0]))
  pulled = np.asarray(experiment._pull_back(jnp.asarray(x[0]), 20.0))  # pylint: disable=protected-access
  np.testing.assert_allclose(pulled[:2], [[20.0, 0.0], [20.0, 0.0]])
  np.testing.assert_allclose(pulled[2:], 0.0)


def test_ring_mixture_geometry():
  mixture = problems.ring_mixture(16, 8, 4.0, 0.5, seed=0)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(mixture.means), axis=1), 4.0,
                             rtol=1e-5)
  planar = problems.ring_mixture(2, 4, 3.0, 0.5, seed=0)
  np.testing.assert_allclose(np.asarray(planar.means),
                             [[3, 0], [0, 3], [-3, 0], [0, -3]], atol=1e-5)
  with pytest.raises(ValueError, match="kind"):
    problems.build("x", ml_collections.ConfigDict({"kind": "nope"}), _config("gmm"), None)


def _np_mmd(x, y, sigma):
  """Biased squared MMD, Gaussian kernel exp(-|a - b|^2 / (2 sigma^2)), float64."""
  def mean_kernel(a, b):
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * sigma ** 2)).mean()
  return mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y)


def test_group_metrics_vanish_on_the_reference_and_grow_with_a_shift():
  rng = np.random.default_rng(0)
  reference = rng.normal(size=(2, 48, 2)).astype(np.float32)
  shifted = reference + np.array([1.5, 0.0], np.float32)
  key, bandwidth, bound = jax.random.key(0), 1.0, 1e3
  _, sliced_same, mmd_same = experiment._group_metrics(  # pylint: disable=protected-access
      jnp.asarray(reference), jnp.asarray(reference), key, bandwidth, bound)
  np.testing.assert_allclose(mmd_same, 0.0, atol=1e-6)
  np.testing.assert_allclose(sliced_same, 0.0, atol=1e-5)
  _, sliced, mmd = experiment._group_metrics(  # pylint: disable=protected-access
      jnp.asarray(shifted), jnp.asarray(reference), key, bandwidth, bound)
  want = [_np_mmd(shifted[g].astype(np.float64), reference[g].astype(np.float64), bandwidth)
          for g in range(2)]
  np.testing.assert_allclose(mmd, want, rtol=1e-4)
  assert np.all(np.asarray(mmd) > 0.1) and np.all(np.asarray(sliced) > 0.1)
