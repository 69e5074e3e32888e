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
