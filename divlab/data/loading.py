"""Reading a dataset split into memory by name: embedded or real tfds, one path.

``load(name, split)`` goes through ``tfds.data_source`` (array_record, random
access, no TensorFlow) for every name. An embedded name (``EMBEDDED``) is
prepared into the data dir on first use, offline; a real tfds name (``mnist``,
``cifar10``, ...) must already be prepared there, because preparing it means
downloading, which this code never starts: it raises a ``ValueError`` that says
how to prepare it on a connected machine.

Data dir: the ``data_dir`` argument, else ``$TFDS_DATA_DIR`` (read at call
time), else ``~/tensorflow_datasets``, as in tfds.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
from typing import Any, Iterator

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from divlab.data.builders import BUILDERS
from divlab.data.builders import EMBEDDED

try:  # POSIX advisory locks; elsewhere tfds's rename-on-success still applies.
  import fcntl  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover
  fcntl = None

PathLike = str | os.PathLike

# Records fetched per data-source call while reading a split.
_READ_CHUNK = 4096
_X_KEYS = ("x", "image")
_Y_KEYS = ("y", "label")


def _resolve_data_dir(data_dir: PathLike | None) -> str:
  if data_dir is None:
    return os.path.expanduser(tfds.core.constants.get_default_data_dir())
  return os.path.expanduser(os.fspath(data_dir))


def _base_name(name: str) -> str:
  """The builder name without ``/config`` or ``:version``; rejects namespaces."""
  if not isinstance(name, str) or not name.strip():
    raise ValueError(f"`name` must be a non-empty dataset name, got {name!r}."
                     f"{_embedded_hint()}")
  try:
    parsed, _ = tfds.core.naming.parse_builder_name_kwargs(name)
  except (ValueError, AssertionError) as error:
    raise ValueError(f"`name`={name!r} is not a valid tfds name: {error}"
                     f"{_embedded_hint()}") from error
  if parsed.namespace:
    # Namespaced (community, huggingface) builders resolve over the network.
    raise ValueError(f"`name`={name!r} names a namespaced dataset, which tfds "
                     f"resolves over the network; use a plain tfds name."
                     f"{_embedded_hint()}")
  return parsed.name


def _embedded_hint() -> str:
  return ("\nEmbedded datasets (prepared offline on first use): "
          f"{', '.join(EMBEDDED)}.")


def _how_to_prepare(base: str, data_dir: str) -> str:
  return (
      "\nPrepare it on a machine with network access, in the array_record format:"
      f"\n  tfds build {base} --file_format=array_record --data_dir=DIR"
      f"\n  (or tfds.builder({base!r}, data_dir=DIR)"
      ".download_and_prepare(file_format='array_record'))"
      f"\nthen copy DIR/{base} into {data_dir} on this machine, or pass "
      "data_dir=DIR (or set TFDS_DATA_DIR)." + _embedded_hint())


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  # Checking the folder first spares tfds's warning about a missing one.
  return builder.data_path.exists() and builder.is_prepared()


@contextlib.contextmanager
def _prepare_lock(data_dir: str, base: str) -> Iterator[None]:
  """Serialises preparation of one dataset across processes sharing data_dir."""
  lock_dir = pathlib.Path(data_dir) / ".divlab_locks"
  lock_dir.mkdir(parents=True, exist_ok=True)
  with open(lock_dir / f"{base}.lock", "a", encoding="utf-8") as handle:
    if fcntl is not None:
      fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      if fcntl is not None:
        fcntl.flock(handle, fcntl.LOCK_UN)


def prepare(name: str, *, data_dir: PathLike | None = None) -> tfds.core.DatasetBuilder:
  """Makes ``name`` readable with ``tfds.data_source``; returns its builder.

  An embedded dataset is generated and written as array_record on first use,
  offline, by its builder (a few seconds at most). Concurrent
  callers sharing a data dir wait on a file lock, and tfds writes into a
  temporary folder renamed on success, so a reader never sees a half-written
  dataset. A real tfds dataset is only checked: it must already be prepared
  in array_record format.

  Args:
    name: an embedded name (``EMBEDDED``) or a tfds name (``"mnist"``,
      ``"cifar10:3.0.2"``).
    data_dir: the tfds data dir (default: ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).

  Returns:
    The dataset's prepared ``tfds.core.DatasetBuilder``.

  Raises:
    ValueError: for an unknown name, or a real tfds dataset that is not
      prepared locally in array_record format; the message says how to
      prepare it and lists the embedded names.
  """
  base = _base_name(name)
  data_dir = _resolve_data_dir(data_dir)
  if base in BUILDERS:
    builder = tfds.builder(name, data_dir=data_dir)
    if _is_prepared(builder):
      return builder
    with _prepare_lock(data_dir, base):
      # Rebuilt under the lock: another process may have just finished.
      builder = tfds.builder(name, data_dir=data_dir)
      if not _is_prepared(builder):
        logging.info("Preparing %s in %s (first use).", name, data_dir)
        builder.download_and_prepare(
            file_format="array_record",
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return tfds.builder(name, data_dir=data_dir)
  builder = _existing_builder(name, base, data_dir)
  if not _is_prepared(builder):
    raise ValueError(f"tfds dataset {name!r} is not prepared in {data_dir}, and "
                     "divlab never downloads." + _how_to_prepare(base, data_dir))
  random_access = tfds.core.file_adapters.FileFormat.with_random_access()
  if not set(builder.info.available_file_formats()) & set(random_access):
    raise ValueError(
        f"tfds dataset {name!r} is prepared in {data_dir} as "
        f"{builder.info.file_format}, which has no random access."
        + _how_to_prepare(base, data_dir))
  return builder


def _existing_builder(name: str, base: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """The builder of a non-embedded name; ValueError when tfds knows no such name."""
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as error:
    raise ValueError(
        f"Unknown dataset `name`={name!r}: neither embedded, nor a tfds builder, "
        f"nor prepared in {data_dir}." + _how_to_prepare(base, data_dir)) from error


def _feature_key(features: Any, candidates: tuple[str, ...], name: str) -> str:
  for key in candidates:
    if key in features:
      return key
  raise ValueError(f"dataset {name!r} has features {sorted(features.keys())}; "
                   f"divlab.data reads one of {candidates} as "
                   f"{'x' if 'x' in candidates else 'y'}.")


def _as_x(values: np.ndarray) -> np.ndarray:
  """Inputs as float32; integer images scaled by their dtype's max to [0, 1]."""
  if np.issubdtype(values.dtype, np.integer):
    return values.astype(np.float32) / np.float32(np.iinfo(values.dtype).max)
  return values.astype(np.float32, copy=False)


def _as_y(values: np.ndarray) -> np.ndarray:
  """Labels as int32 (JAX's default integer), real targets as float32."""
  if np.issubdtype(values.dtype, np.integer):
    return values.astype(np.int32)
  return values.astype(np.float32, copy=False)


def load(name: str, split: str, *, data_dir: PathLike | None = None) -> dict[str, np.ndarray]:
  """Reads a whole split into memory as ``{"x", "y"}`` numpy arrays.

  Embedded datasets are prepared on first use (see :func:`prepare`); real tfds
  datasets must be prepared already. Split slicing is tfds's:
  ``"train[:80%]"`` and ``"train[80%:]"`` give disjoint train/validation parts
  (in stored order, which for embedded datasets is already shuffled).

  Args:
    name: an embedded name (``EMBEDDED``) or a prepared tfds name.
    split: a tfds split string (``"train"``, ``"test"``, ``"train[:80%]"``,
      ``"train[:100]+test"``, ...).
    data_dir: the tfds data dir (default: ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).

  Returns:
    ``{"x": float32 [n, *x_shape], "y": [n, *y_shape]}``; ``y`` is int32 for
    class labels and float32 (``[n, 1]`` for the embedded regression sets)
    otherwise. Real image datasets map ``image`` to ``x`` (integer pixels
    divided by their dtype's max, so uint8 becomes ``/255``) and ``label`` to
    ``y``; other features are not returned.

  Raises:
    ValueError: unknown or unprepared name (see :func:`prepare`), a split tfds
      cannot read or one that selects no examples, or a dataset without an
      ``x``/``image`` and a ``y``/``label`` feature.
  """
  if not isinstance(split, str) or not split.strip():
    raise ValueError(f"`split` must be a tfds split string like 'train', got {split!r}.")
  builder = prepare(name, data_dir=data_dir)
  features = builder.info.features
  x_key = _feature_key(features, _X_KEYS, name)
  y_key = _feature_key(features, _Y_KEYS, name)
  try:
    num_examples = builder.info.splits[split].num_examples
  except (ValueError, KeyError, AssertionError) as error:
    raise ValueError(f"Cannot read `split`={split!r} of {name!r}: {error}") from error
  if num_examples == 0:  # tfds cannot open an empty selection of files.
    raise ValueError(f"`split`={split!r} selects no examples of {name!r}.")
  source = tfds.data_source(name, split=split, data_dir=_resolve_data_dir(data_dir),
                            download=False)
  xs, ys = [], []
  for start in range(0, len(source), _READ_CHUNK):
    stop = min(start + _READ_CHUNK, len(source))
    records = source.__getitems__(range(start, stop))
    xs.extend(record[x_key] for record in records)
    ys.extend(record[y_key] for record in records)
  return {"x": _as_x(np.stack(xs)), "y": _as_y(np.asarray(np.stack(ys)))}


def info(name: str, *, data_dir: PathLike | None = None) -> dict[str, Any]:
  """What the training layer needs to know about a dataset, without reading it.

  Works for embedded names without preparing them, and for real tfds names
  from their code (split sizes are known only once prepared).

  Args:
    name: an embedded name or a tfds name.
    data_dir: the tfds data dir (see :func:`load`).

  Returns:
    ``{"name", "embedded": bool, "task": "classification" | "regression",
    "x_shape": tuple, "y_shape": tuple, "num_classes": int | None,
    "splits": {split: num_examples}}``. ``x_shape``/``y_shape`` exclude the
    batch axis; ``num_classes`` is None for regression. Splits are empty for a
    real dataset that is not prepared.

  Raises:
    ValueError: unknown name (the message lists the embedded names).
  """
  base = _base_name(name)
  resolved = _resolve_data_dir(data_dir)
  if base in BUILDERS:
    builder = tfds.builder(name, data_dir=resolved)
    splits = dict(BUILDERS[base].SPLIT_SIZES)
  else:
    builder = _existing_builder(name, base, resolved)
    splits = ({s: int(v.num_examples) for s, v in builder.info.splits.items()}
              if _is_prepared(builder) else {})
  features = builder.info.features
  x_feature = features[_feature_key(features, _X_KEYS, name)]
  y_feature = features[_feature_key(features, _Y_KEYS, name)]
  is_label = isinstance(y_feature, tfds.features.ClassLabel)
  return {"name": name,
          "embedded": base in BUILDERS,
          "task": "classification" if is_label else "regression",
          "x_shape": tuple(x_feature.shape),
          "y_shape": tuple(y_feature.shape),
          "num_classes": int(y_feature.num_classes) if is_label else None,
          "splits": splits}


def num_classes(name: str, *, data_dir: PathLike | None = None) -> int:
  """The number of classes of a classification dataset.

  Args:
    name: a dataset name (an embedded builder or a tfds name).
    data_dir: where tfds keeps prepared datasets (default: tfds's).

  Returns:
    The number of label classes, from the dataset's tfds features.

  Raises:
    ValueError: for a regression dataset or an unknown name.
  """
  details = info(name, data_dir=data_dir)
  if details["num_classes"] is None:
    raise ValueError(f"`name`={name!r} is a regression dataset "
                     f"(y shape {details['y_shape']}); it has no classes.")
  return details["num_classes"]
