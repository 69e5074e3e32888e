"""Linear datamodels: ridge regression of model outputs on training-set inclusion.

A datamodel (Ilyas et al., "Datamodels: Predicting Predictions from Training
Data", 2022) predicts the output ``f(x; S)`` of a model trained on a subset
``S`` of the ``n`` training points from the inclusion indicators alone:

    f(x; S) ~ theta_0(x) + sum_i beta_i(x) 1[i in S].

It is fitted on M models trained on random subsets (typically 50% of the
data): one ridge regression per output column, all sharing the design matrix
of indicators. Datamodel Matching (Georgiev et al., "Attribute-to-Delete:
Machine Unlearning via Datamodel Matching", 2024) uses it to predict what a
model retrained without a forget set F would output,
``f_full(x) - sum_{i in F} beta_i(x)``.

Host-side numpy in float64. The fit works in the dual (an ``M x M`` solve)
when there are fewer models than training points, which is the usual case,
and in the primal (``n x n``) otherwise; both give the same ridge solution.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["LinearDatamodels", "fit_datamodels", "predict_datamodels",
           "select_ridge"]


class LinearDatamodels(NamedTuple):
  """Fitted datamodels for P outputs over n training points.

  Attributes:
    intercept: ``[P]`` theta_0, the (unpenalised) intercept.
    weights: ``[n, P]`` beta: the effect of including each training point.
    ridge: the penalty they were fitted with.
  """
  intercept: np.ndarray
  weights: np.ndarray
  ridge: float


def _inputs(masks, outputs) -> tuple[np.ndarray, np.ndarray]:
  masks = np.asarray(masks)
  outputs = np.asarray(outputs, dtype=np.float64)
  if masks.ndim != 2 or masks.shape[0] < 2:
    raise ValueError(f"`masks` must have shape [num_models >= 2, num_train], got "
                     f"{masks.shape}.")
  if outputs.ndim != 2 or outputs.shape[0] != masks.shape[0]:
    raise ValueError(f"`outputs` must have shape [num_models={masks.shape[0]}, "
                     f"num_outputs], got {outputs.shape}.")
  if not np.isfinite(outputs).all():
    raise ValueError("`outputs` must be finite.")
  return masks.astype(np.float64), outputs


def fit_datamodels(masks, outputs, *, ridge: float) -> LinearDatamodels:
  """Ridge regression of every output column on the inclusion indicators.

  Minimises, for each column p independently,
  ``sum_m (outputs[m, p] - theta_0[p] - masks[m] @ beta[:, p])^2
  + ridge * ||beta[:, p]||^2`` (the intercept is not penalised), which is
  ``sklearn.linear_model.Ridge(alpha=ridge, fit_intercept=True)``.

  Args:
    masks: ``[M, n]`` boolean (or 0/1) inclusion indicators of the M models'
      training subsets.
    outputs: ``[M, P]`` the models' outputs (e.g. margins on P points).
    ridge: the penalty (> 0).

  Returns:
    The fitted `LinearDatamodels`.

  Example:
    >>> masks = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    >>> dm = fit_datamodels(masks, masks @ np.array([[2.0], [-1.0]]) + 3, ridge=1e-9)
    >>> np.round(dm.weights[:, 0], 6), np.round(dm.intercept, 6)
    (array([ 2., -1.]), array([3.]))
  """
  if not ridge > 0:
    raise ValueError(f"`ridge` must be positive, got {ridge!r}.")
  x, y = _inputs(masks, outputs)
  x_mean, y_mean = x.mean(0), y.mean(0)
  xc, yc = x - x_mean, y - y_mean
  num_models, num_train = xc.shape
  if num_models < num_train:
    # beta = Xc^T (Xc Xc^T + ridge I)^-1 Yc: an M x M system.
    gram = xc @ xc.T + ridge * np.eye(num_models)
    weights = xc.T @ np.linalg.solve(gram, yc)
  else:
    gram = xc.T @ xc + ridge * np.eye(num_train)
    weights = np.linalg.solve(gram, xc.T @ yc)
  intercept = y_mean - x_mean @ weights
  return LinearDatamodels(intercept=intercept, weights=weights, ridge=float(ridge))


def predict_datamodels(datamodels: LinearDatamodels, masks) -> np.ndarray:
  """``theta_0 + masks @ beta``: predicted outputs for training subsets.

  Args:
    datamodels: from `fit_datamodels`.
    masks: ``[n]`` or ``[Q, n]`` inclusion indicators.

  Returns:
    ``[P]`` or ``[Q, P]`` predictions.
  """
  masks = np.asarray(masks, dtype=np.float64)
  if masks.shape[-1] != datamodels.weights.shape[0]:
    raise ValueError(f"`masks` must cover the {datamodels.weights.shape[0]} training "
                     f"points, got shape {masks.shape}.")
  return datamodels.intercept + masks @ datamodels.weights


def select_ridge(masks, outputs, ridges: Sequence[float], *,
                 holdout_fraction: float = 0.2, seed: int = 0) -> tuple[float, dict]:
  """Picks the ridge penalty with the lowest held-out squared error.

  The models are split at random into a fitting part and a held-out part
  (``holdout_fraction`` of them); each penalty is fitted on the first and
  scored by the mean squared prediction error over the held-out models and
  all outputs.

  Args:
    masks: ``[M, n]`` inclusion indicators.
    outputs: ``[M, P]`` outputs.
    ridges: candidate penalties (> 0).
    holdout_fraction: share of the models held out, in (0, 1).
    seed: seeds the split.

  Returns:
    ``(best_ridge, {ridge: held-out MSE})``.
  """
  x, y = _inputs(masks, outputs)
  if not 0 < holdout_fraction < 1:
    raise ValueError(f"`holdout_fraction` must lie in (0, 1), got {holdout_fraction!r}.")
  ridges = [float(r) for r in ridges]
  if not ridges:
    raise ValueError("`ridges` must hold at least one candidate.")
  num_models = x.shape[0]
  num_holdout = int(round(holdout_fraction * num_models))
  if not 1 <= num_holdout <= num_models - 2:
    raise ValueError(f"{num_models} models cannot be split into a held-out part of "
                     f"{holdout_fraction} and a fitting part of at least 2.")
  order = np.random.default_rng(seed).permutation(num_models)
  held, fit = order[:num_holdout], order[num_holdout:]
  errors = {}
  for ridge in ridges:
    datamodels = fit_datamodels(x[fit], y[fit], ridge=ridge)
    errors[ridge] = float(np.mean((predict_datamodels(datamodels, x[held]) - y[held]) ** 2))
  best = min(errors, key=errors.get)
  return best, errors
