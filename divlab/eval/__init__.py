"""Evaluation metrics.

* `classification` (JAX, jit-able): `accuracy`, `expected_calibration_error`,
  `margins`, `kl_to_reference`.
* `membership` (numpy, host): `mia_auc`.
* `unlearning` (numpy, host): `klom`, `klom_summary`.
* `sampling` (numpy, host): `pass_at_k` (unbiased, from n samples).
* `datamodels` (numpy, host): ridge datamodels `fit_datamodels`,
  `predict_datamodels`, `select_ridge`.
"""
from divlab.eval import classification
from divlab.eval import datamodels
from divlab.eval import membership
from divlab.eval import sampling
from divlab.eval import unlearning
from divlab.eval.classification import accuracy
from divlab.eval.classification import expected_calibration_error
from divlab.eval.classification import kl_to_reference
from divlab.eval.classification import margins
from divlab.eval.unlearning import klom
from divlab.eval.unlearning import klom_summary
from divlab.eval.membership import mia_auc
from divlab.eval.sampling import pass_at_k
from divlab.eval.datamodels import fit_datamodels
from divlab.eval.datamodels import predict_datamodels
from divlab.eval.datamodels import select_ridge

__all__ = [
    "classification",
    "datamodels",
    "membership",
    "sampling",
    "pass_at_k",
    "unlearning",
    "accuracy",
    "expected_calibration_error",
    "kl_to_reference",
    "margins",
    "klom",
    "klom_summary",
    "mia_auc",
    "fit_datamodels",
    "predict_datamodels",
    "select_ridge",
]
