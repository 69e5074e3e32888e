"""Linear datamodels against scikit-learn's Ridge and exact linear recoveries."""
import numpy as np
import pytest
from sklearn.linear_model import Ridge

from divlab.eval import datamodels


def _problem(num_models, num_train, num_outputs, seed=0, noise=0.1):
  rng = np.random.default_rng(seed)
  masks = rng.random((num_models, num_train)) < 0.5
  beta = rng.normal(size=(num_train, num_outputs))
  outputs = 2.0 + masks @ beta + noise * rng.normal(size=(num_models, num_outputs))
  return masks, outputs, beta


@pytest.mark.parametrize("num_models,num_train", [(12, 30), (40, 9)],
                         ids=["dual", "primal"])
@pytest.mark.parametrize("ridge", [0.3, 10.0])
def test_fit_matches_sklearn_ridge(num_models, num_train, ridge):
  masks, outputs, _ = _problem(num_models, num_train, 3)
  fitted = datamodels.fit_datamodels(masks, outputs, ridge=ridge)
  reference = Ridge(alpha=ridge, fit_intercept=True, solver="svd").fit(
      masks.astype(np.float64), outputs)
  np.testing.assert_allclose(fitted.weights, reference.coef_.T, rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(fitted.intercept, reference.intercept_, rtol=1e-8,
                             atol=1e-10)
  new_masks = np.random.default_rng(1).random((4, num_train)) < 0.5
  np.testing.assert_allclose(datamodels.predict_datamodels(fitted, new_masks),
                             reference.predict(new_masks.astype(np.float64)),
                             rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(datamodels.predict_datamodels(fitted, new_masks[0]),
                             reference.predict(new_masks[:1].astype(np.float64))[0],
                             rtol=1e-8, atol=1e-10)


def test_noise_free_linear_outputs_are_recovered():
  masks, outputs, beta = _problem(200, 8, 2, noise=0.0)
  fitted = datamodels.fit_datamodels(masks, outputs, ridge=1e-9)
  np.testing.assert_allclose(fitted.weights, beta, atol=1e-6)
  np.testing.assert_allclose(fitted.intercept, [2.0, 2.0], atol=1e-6)


def test_select_ridge_prefers_the_lightest_penalty_without_noise():
  masks, outputs, _ = _problem(120, 10, 2, noise=0.0)
  best, errors = datamodels.select_ridge(masks, outputs, [1e-6, 1.0, 100.0])
  assert best == 1e-6
  assert errors[1e-6] < errors[1.0] < errors[100.0]
  # Noise-free linear outputs: the lightest penalty recovers them, so its
  # held-out error is zero up to the penalty's bias (order ridge^2).
  assert errors[1e-6] < 1e-10


def test_select_ridge_prefers_shrinkage_for_pure_noise():
  rng = np.random.default_rng(0)
  masks = rng.random((60, 40)) < 0.5
  outputs = rng.normal(size=(60, 5))  # no dependence on the masks at all
  best, _ = datamodels.select_ridge(masks, outputs, [1e-3, 1e4])
  assert best == 1e4


def test_rejects_bad_inputs():
  masks, outputs, _ = _problem(10, 5, 2)
  with pytest.raises(ValueError, match="ridge"):
    datamodels.fit_datamodels(masks, outputs, ridge=0.0)
  with pytest.raises(ValueError, match="outputs"):
    datamodels.fit_datamodels(masks, outputs[:5], ridge=1.0)
  with pytest.raises(ValueError, match="finite"):
    datamodels.fit_datamodels(masks, np.full_like(outputs, np.nan), ridge=1.0)
  fitted = datamodels.fit_datamodels(masks, outputs, ridge=1.0)
  with pytest.raises(ValueError, match="cover"):
    datamodels.predict_datamodels(fitted, np.ones(4))
  with pytest.raises(ValueError, match="holdout_fraction"):
    datamodels.select_ridge(masks, outputs, [1.0], holdout_fraction=1.0)
