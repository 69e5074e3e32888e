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
record is a few microseconds of reading, not a Python loop. Grain's own
pipeline position is never saved: the batch index is the whole position, so restoring is O(1) and a prefetched-but-unconsumed
batch is simply read again after a restart.

Reading is bounded below by array_record itself: every record is its own
compressed chunk (random access needs that), about 3 us of CPU per record
whatever the decoding, so 0.35-0.45 ms per batch of 128 MNIST-1D records. A
step that takes less than that (the MNIST-1D MLP's, on 2 cores that the step's
own threads already keep busy) would wait for its input. ``cache_bytes`` keeps
decoded records in memory (:class:`DecodedRecordCache`, up to that budget):
each is read from the files once, and once the cache holds the whole split
the loader stops its pipeline and gathers batches in the calling thread, as
``Loader`` does, since a gather from memory (about 10 us) costs less than a
handover between threads.

Memory: the resident cost is the prefetched batches plus one int64 visiting
order per cached epoch (8 bytes per record, as for ``Loader``), never the data
beyond ``cache_bytes`` (0 by default).

:func:`open_split` decides which loader a split gets (``"auto"``: memory when
the decoded split fits a budget, else grain, and says so); :func:`make_loader`
builds it.
"""
from __future__ import annotations

import collections
import math
import os
import sys
import threading
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

  @property
  def rows_are_records(self) -> bool:
    """Whether row ``i`` of ``read(indices)`` is record ``indices[i]`` alone
    (the default collate), so decoded rows may be cached per record."""
    return self._collate_columns is not None

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


class DecodedRecordCache:
  """``split.read`` that keeps decoded rows in memory, up to a byte budget.

  The records whose split index is below ``capacity`` are cached, where
  ``capacity = min(len(split), cache_bytes // bytes per decoded row)`` (the
  row size is read off the first batch). Each is decoded the first time a
  batch asks for it, then copied out of the cache: once the whole split fits
  and has been read (after one epoch), a batch costs one gather per feature,
  as for the in-memory ``Loader``, instead of reading and decoding every
  record again. A fixed set of cached records (rather than, say, the most
  recent ones) means no eviction and no bookkeeping per read; a shuffled
  stream hits the cache for a ``capacity / len(split)`` share of its records.

  Rows are exactly what ``split.read`` returns for them, so batches are the
  same arrays with or without the cache. Only for splits whose batches hold
  one row per requested record, in order (``split.rows_are_records``: the
  default supervised collate; not padded or packed sequences). Threads may
  fill it at once: a row is written before it is marked filled, and two
  threads filling one row write the same bytes. A pickled copy (a worker
  process's) starts empty.

  Example::

    cache = DecodedRecordCache(TfdsSplit("divlab_mnist1d", "train"), 1 << 20)
    cache.read([3, 0])["x"]   # decoded from the files, then kept
    cache.read([0, 3])["x"]   # from memory

  Args:
    split: a :class:`TfdsSplit` (or anything with ``len``, ``read`` and a true
      ``rows_are_records``).
    cache_bytes: the budget for decoded rows (positive).

  Raises:
    ValueError: a non-positive ``cache_bytes``, or a ``split`` whose batches
      are not one row per record.
  """

  def __init__(self, split: Any, cache_bytes: int):
    if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, (int, np.integer)) \
        or cache_bytes < 1:
      raise ValueError(f"`cache_bytes` must be a positive integer, got {cache_bytes!r}.")
    if not getattr(split, "rows_are_records", False):
      raise ValueError(f"`split` {split!r} must give one row per record "
                       "(rows_are_records) to be cached; a padding or packing collate "
                       "does not.")
    self._split, self._budget = split, int(cache_bytes)
    self._num_records = len(split)
    self._lock = threading.Lock()
    self._rows: dict[str, np.ndarray] | None = None  # {key: [capacity, ...]}
    self._filled: np.ndarray | None = None           # bool [capacity]
    self._num_filled = 0

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    state.update(_lock=None, _rows=None, _filled=None, _num_filled=0)  # a copy starts empty
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._lock = threading.Lock()

  @property
  def capacity(self) -> int:
    """Records that can be cached (0 until the first read sizes the rows)."""
    return 0 if self._filled is None else len(self._filled)

  @property
  def num_cached(self) -> int:
    """Records decoded and held so far."""
    return self._num_filled

  @property
  def complete(self) -> bool:
    """Whether every record of the split is cached (no read touches the files)."""
    return self._num_filled == self._num_records

  def __len__(self) -> int:
    return self._num_records

  @property
  def num_examples(self) -> int:
    """Records in the split."""
    return self._num_records

  def _allocate(self, batch: Mapping[str, np.ndarray], rows: int) -> None:
    """Sizes the cache from the first batch (``rows`` records); under the lock."""
    if self._filled is not None:
      return
    arrays = {key: np.asarray(value) for key, value in batch.items()}
    if any(value.ndim == 0 or value.shape[0] != rows for value in arrays.values()):
      raise ValueError(f"`split` returned {({k: v.shape for k, v in arrays.items()})} for "
                       f"{rows} records: not one row per record, so it cannot be cached.")
    row_bytes = max(1, sum(value[0].nbytes for value in arrays.values()))
    capacity = min(self._num_records, self._budget // row_bytes)
    # np.empty maps pages lazily: memory is committed as rows are filled.
    self._rows = {key: np.empty((capacity,) + value.shape[1:], value.dtype)
                  for key, value in arrays.items()}
    self._filled = np.zeros(capacity, bool)

  def store(self, indices: Sequence[int] | np.ndarray,
            batch: Mapping[str, np.ndarray]) -> None:
    """Keeps the rows of ``batch``, which ``split.read(indices)`` returned.

    For a batch read elsewhere (a worker process's): rows stored here must be
    exactly the split's, or later reads return them instead.
    """
    indices = np.asarray(indices, np.int64).reshape(-1)
    with self._lock:
      self._allocate(batch, len(indices))
      keep = indices < len(self._filled)
      keep[keep] = ~self._filled[indices[keep]]
      if not keep.any():
        return
      for key, rows in self._rows.items():
        rows[indices[keep]] = np.asarray(batch[key])[keep]
      self._filled[indices[keep]] = True  # after the rows: readers see whole rows
      # A batch may name a record twice (drop_remainder=False across epochs).
      self._num_filled += len(np.unique(indices[keep]))

  def read(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """``split.read(indices)``, from memory for the records already cached."""
    indices = np.asarray(indices, np.int64).reshape(-1)
    if self._filled is None:
      batch = self._split.read(indices)
      self.store(indices, batch)
      return batch
    if self._num_filled == self._num_records:  # all held: no lookups needed
      return {key: rows[indices] for key, rows in self._rows.items()}
    hit = indices < len(self._filled)
    hit[hit] = self._filled[indices[hit]]
    if hit.all():
      return {key: rows[indices] for key, rows in self._rows.items()}
    miss = ~hit
    fresh = self._split.read(indices[miss])
    self.store(indices[miss], fresh)
    if not hit.any():
      return fresh
    batch = {}
    for key, rows in self._rows.items():
      column = np.empty((len(indices),) + rows.shape[1:], rows.dtype)
      column[hit] = rows[indices[hit]]
      column[miss] = fresh[key]
      batch[key] = column
    return batch


class _ReadLocalBatches:
  """grain map: element index -> this process's collated slice of each of the
  ``count`` global batches ``[count * element, count * (element + 1))``.

  A class rather than a closure so worker processes can unpickle it.
  """

  def __init__(self, split: Any, order: Loader, start: int, size: int, count: int):
    self._split, self._order, self._start, self._size = split, order, start, size
    self._count = count

  def local_indices(self, batch: int) -> np.ndarray:
    """The record indices of this process's slice of global batch ``batch``."""
    return self._order.global_indices(batch)[self._start:self._start + self._size]

  def __call__(self, element: int) -> list[dict[str, np.ndarray]]:
    first = element * self._count
    return [self._split.read(self.local_indices(b)) for b in range(first, first + self._count)]


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
    cache_bytes: memory for decoded records (:class:`DecodedRecordCache`; 0,
      the default: none, every batch is read from the files). Within it,
      records are decoded once and gathered from memory afterwards; each
      worker process holds its own cache.

  Raises:
    ValueError: as ``Loader`` for the batch, seed and process arguments; a
      negative ``num_workers`` or ``cache_bytes``, ``num_threads``/
      ``prefetch``/``batches_per_element`` below 1, or a ``cache_bytes`` for
      a split that is not one row per record.
  """

  def __init__(self, split: Any, global_batch_size: int, *, seed: int,
               shuffle: bool = True, drop_remainder: bool = True,
               process_index: int | None = None, process_count: int | None = None,
               num_workers: int = 0, num_threads: int = 2, prefetch: int = 4,
               batches_per_element: int = 1, cache_bytes: int = 0):
    if not hasattr(split, "read") or not hasattr(split, "__len__"):
      raise ValueError(f"`split` must have len() and read(indices), got {split!r}.")
    num_examples = len(split)
    if num_examples < 1:
      raise ValueError("`split` holds no examples.")
    for name, value, minimum in (("num_workers", num_workers, 0),
                                 ("num_threads", num_threads, 1),
                                 ("prefetch", prefetch, 1),
                                 ("batches_per_element", batches_per_element, 1),
                                 ("cache_bytes", cache_bytes, 0)):
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
          or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    # The order (and every argument check) is Loader's. It never gathers from
    # its arrays, so a zero-stride index array of the split's length serves.
    def make_order() -> Loader:
      return Loader({"index": np.broadcast_to(np.int8(0), (num_examples,))},
                    global_batch_size, seed=seed, shuffle=shuffle,
                    drop_remainder=drop_remainder, process_index=process_index,
                    process_count=process_count)

    self._order = make_order()
    count = jax.process_count() if process_count is None else int(process_count)
    index = jax.process_index() if process_index is None else int(process_index)
    self._local_batch_size = int(global_batch_size) // count
    self._per_element = int(batches_per_element)
    # None, or the cache the reading threads of this process share.
    self._cache = DecodedRecordCache(split, int(cache_bytes)) if cache_bytes else None
    source = split if self._cache is None else self._cache
    self._read = _ReadLocalBatches(source, self._order, index * self._local_batch_size,
                                   self._local_batch_size, self._per_element)
    # Batches gathered in this thread once the cache holds the whole split:
    # an order of their own, since pipeline threads may still be finishing
    # with self._order when they start.
    self._read_here = _ReadLocalBatches(source, make_order(), index * self._local_batch_size,
                                        self._local_batch_size, 1)
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

  @property
  def cache(self) -> DecodedRecordCache | None:
    """This process's decoded-record cache (None without ``cache_bytes``)."""
    return self._cache

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
    cache = self._cache
    if not self._ready:
      if cache is not None and cache.complete:
        # Every record is decoded in memory: a gather here costs less than a
        # handover from a reading thread or process, so the pipeline stops.
        if self._iterator is not None:
          self.close()
        batch, = self._read_here(self._batches_served)
        self._batches_served += 1
        return batch
      skip = self._start_pipeline() if self._iterator is None else 0
      self._ready.extend(next(self._iterator)[skip:])
    batch = self._ready.popleft()
    if self._num_workers and cache is not None and not cache.complete \
        and cache.capacity in (0, cache.num_examples):
      # Workers fill their own caches; this process keeps what they send, so
      # that it too can serve every batch from memory after one epoch.
      cache.store(self._read_here.local_indices(self._batches_served), batch)
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
      ``batches_per_element``, ``cache_bytes`` for :class:`GrainLoader`;
      ignored for arrays in memory.

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
