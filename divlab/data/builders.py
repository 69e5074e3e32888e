"""tfds builders for the embedded datasets: prepared offline, from installed code.

Importing this module registers the builders below with tfds, so
``tfds.builder("divlab_digits")``, ``tfds.data_source("divlab_digits", ...)``
and ``tfds build divlab_digits --imports=divlab.data`` find them. None needs
the network: each ``_split_generators`` reads a dataset bundled with
scikit-learn or runs a generator with fixed seeds. Prepare with
``file_format="array_record"`` (what ``divlab.data.load`` does) for random access
without TensorFlow.

Every embedded dataset stores two features, ``x`` (float32) and ``y`` (a class
label, or float32 ``[1]`` for regression), in the order the generator yields
them (tfds's shuffling on write is disabled), so ``"train[:80%]"`` is a fixed
slice of a split that is already in random order.
"""
from __future__ import annotations

import abc
import inspect
import random
from typing import Iterator

import numpy as np
from sklearn import datasets as sk_datasets
from sklearn import model_selection
import tensorflow_datasets as tfds

from divlab.data import synthetic

SplitArrays = dict[str, tuple[np.ndarray, np.ndarray]]


class _EmbeddedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared plumbing: ``x``/``y`` features, no downloads, stored in generation order.

  A subclass sets ``X_SHAPE``, ``NUM_CLASSES`` (None for regression),
  ``SPLIT_SIZES`` and implements :meth:`_split_arrays`.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  X_SHAPE: tuple[int, ...] = ()
  NUM_CLASSES: int | None = None
  SPLIT_SIZES: dict[str, int] = {}
  HOMEPAGE = ""
  CITATION = ""

  def _info(self) -> tfds.core.DatasetInfo:
    if self.NUM_CLASSES is None:
      label = tfds.features.Tensor(shape=(1,), dtype=np.float32)
    else:
      label = tfds.features.ClassLabel(num_classes=self.NUM_CLASSES)
    return tfds.core.DatasetInfo(
        builder=self,
        description=inspect.cleandoc(type(self).__doc__ or ""),
        features=tfds.features.FeaturesDict({
            "x": tfds.features.Tensor(shape=self.X_SHAPE, dtype=np.float32),
            "y": label,
        }),
        supervised_keys=("x", "y"),
        # Keep generation order: the documented split order is the stored one.
        disable_shuffling=True,
        homepage=self.HOMEPAGE or None,
        citation=self.CITATION or None,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data comes from installed code.
    splits = self._split_arrays()
    sizes = {name: len(y) for name, (_, y) in splits.items()}
    if sizes != self.SPLIT_SIZES:
      # The installed package produced something other than what the
      # docstring promises; refuse to store a silently different dataset.
      raise RuntimeError(
          f"{self.name}: generated split sizes {sizes}, expected {self.SPLIT_SIZES}.")
    return {name: self._generate_examples(x, y) for name, (x, y) in splits.items()}

  def _generate_examples(self, x: np.ndarray,
                         y: np.ndarray) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    x = np.asarray(x, dtype=np.float32).reshape((-1, *self.X_SHAPE))
    if self.NUM_CLASSES is None:
      y = np.asarray(y, dtype=np.float32).reshape(-1, 1)
    else:
      y = np.asarray(y, dtype=np.int64)
    for index in range(len(x)):
      yield index, {"x": x[index], "y": y[index]}

  @abc.abstractmethod
  def _split_arrays(self) -> SplitArrays:
    """Returns ``{split: (x, y)}`` in the documented order."""


def _index_split(num_examples: int, test_size: int, stratify: np.ndarray | None,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Train/test indices from scikit-learn's (shuffling) ``train_test_split``."""
  return model_selection.train_test_split(
      np.arange(num_examples), test_size=test_size, stratify=stratify,
      random_state=seed)


class DivlabDigits(_EmbeddedBuilder):
  """scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set).

  Source: ``sklearn.datasets.load_digits()`` (1797 images, pixel counts 0..16).
  Features: ``x`` float32 ``[8, 8, 1]`` = ``images / 16`` in ``[0, 1]``;
  ``y`` class label, 10 classes.
  Splits: train 1437 / test 360, stratified by label. The indices are
  ``train, test = sklearn.model_selection.train_test_split(np.arange(1797),
  test_size=360, stratify=target, random_state=0)``; each split is stored in
  that (shuffled) order.
  """

  name = "divlab_digits"
  X_SHAPE = (8, 8, 1)
  NUM_CLASSES = 10
  SPLIT_SIZES = {"train": 1437, "test": 360}
  HOMEPAGE = "https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html"
  CITATION = ("@misc{alpaydin1998optdigits, author={Alpaydin, E. and Kaynak, C.}, "
              "title={Optical Recognition of Handwritten Digits}, "
              "howpublished={UCI Machine Learning Repository}, year={1998}}")

  def _split_arrays(self) -> SplitArrays:
    digits = sk_datasets.load_digits()
    x = digits.images / 16.0
    train, test = _index_split(len(x), 360, digits.target, seed=0)
    return {"train": (x[train], digits.target[train]),
            "test": (x[test], digits.target[test])}


class DivlabMnist1d(_EmbeddedBuilder):
  """MNIST-1D, generated offline by the ``mnist1d`` package.

  Source: ``mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())``, the
  package's standard arguments (5000 signals, ``train_split=0.8``,
  ``final_seq_length=40``, ``seed=42``); the generator is run locally instead
  of downloading the published pickle. ``make_dataset`` reseeds numpy's and
  Python's global RNGs; the builder restores both afterwards.
  Features: ``x`` float32 ``[40, 1]`` (the package's standardised signal, one
  channel); ``y`` class label, 10 classes.
  Splits: train 4000 = the package's ``x``/``y``; test 1000 = its
  ``x_test``/``y_test``; same order.
  """

  name = "divlab_mnist1d"
  X_SHAPE = (40, 1)
  NUM_CLASSES = 10
  SPLIT_SIZES = {"train": 4000, "test": 1000}
  HOMEPAGE = "https://github.com/greydanus/mnist1d"
  CITATION = ("@inproceedings{greydanus2024scaling, author={Greydanus, Sam and "
              "Kobak, Dmitry}, title={Scaling Down Deep Learning with {MNIST-1D}}, "
              "booktitle={ICML}, year={2024}}")

  def _split_arrays(self) -> SplitArrays:
    # Imported here: the package pulls in matplotlib, needed only to prepare.
    from mnist1d import data as mnist1d_data  # pylint: disable=g-import-not-at-top
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
      generated = mnist1d_data.make_dataset(mnist1d_data.get_dataset_args())
    finally:
      np.random.set_state(numpy_state)
      random.setstate(python_state)
    return {"train": (generated["x"], generated["y"]),
            "test": (generated["x_test"], generated["y_test"])}


class DivlabDiabetes(_EmbeddedBuilder):
  """scikit-learn's bundled diabetes regression data (Efron et al., 2004).

  Source: ``sklearn.datasets.load_diabetes()`` (442 patients; the 10 features
  as scikit-learn ships them, mean-centred and scaled; the target is the raw
  disease-progression score, 25..346).
  Features: ``x`` float32 ``[10]``; ``y`` float32 ``[1]``.
  Splits: train 353 / test 89, indices ``train, test =
  sklearn.model_selection.train_test_split(np.arange(442), test_size=89,
  random_state=0)``, stored in that order.
  """

  name = "divlab_diabetes"
  X_SHAPE = (10,)
  SPLIT_SIZES = {"train": 353, "test": 89}
  HOMEPAGE = "https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_diabetes.html"
  CITATION = ("@article{efron2004lars, author={Efron, Bradley and Hastie, Trevor and "
              "Johnstone, Iain and Tibshirani, Robert}, title={Least Angle "
              "Regression}, journal={Annals of Statistics}, year={2004}}")

  def _split_arrays(self) -> SplitArrays:
    diabetes = sk_datasets.load_diabetes()
    train, test = _index_split(len(diabetes.target), 89, None, seed=0)
    return {"train": (diabetes.data[train], diabetes.target[train]),
            "test": (diabetes.data[test], diabetes.target[test])}


_FRIEDMAN_CITATION = (
    "@article{friedman1991mars, author={Friedman, Jerome H.}, title={Multivariate "
    "Adaptive Regression Splines}, journal={Annals of Statistics}, year={1991}}")
_FRIEDMAN_TRAIN, _FRIEDMAN_TEST = 2000, 1000


class DivlabFriedman1(_EmbeddedBuilder):
  """Friedman #1 regression (Friedman, 1991), from scikit-learn's generator.

  ``y = 10 sin(pi x1 x2) + 20 (x3 - 0.5)^2 + 10 x4 + 5 x5 + noise``,
  ``x ~ U[0, 1]^10`` (x6..x10 are irrelevant), Gaussian noise with standard
  deviation 1.0 as in Friedman (1991) and Breiman (1996).
  Source: train = ``sklearn.datasets.make_friedman1(n_samples=2000,
  n_features=10, noise=1.0, random_state=0)``; test = the same with
  ``n_samples=1000, random_state=1``.
  Features: ``x`` float32 ``[10]``; ``y`` float32 ``[1]``.
  """

  name = "divlab_friedman1"
  X_SHAPE = (10,)
  SPLIT_SIZES = {"train": _FRIEDMAN_TRAIN, "test": _FRIEDMAN_TEST}
  HOMEPAGE = "https://scikit-learn.org/stable/modules/generated/sklearn.datasets.make_friedman1.html"
  CITATION = _FRIEDMAN_CITATION

  def _split_arrays(self) -> SplitArrays:
    return {"train": sk_datasets.make_friedman1(
                n_samples=_FRIEDMAN_TRAIN, n_features=10, noise=1.0, random_state=0),
            "test": sk_datasets.make_friedman1(
                n_samples=_FRIEDMAN_TEST, n_features=10, noise=1.0, random_state=1)}


class DivlabFriedman2(_EmbeddedBuilder):
  """Friedman #2 regression (impedance of an AC circuit), scikit-learn's generator.

  ``y = sqrt(x1^2 + (x2 x3 - 1 / (x2 x4))^2) + noise`` over scikit-learn's
  ranges for ``x1..x4``. Gaussian noise with standard deviation 125, Breiman's
  (1996) choice for a 3:1 signal-to-noise ratio. Targets are unscaled
  (hundreds to ~1700): standardise in the experiment if the loss needs it.
  Source: train = ``sklearn.datasets.make_friedman2(n_samples=2000,
  noise=125.0, random_state=0)``; test = the same with ``n_samples=1000,
  random_state=1``.
  Features: ``x`` float32 ``[4]``; ``y`` float32 ``[1]``.
  """

  name = "divlab_friedman2"
  X_SHAPE = (4,)
  SPLIT_SIZES = {"train": _FRIEDMAN_TRAIN, "test": _FRIEDMAN_TEST}
  HOMEPAGE = "https://scikit-learn.org/stable/modules/generated/sklearn.datasets.make_friedman2.html"
  CITATION = _FRIEDMAN_CITATION

  def _split_arrays(self) -> SplitArrays:
    return {"train": sk_datasets.make_friedman2(
                n_samples=_FRIEDMAN_TRAIN, noise=125.0, random_state=0),
            "test": sk_datasets.make_friedman2(
                n_samples=_FRIEDMAN_TEST, noise=125.0, random_state=1)}


class DivlabFriedman3(_EmbeddedBuilder):
  """Friedman #3 regression (phase angle of an AC circuit), scikit-learn's generator.

  ``y = arctan((x2 x3 - 1 / (x2 x4)) / x1) + noise`` over scikit-learn's ranges
  for ``x1..x4``. Gaussian noise with standard deviation 0.1, Breiman's (1996)
  choice for a 3:1 signal-to-noise ratio.
  Source: train = ``sklearn.datasets.make_friedman3(n_samples=2000, noise=0.1,
  random_state=0)``; test = the same with ``n_samples=1000, random_state=1``.
  Features: ``x`` float32 ``[4]``; ``y`` float32 ``[1]``.
  """

  name = "divlab_friedman3"
  X_SHAPE = (4,)
  SPLIT_SIZES = {"train": _FRIEDMAN_TRAIN, "test": _FRIEDMAN_TEST}
  HOMEPAGE = "https://scikit-learn.org/stable/modules/generated/sklearn.datasets.make_friedman3.html"
  CITATION = _FRIEDMAN_CITATION

  def _split_arrays(self) -> SplitArrays:
    return {"train": sk_datasets.make_friedman3(
                n_samples=_FRIEDMAN_TRAIN, noise=0.1, random_state=0),
            "test": sk_datasets.make_friedman3(
                n_samples=_FRIEDMAN_TEST, noise=0.1, random_state=1)}


class DivlabGmm(_EmbeddedBuilder):
  """2-D class-conditional Gaussian mixture: 8 components on a ring, one class each.

  ``y ~ Uniform{0..7}``; ``x | y ~ N(2 (cos(2 pi y / 8), sin(2 pi y / 8)),
  0.5^2 I)``; see ``divlab.data.synthetic.sample_ring_gmm`` (and
  ``ring_gmm_means`` for the exact means, e.g. for a Bayes classifier).
  Source: train = ``sample_ring_gmm(10000, seed=0)``; test =
  ``sample_ring_gmm(2000, seed=1)``.
  Features: ``x`` float32 ``[2]``; ``y`` class label, 8 classes.
  """

  name = "divlab_gmm"
  X_SHAPE = (2,)
  NUM_CLASSES = synthetic.RING_GMM_NUM_COMPONENTS
  SPLIT_SIZES = {"train": 10000, "test": 2000}

  def _split_arrays(self) -> SplitArrays:
    return {"train": synthetic.sample_ring_gmm(10000, seed=0),
            "test": synthetic.sample_ring_gmm(2000, seed=1)}


class DivlabNoisyRegression(_EmbeddedBuilder):
  """Regression on ``[-1, 1]^8`` with bimodal, heavy-tailed (Student-t) noise.

  ``y = f(x) + 0.5 s + 0.2 t``: ``f(x) = sin(pi x1) + x2 x3 + x4^2 +
  0.5 tanh(2 x5)`` (x6..x8 are nuisance inputs), ``s`` uniform on ``{-1, +1}``,
  ``t`` Student-t with 3 degrees of freedom; see
  ``divlab.data.synthetic.sample_noisy_regression`` (and
  ``noisy_regression_mean`` for the noise-free ``f``). Built for the
  information-bottleneck regression family.
  Source: train = ``sample_noisy_regression(4000, seed=0)``; test =
  ``sample_noisy_regression(1000, seed=1)``.
  Features: ``x`` float32 ``[8]``; ``y`` float32 ``[1]``.
  """

  name = "divlab_noisy_regression"
  X_SHAPE = (synthetic.NOISY_REGRESSION_DIM,)
  SPLIT_SIZES = {"train": 4000, "test": 1000}

  def _split_arrays(self) -> SplitArrays:
    return {"train": synthetic.sample_noisy_regression(4000, seed=0),
            "test": synthetic.sample_noisy_regression(1000, seed=1)}


BUILDERS: dict[str, type[_EmbeddedBuilder]] = {
    cls.name: cls for cls in (DivlabDigits, DivlabMnist1d, DivlabDiabetes,
                              DivlabFriedman1, DivlabFriedman2, DivlabFriedman3,
                              DivlabGmm, DivlabNoisyRegression)}
EMBEDDED: tuple[str, ...] = tuple(BUILDERS)
