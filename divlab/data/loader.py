"""Deterministic, checkpointable, host-sharded batches from in-memory arrays.

:class:`Loader` serves training batches forever; :func:`eval_batches` serves
every example once, padding the last batch with a ``mask``.

The order is a closed-form function of ``(seed, epoch)``: epoch ``e`` visits the
examples in ``np.random.default_rng([seed, e]).permutation(n)`` (or in index
order without shuffling), cut into consecutive global batches. The loader's
whole position is therefore one integer, the number of global batches served,
and any batch can be computed directly from it: restoring a checkpoint is
O(1), and the stream does not depend on how many processes read it. Each
process gathers only its contiguous slice of every global batch, so the slices
of all processes, in process order, are exactly the single-process batch.

This is plain numpy rather than grain: the splits here are whole arrays in
memory, so one vectorised fancy-index gather per batch is all the work, where
grain's ``MapDataset``/``IndexSampler`` pipeline gathers a batch's records
individually and stacks them, and ties the order to grain's own shuffle
implementation. The contract (deterministic order, per-host slices, a JSON
position) is the one grain's samplers give.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import jax
import numpy as np

# Permutations kept per loader: the current epoch and the one before, which a
# batch spanning an epoch boundary (drop_remainder=False) needs.
_CACHED_EPOCHS = 2


def _check_int(value: Any, name: str, minimum: int) -> int:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"`{name}` must be an integer, got {value!r}.")
  if value < minimum:
    raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
  return int(value)


def _check_arrays(arrays: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], int]:
  """Numpy views of ``arrays`` and their common, non-zero leading length."""
  if not isinstance(arrays, Mapping) or not arrays:
    raise ValueError("`arrays` must be a non-empty dict of arrays, got "
                     f"{type(arrays).__name__} {arrays!r:.80}.")
  converted = {key: np.asarray(value) for key, value in arrays.items()}
  lengths = {key: (value.shape[0] if value.ndim else None)
             for key, value in converted.items()}
  if None in lengths.values() or len(set(lengths.values())) != 1:
    raise ValueError("`arrays` must all have the same leading (example) axis, "
                     f"got lengths {lengths}.")
  num_examples = next(iter(lengths.values()))
  if num_examples == 0:
    raise ValueError("`arrays` holds no examples.")
  return converted, num_examples


class Loader:
  """An infinite iterator of this process's slice of each global batch.

  Epochs repeat forever, each in a fresh order. ``drop_remainder=True`` serves
  ``n // global_batch_size`` batches per epoch and skips that epoch's last
  ``n % global_batch_size`` examples (different ones each epoch when
  shuffling). ``drop_remainder=False`` drops nothing: the stream runs across
  epoch boundaries, so a batch can end one epoch and start the next, and every
  batch still has the full size (what a jitted step with fixed shapes needs).

  Example::

    loader = Loader({"x": x, "y": y}, 128, seed=0)
    batch = next(loader)              # {"x": x[idx], "y": y[idx]}
    state = loader.get_state()        # {"batches_served": 1, ...}: JSON
    resumed = Loader({"x": x, "y": y}, 128, seed=0)
    resumed.set_state(state)          # next(resumed) == next(loader)

  Args:
    arrays: ``{key: [n, ...] array}``, all with the same leading length.
    global_batch_size: rows per global batch, summed over processes.
    seed: non-negative integer; with the epoch it fixes the order.
    shuffle: permute each epoch (else index order every epoch).
    drop_remainder: see above.
    process_index: this process's index (default ``jax.process_index()``).
    process_count: number of processes (default ``jax.process_count()``).

  Raises:
    ValueError: empty or ragged ``arrays``; a non-positive batch size, or one
      not divisible by ``process_count``, or (with ``drop_remainder``) larger
      than the dataset; a negative seed; a process index out of range.
  """

  def __init__(self,
               arrays: Mapping[str, np.ndarray],
               global_batch_size: int,
               *,
               seed: int,
               shuffle: bool = True,
               drop_remainder: bool = True,
               process_index: int | None = None,
               process_count: int | None = None):
    self._arrays, self._num_examples = _check_arrays(arrays)
    self._global_batch_size = _check_int(global_batch_size, "global_batch_size", 1)
    self._seed = _check_int(seed, "seed", 0)
    self._shuffle = bool(shuffle)
    self._drop_remainder = bool(drop_remainder)
    count = jax.process_count() if process_count is None else process_count
    index = jax.process_index() if process_index is None else process_index
    self._process_count = _check_int(count, "process_count", 1)
    self._process_index = _check_int(index, "process_index", 0)
    if self._process_index >= self._process_count:
      raise ValueError(f"`process_index` must be < process_count={self._process_count}, "
                       f"got {self._process_index}.")
    if self._global_batch_size % self._process_count:
      raise ValueError(
          f"`global_batch_size`={self._global_batch_size} must be divisible by "
          f"process_count={self._process_count}.")
    if self._drop_remainder and self._global_batch_size > self._num_examples:
      raise ValueError(
          f"`global_batch_size`={self._global_batch_size} exceeds the "
          f"{self._num_examples} examples, so drop_remainder=True would serve "
          "no batch; use a smaller batch or drop_remainder=False.")
    self._local_batch_size = self._global_batch_size // self._process_count
    self._batches_served = 0
    self._orders: dict[int, np.ndarray] = {}

  @property
  def num_examples(self) -> int:
    """Examples in one epoch."""
    return self._num_examples

  @property
  def local_batch_size(self) -> int:
    """Rows of each batch this process receives."""
    return self._local_batch_size

  def _epoch_order(self, epoch: int) -> np.ndarray:
    """The visiting order of epoch ``epoch``: a pure function of (seed, epoch)."""
    order = self._orders.get(epoch)
    if order is None:
      if self._shuffle:
        order = np.random.default_rng([self._seed, epoch]).permutation(self._num_examples)
      else:
        order = np.arange(self._num_examples)
      if len(self._orders) >= _CACHED_EPOCHS:
        del self._orders[min(self._orders)]
      self._orders[epoch] = order
    return order

  def global_indices(self, batch_index: int) -> np.ndarray:
    """Example indices of global batch ``batch_index`` (0-based), all processes.

    Args:
      batch_index: the global batch's position in the stream.

    Returns:
      int64 ``[global_batch_size]``.
    """
    batch_index = _check_int(batch_index, "batch_index", 0)
    size, n = self._global_batch_size, self._num_examples
    if self._drop_remainder:
      epoch, within = divmod(batch_index, n // size)
      return self._epoch_order(epoch)[within * size:(within + 1) * size]
    positions = batch_index * size + np.arange(size)
    epochs, offsets = np.divmod(positions, n)
    indices = np.empty(size, dtype=np.int64)
    for epoch in np.unique(epochs):
      in_epoch = epochs == epoch
      indices[in_epoch] = self._epoch_order(int(epoch))[offsets[in_epoch]]
    return indices

  def __iter__(self) -> Loader:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    start = self._process_index * self._local_batch_size
    indices = self.global_indices(self._batches_served)[
        start:start + self._local_batch_size]
    batch = {key: value[indices] for key, value in self._arrays.items()}
    self._batches_served += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    """The position as a JSON-serialisable dict.

    ``batches_served`` is the position; the other entries identify the
    stream, so :meth:`set_state` can refuse a state from a different one. The
    process count is not among them: the global stream does not depend on it,
    so a run may resume on a different number of hosts.
    """
    return {"batches_served": self._batches_served,
            "seed": self._seed,
            "global_batch_size": self._global_batch_size,
            "num_examples": self._num_examples,
            "shuffle": self._shuffle,
            "drop_remainder": self._drop_remainder}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Moves to the position in ``state`` (from :meth:`get_state`).

    The next batch is then exactly the one the loader that produced ``state``
    would serve next.

    Raises:
      ValueError: ``state`` lacks a non-negative integer ``batches_served``, or
        names a different seed, batch size, dataset size, shuffle or
        drop_remainder than this loader's.
    """
    if not isinstance(state, Mapping) or "batches_served" not in state:
      raise ValueError(f"`state` must be a dict from get_state(), got {state!r}.")
    served = _check_int(state["batches_served"], "state['batches_served']", 0)
    mine = self.get_state()
    for key, value in state.items():
      if key != "batches_served" and key in mine and value != mine[key]:
        raise ValueError(f"`state` comes from a different stream: {key}={value!r}, "
                         f"this loader has {key}={mine[key]!r}.")
    self._batches_served = served


def eval_batches(arrays: Mapping[str, np.ndarray],
                 batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """Every example exactly once, in order, in batches of exactly ``batch_size``.

  The last batch is padded by repeating the final example (so padded inputs
  are valid data) and a boolean ``mask`` key marks real rows; metrics must be
  summed where ``mask`` is True. Nothing is dropped, whatever ``batch_size``.

  Args:
    arrays: ``{key: [n, ...] array}``; ``mask`` must not be a key.
    batch_size: rows per (global) batch.

  Returns:
    An iterator of ``{key: [batch_size, ...], "mask": bool [batch_size]}``,
    ``ceil(n / batch_size)`` batches.

  Raises:
    ValueError: empty or ragged ``arrays``, a ``mask`` key, or a non-positive
      ``batch_size``.
  """
  converted, num_examples = _check_arrays(arrays)
  batch_size = _check_int(batch_size, "batch_size", 1)
  if "mask" in converted:
    raise ValueError("`arrays` already has a 'mask' key, which eval_batches adds.")

  def batches() -> Iterator[dict[str, np.ndarray]]:
    for start in range(0, num_examples, batch_size):
      rows = np.arange(start, start + batch_size)
      mask = rows < num_examples
      rows = np.minimum(rows, num_examples - 1)
      batch = {key: value[rows] for key, value in converted.items()}
      batch["mask"] = mask
      yield batch

  return batches()
