"""Streaming batches from a tfds split through grain: for data larger than memory.

:class:`GrainLoader` keeps :class:`~divlab.data.Loader`'s contract and its very
order: global batch ``b`` holds the records ``Loader.global_indices(b)`` names
(epoch ``e`` visits ``np.random.default_rng([seed, e]).permutation(n)``), each
process reads only its contiguous slice of it, and the position is the same
JSON dict (``batches_served`` plus the stream's identity). A run may therefore
switch between the two loaders, or resume one's checkpoint with the other, and
see the same batches bit for bit.

What differs is where records come from. Instead of gathering rows of arrays
held in memory, a grain pipeline reads each batch's records lazily from the
split's array_record files (random access, no TensorFlow), decodes and
collates them in background threads (and optionally in worker processes,
``num_workers``), and keeps ``prefetch`` batches ready ahead of the training
step. Each grain element is one whole batch: its records are read in one call
per file and, when they have fixed shapes, decoded in one numpy pass
(:meth:`~divlab.data.records.ExampleDecoder.decode_batch`), so the cost per
record is a few microseconds of reading, not a Python loop. Grain's own pipeline position is never saved: the batch index
is the whole position, so restoring is O(1) and a prefetched-but-unconsumed
batch is simply read again after a restart.

Memory: the resident cost is the prefetched batches plus one int64 visiting
order per cached epoch (8 bytes per record, as for ``Loader``), never the data.

:func:`open_split` decides which loader a split gets (``"auto"``: memory when
the decoded split fits a budget, else grain, and says so); :func:`make_loader`
builds it.
"""
from __future__ import annotations

import collections
import math
import os
import sys
from typing import Any, Callable, Mapping, Sequence

from absl import flags
from absl import logging
import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

# The record conversions are load()'s own, so both loaders give identical arrays.
from divlab.data import loading
from divlab.data.records import ExampleDecoder
from divlab.data.records import ShardedArrayRecords
from divlab.data.loader import Loader

PathLike = str | os.PathLike
Collate = Callable[[Sequence[Mapping[str, Any]]], dict[str, np.ndarray]]

# Splits whose decoded size is at most this are read into memory under "auto".
DEFAULT_MEMORY_BUDGET_BYTES = 1 << 30
LOADER_KINDS = ("auto", "memory", "grain")


def collate_supervised(records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
  """Stacks decoded tfds records into ``{"x", "y"}`` exactly as ``load`` does.

  ``x`` (or ``image``) becomes float32 (integer pixels divided by their
  dtype's max), ``y`` (or ``label``) int32 for class labels, else float32.

  Args:
    records: decoded records, each a dict with an x/image and a y/label key.

  Returns:
    ``{"x": float32 [len(records), ...], "y": [len(records), ...]}``.

  Example::

    collate_supervised([{"x": np.zeros(3), "y": 1}])["x"].shape  # (1, 3)
  """
  if not records:
    raise ValueError("`records` is empty: a batch needs at least one record.")
  x_key, y_key = _supervised_keys(records[0], "records")
  xs = np.stack([record[x_key] for record in records])
  ys = np.stack([np.asarray(record[y_key]) for record in records])
  return {"x": loading._as_x(xs), "y": loading._as_y(ys)}


def _supervised_keys(record: Mapping[str, Any], argument: str) -> tuple[str, str]:
  """The input and label keys of a decoded record (or batch of columns)."""
  x_key = next((k for k in loading._X_KEYS if k in record), None)
  y_key = next((k for k in loading._Y_KEYS if k in record), None)
  if x_key is None or y_key is None:
    raise ValueError(f"`{argument}` have keys {sorted(record)}; a supervised batch "
                     f"reads one of {loading._X_KEYS} and one of {loading._Y_KEYS}.")
  return x_key, y_key


def supervised_from_columns(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """:func:`collate_supervised` for records already stacked into columns.

  ``collate_supervised(records) == supervised_from_columns({k: np.stack(
  [r[k] for r in records])})``: the batch path of :class:`TfdsSplit`, whose
  decoder stacks a whole batch at once.

  Args:
    columns: ``{name: [records, ...]}`` with an x/image and a y/label key.

  Returns:
    ``{"x": float32 [records, ...], "y": [records, ...]}``.

  Example::

    supervised_from_columns({"x": np.zeros((2, 3)), "y": np.ones(2, int)})["y"]
    # int32 [1, 1]
  """
  x_key, y_key = _supervised_keys(columns, "columns")
  return {"x": loading._as_x(np.asarray(columns[x_key])),
          "y": loading._as_y(np.asarray(columns[y_key]))}


def _prepared_split(name: str, split: str,
                    data_dir: PathLike | None) -> tfds.core.DatasetBuilder:
  """The prepared builder of ``name``, once ``split`` is known to select records."""
  if not isinstance(split, str) or not split.strip():
    raise ValueError(f"`split` must be a tfds split string like 'train', got {split!r}.")
  builder = loading.prepare(name, data_dir=data_dir)
  try:
    num_examples = builder.info.splits[split].num_examples
  except (ValueError, KeyError, AssertionError) as error:
    raise ValueError(f"Cannot read `split`={split!r} of {name!r}: {error}") from error
  if num_examples == 0:
    raise ValueError(f"`split`={split!r} selects no examples of {name!r}.")
  return builder


class TfdsSplit:
  """A lazy, picklable view of one prepared tfds split: length and batch reads.

  Nothing is read at construction beyond the dataset's metadata; worker
  processes receive a pickled copy and open the array_record files themselves.

  Example::

    split = TfdsSplit("divlab_mnist1d", "train")
    len(split)                 # 4000
    split.read([3, 0])["x"]    # float32 [2, 40, 1], records 3 and 0

  Args:
    name: an embedded name (prepared on first use) or a prepared tfds name.
    split: a tfds split string (``"train"``, ``"train[:80%]"``, ...).
    data_dir: the tfds data dir (see ``divlab.data.load``).
    collate: turns a list of decoded records into a batch of arrays (default
      :func:`collate_supervised`; :mod:`divlab.data.sequences` has padding and
      packing for token records).

  Raises:
    ValueError: as ``divlab.data.load`` for unknown, unprepared or empty splits.
  """

  def __init__(self, name: str, split: str, *, data_dir: PathLike | None = None,
               collate: Collate = collate_supervised):
    if not callable(collate):
      raise ValueError(f"`collate` must be callable, got {collate!r}.")
    builder = _prepared_split(name, split, data_dir)
    self.name, self.split, self.collate = name, split, collate
    self._info = builder.info
    self._num_examples = int(builder.info.splits[split].num_examples)
    # Raw bytes, decoded by ExampleDecoder: several times faster than tfds's
    # generic per-record decoder for plain numeric features, identical output.
    if builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
      self._source = ShardedArrayRecords(builder.info.splits[split].file_instructions)
    else:  # other random-access formats: through tfds
      source = tfds.data_source(
          name, split=split, download=False, data_dir=loading._resolve_data_dir(data_dir),
          deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
      self._source = _TfdsRecords(source)
    self._decode = ExampleDecoder(builder.info.features)
    # The default collate only stacks and casts, so a batch decoded as columns
    # (one numpy pass, no loop over records) can skip the per-record lists.
    self._collate_columns = supervised_from_columns if collate is collate_supervised else None

  def __len__(self) -> int:
    return self._num_examples

  def read(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """The collated batch of records ``indices``, in that order.

    Fixed-shape records with the default collate are decoded as one batch
    (``ExampleDecoder.decode_batch``); other batches record by record
    (:meth:`read_records`). Both give the same arrays.
    """
    serialized = self._read_serialized(indices)
    if self._collate_columns is not None:
      columns = self._decode.decode_batch(serialized)
      if columns is not None:
        return self._collate_columns(columns)
    return self.collate([self._decode(raw) for raw in serialized])

  def read_records(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """:meth:`read` decoding and collating record by record (the reference path)."""
    return self.collate([self._decode(raw) for raw in self._read_serialized(indices)])

  def _read_serialized(self, indices: Sequence[int] | np.ndarray) -> list[bytes]:
    return self._source.read(indices)

  def estimated_bytes(self) -> int:
    """Decoded in-memory size of the split: fixed-shape features exactly,
    otherwise the on-disk bytes per record of the whole dataset times the
    split's records (tfds gives no byte count for a sliced split)."""
    per_record = 0
    for feature in self._info.features.values():
      shape = getattr(feature, "shape", None)
      if shape is None or any(d is None for d in shape):
        splits = self._info.splits.values()
        disk = sum(int(s.num_bytes) for s in splits)
        records = max(1, sum(int(s.num_examples) for s in splits))
        return disk * self._num_examples // records
      # Inputs are decoded to float32 and labels to int32: 4 bytes each.
      per_record += 4 * int(np.prod(shape, dtype=np.int64))
    return per_record * self._num_examples


class _TfdsRecords:
  """``ShardedArrayRecords.read`` over a ``tfds.data_source`` of raw bytes."""

  def __init__(self, source: Any):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def read(self, indices: Sequence[int] | np.ndarray) -> list[bytes]:
    return list(self._source.__getitems__([int(i) for i in np.asarray(indices).reshape(-1)]))


class _ReadLocalBatches:
  """grain map: element index -> this process's collated slice of each of the
  ``count`` global batches ``[count * element, count * (element + 1))``.

  A class rather than a closure so worker processes can unpickle it.
  """

  def __init__(self, split: TfdsSplit, order: Loader, start: int, size: int, count: int):
    self._split, self._order, self._start, self._size = split, order, start, size
    self._count = count

  def __call__(self, element: int) -> list[dict[str, np.ndarray]]:
    first = element * self._count
    return [self._split.read(self._order.global_indices(b)[self._start:self._start + self._size])
            for b in range(first, first + self._count)]


def _ensure_absl_flags_parsed() -> None:
  # grain reads absl flags; outside an absl app (tests, notebooks) they are
  # unparsed and reading them raises, so accept the defaults.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class GrainLoader:
  """An infinite iterator of this process's slice of each global batch, via grain.

  Same order, slicing and position as :class:`~divlab.data.Loader` (see the
  module docstring); records are read lazily from ``split``.

  Example::

    split = TfdsSplit("divlab_mnist1d", "train")
    loader = GrainLoader(split, 128, seed=0)
    batch = next(loader)            # == Loader(load(...), 128, seed=0)'s batch
    state = loader.get_state()      # {"batches_served": 1, ...}: JSON
    resumed = GrainLoader(split, 128, seed=0)
    resumed.set_state(state)        # next(resumed) == next(loader)

  Args:
    split: a random-access source with ``len(split)`` and
      ``split.read(indices) -> {key: array}`` (a :class:`TfdsSplit`).
    global_batch_size: rows per global batch, summed over processes.
    seed: non-negative integer; with the epoch it fixes the order.
    shuffle: permute each epoch (else index order every epoch).
    drop_remainder: as for ``Loader``.
    process_index: this process's index (default ``jax.process_index()``).
    process_count: number of processes (default ``jax.process_count()``).
    num_workers: worker processes that read and decode batches (0: threads of
      this process only). Workers pay off when decoding, not the step, is the
      bottleneck and cores are free.
    num_threads: threads reading batches ahead in each reading process.
    prefetch: batches kept ready ahead of the consumer.
    batches_per_element: consecutive batches read by one grain task and
      handed over together. Each element a worker process hands to this one
      costs the trainer's process about 0.8 ms of CPU whatever its size, so
      with workers and a fast step, several batches per element (e.g. 4)
      keep that cost off the step; with threads only, 1 suffices.

  Raises:
    ValueError: as ``Loader`` for the batch, seed and process arguments; a
      negative ``num_workers``, or ``num_threads``/``prefetch``/
      ``batches_per_element`` below 1.
  """

  def __init__(self, split: Any, global_batch_size: int, *, seed: int,
               shuffle: bool = True, drop_remainder: bool = True,
               process_index: int | None = None, process_count: int | None = None,
               num_workers: int = 0, num_threads: int = 2, prefetch: int = 4,
               batches_per_element: int = 1):
    if not hasattr(split, "read") or not hasattr(split, "__len__"):
      raise ValueError(f"`split` must have len() and read(indices), got {split!r}.")
    num_examples = len(split)
    if num_examples < 1:
      raise ValueError("`split` holds no examples.")
    for name, value, minimum in (("num_workers", num_workers, 0),
                                 ("num_threads", num_threads, 1),
                                 ("prefetch", prefetch, 1),
                                 ("batches_per_element", batches_per_element, 1)):
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
          or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    # The order (and every argument check) is Loader's over the record indices.
    self._order = Loader({"index": np.arange(num_examples)}, global_batch_size,
                         seed=seed, shuffle=shuffle, drop_remainder=drop_remainder,
                         process_index=process_index, process_count=process_count)
    count = jax.process_count() if process_count is None else int(process_count)
    index = jax.process_index() if process_index is None else int(process_index)
    self._local_batch_size = int(global_batch_size) // count
    self._per_element = int(batches_per_element)
    self._read = _ReadLocalBatches(split, self._order, index * self._local_batch_size,
                                   self._local_batch_size, self._per_element)
    self._num_workers, self._num_threads = int(num_workers), int(num_threads)
    self._prefetch = int(prefetch)
    self._batches_served = 0
    self._iterator = None
    self._ready: collections.deque = collections.deque()  # read, not yet served

  @property
  def num_examples(self) -> int:
    """Examples in one epoch."""
    return self._order.num_examples

  @property
  def local_batch_size(self) -> int:
    """Rows of each batch this process receives."""
    return self._local_batch_size

  def global_indices(self, batch_index: int) -> np.ndarray:
    """Record indices of global batch ``batch_index``, all processes (int64)."""
    return self._order.global_indices(batch_index)

  def _start_pipeline(self):
    """Elements from the one holding batch ``batches_served``; returns how many
    of its leading batches were served already."""
    _ensure_absl_flags_parsed()
    first, already_served = divmod(self._batches_served, self._per_element)
    elements = grain.MapDataset.range(first, sys.maxsize).map(self._read)
    # In elements; at least one per thread, or grain leaves threads idle.
    prefetch = max(self._num_threads, math.ceil(self._prefetch / self._per_element))
    stream = elements.to_iter_dataset(grain.ReadOptions(
        num_threads=self._num_threads, prefetch_buffer_size=prefetch))
    if self._num_workers:
      stream = stream.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self._num_workers,
          per_worker_buffer_size=max(1, math.ceil(prefetch / self._num_workers))))
    self._iterator = iter(stream)
    return already_served

  def __iter__(self) -> GrainLoader:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if not self._ready:
      skip = self._start_pipeline() if self._iterator is None else 0
      self._ready.extend(next(self._iterator)[skip:])
    batch = self._ready.popleft()
    self._batches_served += 1
    return batch

  def close(self) -> None:
    """Stops the reading threads and worker processes (restarted on demand)."""
    self._ready.clear()
    iterator, self._iterator = self._iterator, None
    if iterator is not None and hasattr(iterator, "close"):
      iterator.close()

  def get_state(self) -> dict[str, Any]:
    """The position as a JSON dict, identical in form to ``Loader.get_state``."""
    state = self._order.get_state()
    state["batches_served"] = self._batches_served
    return state

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Moves to the position in ``state`` (from either loader's ``get_state``).

    Raises:
      ValueError: as ``Loader.set_state``: a malformed state or one from a
        different stream.
    """
    self._order.set_state(state)
    self.close()
    self._batches_served = self._order.get_state()["batches_served"]


def open_split(name: str, split: str, *, loader: str = "auto",
               memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
               data_dir: PathLike | None = None) -> dict[str, np.ndarray] | TfdsSplit:
  """A training split, in memory or as a lazy :class:`TfdsSplit`, by ``loader``.

  ``"memory"`` reads the whole split (``divlab.data.load``); ``"grain"`` opens
  it lazily; ``"auto"`` reads it when its decoded size fits
  ``memory_budget_bytes`` and opens it lazily otherwise. The choice and the
  reason are logged and printed once.

  Args:
    name: an embedded or prepared tfds name.
    split: a tfds split string.
    loader: ``"auto"``, ``"memory"`` or ``"grain"``.
    memory_budget_bytes: the ``"auto"`` threshold (default 1 GiB).
    data_dir: the tfds data dir.

  Returns:
    ``{"x", "y"}`` arrays (memory) or a :class:`TfdsSplit` (grain); pass either
    to :func:`make_loader`.

  Raises:
    ValueError: an unknown ``loader``, a non-positive budget, or as ``load``.

  Example::

    train = open_split("divlab_mnist1d", "train", loader="grain")
    batches = make_loader(train, 128, seed=0)
  """
  if loader not in LOADER_KINDS:
    raise ValueError(f"`loader` (data.loader) must be one of {LOADER_KINDS}, got {loader!r}.")
  if not isinstance(memory_budget_bytes, (int, np.integer)) or memory_budget_bytes < 1:
    raise ValueError("`memory_budget_bytes` must be a positive integer, got "
                     f"{memory_budget_bytes!r}.")
  lazy = TfdsSplit(name, split, data_dir=data_dir)
  size = lazy.estimated_bytes()
  if loader == "auto":
    chosen = "memory" if size <= memory_budget_bytes else "grain"
    reason = (f"{size / 2**20:.1f} MiB decoded, "
              f"{'within' if chosen == 'memory' else 'over'} the "
              f"{memory_budget_bytes / 2**20:.0f} MiB memory budget")
  else:
    chosen, reason = loader, f"data.loader={loader!r}"
  message = (f"data: {name} {split} ({len(lazy)} records) -> {chosen} loader ({reason})")
  logging.info("%s", message)
  if jax.process_index() == 0:
    print(message, flush=True)
  if chosen == "memory":
    return loading.load(name, split, data_dir=data_dir)
  return lazy


def make_loader(train: Mapping[str, np.ndarray] | TfdsSplit, global_batch_size: int, *,
                seed: int, **grain_options: Any) -> Loader | GrainLoader:
  """:class:`Loader` for in-memory arrays, :class:`GrainLoader` for a lazy split.

  Args:
    train: what :func:`open_split` returned (or any dict of arrays).
    global_batch_size: rows per global batch.
    seed: the order's seed.
    **grain_options: ``num_workers``, ``num_threads``, ``prefetch``,
      ``batches_per_element`` for
      :class:`GrainLoader`; ignored for arrays in memory.

  Returns:
    An infinite iterator of this process's batches with ``get_state`` and
    ``set_state``.

  Example::

    make_loader({"x": x, "y": y}, 32, seed=0)   # a Loader
  """
  if isinstance(train, Mapping):
    return Loader(dict(train), global_batch_size, seed=seed)
  return GrainLoader(train, global_batch_size, seed=seed, **grain_options)


def first_examples(train: Mapping[str, np.ndarray] | TfdsSplit,
                   count: int = 1) -> dict[str, np.ndarray]:
  """The first ``count`` examples of either kind of split (e.g. to init a model).

  Args:
    train: arrays in memory or a :class:`TfdsSplit`.
    count: how many examples (fewer if the split is shorter).

  Returns:
    ``{key: [min(count, n), ...]}``.

  Example::

    first_examples({"x": np.zeros((5, 2))}, 2)["x"].shape  # (2, 2)
  """
  if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
    raise ValueError(f"`count` must be a positive integer, got {count!r}.")
  if isinstance(train, Mapping):
    return {key: np.asarray(value)[:count] for key, value in train.items()}
  return train.read(np.arange(min(count, len(train))))
