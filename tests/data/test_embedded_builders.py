"""Each embedded tfds dataset equals what its source library produces directly.

References are computed here from scikit-learn / mnist1d / the documented
numpy recipes, not through divlab's builders, and compared exactly after the
float32 cast the builders document.
"""
import random

import numpy as np
import pytest
from sklearn import datasets as sk_datasets
from sklearn import model_selection
import tensorflow_datasets as tfds

from divlab import data
from divlab.data import builders


def _split(num_examples, test_size, stratify=None):
  return model_selection.train_test_split(
      np.arange(num_examples), test_size=test_size, stratify=stratify, random_state=0)


def _digits():
  digits = sk_datasets.load_digits()
  train, test = _split(1797, 360, digits.target)
  x = digits.images[..., None] / 16.0
  return {"train": (x[train], digits.target[train]), "test": (x[test], digits.target[test])}


def _mnist1d():
  from mnist1d import data as mnist1d_data
  numpy_state, python_state = np.random.get_state(), random.getstate()
  try:
    generated = mnist1d_data.make_dataset(mnist1d_data.get_dataset_args())
  finally:
    np.random.set_state(numpy_state)
    random.setstate(python_state)
  return {"train": (generated["x"][..., None], generated["y"]),
          "test": (generated["x_test"][..., None], generated["y_test"])}


def _diabetes():
  diabetes = sk_datasets.load_diabetes()
  train, test = _split(442, 89)
  return {"train": (diabetes.data[train], diabetes.target[train]),
          "test": (diabetes.data[test], diabetes.target[test])}


def _friedman(make, **kwargs):
  return {"train": make(n_samples=2000, random_state=0, **kwargs),
          "test": make(n_samples=1000, random_state=1, **kwargs)}


def _ring_gmm(num_samples, seed):
  # The recipe in DivlabGmm's docstring, written out independently.
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 8, num_samples)
  angles = 2 * np.pi * labels / 8
  means = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
  return means + 0.5 * rng.standard_normal((num_samples, 2)), labels


def _regression_target(x):
  return (np.sin(np.pi * x[:, 0]) + x[:, 1] * x[:, 2] + x[:, 3] ** 2
          + 0.5 * np.tanh(2 * x[:, 4]))


def _noisy_regression(num_samples, seed):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1, 1, (num_samples, 8))
  signs = 2 * rng.integers(0, 2, num_samples) - 1
  t_noise = rng.standard_t(3, num_samples)
  return x, _regression_target(x) + 0.5 * signs + 0.2 * t_noise


REFERENCES = {
    "divlab_digits": _digits,
    "divlab_mnist1d": _mnist1d,
    "divlab_diabetes": _diabetes,
    "divlab_friedman1": lambda: _friedman(sk_datasets.make_friedman1, n_features=10,
                                          noise=1.0),
    "divlab_friedman2": lambda: _friedman(sk_datasets.make_friedman2, noise=125.0),
    "divlab_friedman3": lambda: _friedman(sk_datasets.make_friedman3, noise=0.1),
    "divlab_gmm": lambda: {"train": _ring_gmm(10000, 0), "test": _ring_gmm(2000, 1)},
    "divlab_noisy_regression": lambda: {"train": _noisy_regression(4000, 0),
                                        "test": _noisy_regression(1000, 1)},
}

# name: (x shape, number of classes or None for regression, split sizes)
EXPECTED = {
    "divlab_digits": ((8, 8, 1), 10, {"train": 1437, "test": 360}),
    "divlab_mnist1d": ((40, 1), 10, {"train": 4000, "test": 1000}),
    "divlab_diabetes": ((10,), None, {"train": 353, "test": 89}),
    "divlab_friedman1": ((10,), None, {"train": 2000, "test": 1000}),
    "divlab_friedman2": ((4,), None, {"train": 2000, "test": 1000}),
    "divlab_friedman3": ((4,), None, {"train": 2000, "test": 1000}),
    "divlab_gmm": ((2,), 8, {"train": 10000, "test": 2000}),
    "divlab_noisy_regression": ((8,), None, {"train": 4000, "test": 1000}),
}


def test_embedded_lists_every_builder():
  assert data.EMBEDDED == tuple(EXPECTED)
  for name in data.EMBEDDED:
    assert tfds.builder_cls(name) is builders.BUILDERS[name]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_split_equals_source_library(name, embedded_dir):
  x_shape, classes, sizes = EXPECTED[name]
  reference = REFERENCES[name]()
  for split, size in sizes.items():
    loaded = data.load(name, split, data_dir=embedded_dir)
    ref_x, ref_y = reference[split]
    assert set(loaded) == {"x", "y"}
    assert loaded["x"].dtype == np.float32 and loaded["x"].shape == (size, *x_shape)
    np.testing.assert_array_equal(loaded["x"], ref_x.astype(np.float32).reshape(size, *x_shape))
    if classes is None:
      assert loaded["y"].dtype == np.float32 and loaded["y"].shape == (size, 1)
      np.testing.assert_array_equal(loaded["y"][:, 0], ref_y.astype(np.float32))
    else:
      assert loaded["y"].dtype == np.int32 and loaded["y"].shape == (size,)
      np.testing.assert_array_equal(loaded["y"], ref_y)
      assert set(np.unique(loaded["y"])) == set(range(classes))


def test_digits_split_is_stratified_and_scaled(embedded_dir):
  train = data.load("divlab_digits", "train", data_dir=embedded_dir)
  test = data.load("divlab_digits", "test", data_dir=embedded_dir)
  assert train["x"].min() == 0.0 and train["x"].max() == 1.0
  all_counts = np.bincount(sk_datasets.load_digits().target, minlength=10)
  test_counts = np.bincount(test["y"], minlength=10)
  # Stratified: each class's test share is 360/1797 of its count, +-1.
  np.testing.assert_allclose(test_counts, all_counts * 360 / 1797, atol=1)
  np.testing.assert_array_equal(np.bincount(train["y"], minlength=10) + test_counts,
                                all_counts)


def test_gmm_matches_its_generative_model(embedded_dir):
  train = data.load("divlab_gmm", "train", data_dir=embedded_dir)
  for label in range(8):
    points = train["x"][train["y"] == label].astype(np.float64)
    angle = 2 * np.pi * label / 8
    # ~1250 points per class: the mean's standard error is 0.5/sqrt(1250) = 0.014.
    np.testing.assert_allclose(points.mean(0), [2 * np.cos(angle), 2 * np.sin(angle)],
                               atol=0.06)
    np.testing.assert_allclose(points.std(0), [0.5, 0.5], atol=0.04)
  np.testing.assert_allclose(data.ring_gmm_means(),
                             [[2 * np.cos(a), 2 * np.sin(a)]
                              for a in 2 * np.pi * np.arange(8) / 8], atol=1e-12)


def test_noisy_regression_noise_is_bimodal_and_heavy_tailed(embedded_dir):
  train = data.load("divlab_noisy_regression", "train", data_dir=embedded_dir)
  x = train["x"].astype(np.float64)
  np.testing.assert_allclose(data.noisy_regression_mean(x), _regression_target(x),
                             rtol=1e-12)
  residual = train["y"][:, 0] - _regression_target(x)
  # Two modes at +-0.5: more mass near each mode than near the centre.
  near_centre = np.mean(np.abs(residual) < 0.1)
  near_modes = np.mean(np.abs(np.abs(residual) - 0.5) < 0.1) / 2
  assert near_modes > 1.5 * near_centre
  # Heavy tails: P(|eps| > 2.5) is 1.39e-3 under 0.5 s + 0.2 t(3) (scipy), but
  # 4.0e-5 for a Gaussian of the same variance 0.37 (0.16 expected of 4000).
  tail = np.mean(np.abs(residual) > 2.5)
  assert 5e-4 < tail < 5e-3
  assert abs(residual.mean()) < 0.05


def test_docstrings_state_sizes_and_stored_order_is_generation_order():
  for name, cls in builders.BUILDERS.items():
    doc = cls.__doc__
    for size in cls.SPLIT_SIZES.values():
      assert str(size) in doc, (name, size)
    assert "Source:" in doc and ("random_state" in doc or "seed" in doc), name
  assert builders.BUILDERS["divlab_digits"].SPLIT_SIZES == {"train": 1437, "test": 360}


def test_prepared_as_array_record(embedded_dir):
  builder = tfds.builder("divlab_friedman1", data_dir=embedded_dir)
  assert builder.is_prepared()
  assert builder.info.file_format == tfds.core.file_adapters.FileFormat.ARRAY_RECORD
  files = sorted(p.name for p in builder.data_path.iterdir())
  assert any(f.startswith("divlab_friedman1-train.array_record") for f in files)


def test_mnist1d_preparation_restores_global_rngs(tmp_path):
  np.random.seed(1234)
  random.seed(1234)
  expected_numpy, expected_python = np.random.random(3), random.random()
  np.random.seed(1234)
  random.seed(1234)
  builder = builders.DivlabMnist1d(data_dir=tmp_path)
  splits = builder._split_arrays()  # pylint: disable=protected-access
  np.testing.assert_array_equal(np.random.random(3), expected_numpy)
  assert random.random() == expected_python
  assert splits["train"][0].shape == (4000, 40) and splits["test"][1].shape == (1000,)
