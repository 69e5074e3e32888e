"""Variable-length token records to fixed-shape batches: padding or packing.

A jitted step needs fixed shapes, and token records (lines of text, synthetic
sequences) vary in length. Two layouts, both plain numpy and deterministic:

- **Padding** (:func:`pad_sequences`): one record per row, cut to ``length``
  and filled with ``pad_id``; ``mask`` marks the real tokens. Simple, and
  wasteful when records are much shorter than ``length``.
- **Packing** (:func:`pack_sequences`): several records per row, placed
  first-fit in record order; ``segment_ids`` numbers the records within a row
  (1, 2, ...; 0 is padding) and ``positions`` restarts at 0 in each record, so
  attention can be masked to ``segment_ids[q] == segment_ids[k]`` and position
  embeddings do not run across records (the layout of T5 / seqio packing).

``pad_collate`` and ``pack_collate`` wrap them as the ``collate`` of a
``divlab.data.TfdsSplit``, so a ``GrainLoader`` pads or packs in its reading
threads (or worker processes); they pickle, as worker processes need.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import numpy as np


def _check_positive(value: Any, name: str) -> int:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
      or value < 1:
    raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
  return int(value)


def _as_token_rows(sequences: Sequence[Any], length: int, truncate: bool) -> list[np.ndarray]:
  """1-D integer arrays, cut to ``length`` (or ValueError when not allowed)."""
  if isinstance(sequences, np.ndarray) and sequences.dtype != object:
    sequences = list(sequences)  # a rectangular array: its rows
  if len(sequences) == 0:
    raise ValueError("`sequences` is empty: a batch needs at least one record.")
  rows = []
  for index, sequence in enumerate(sequences):
    tokens = np.asarray(sequence)
    if tokens.ndim != 1 or not (np.issubdtype(tokens.dtype, np.integer) or tokens.size == 0):
      raise ValueError(f"`sequences`[{index}] must be a 1-D integer array, got "
                       f"dtype {tokens.dtype} and shape {tokens.shape}.")
    if len(tokens) > length and not truncate:
      raise ValueError(f"`sequences`[{index}] has {len(tokens)} tokens, more than "
                       f"`length`={length}; pass truncate=True to cut it.")
    rows.append(tokens[:length].astype(np.int32))
  return rows


def pad_sequences(sequences: Sequence[Any], length: int, *, pad_id: int = 0,
                  truncate: bool = True) -> dict[str, np.ndarray]:
  """One record per row, padded (or cut) to ``length``, with a token mask.

  ``tokens[i, :n_i] = sequences[i][:length]`` with ``n_i = min(len, length)``,
  ``tokens[i, n_i:] = pad_id``, ``mask[i, t] = t < n_i``.

  Args:
    sequences: ``B`` 1-D integer arrays (or lists) of any lengths.
    length: the row length ``L``.
    pad_id: the value of padded positions (the mask, not this value, says
      which tokens are real, so it may also be a vocabulary id).
    truncate: cut records longer than ``length`` to their first ``length``
      tokens (else raise).

  Returns:
    ``{"tokens": int32 [B, L], "mask": bool [B, L]}``.

  Raises:
    ValueError: empty ``sequences``, a record that is not 1-D integers, a
      non-positive ``length``, or (``truncate=False``) a record longer than it.

  Example::

    pad_sequences([[5, 6, 7], [8]], 4)
    # tokens [[5, 6, 7, 0], [8, 0, 0, 0]], mask [[T, T, T, F], [T, F, F, F]]
  """
  length = _check_positive(length, "length")
  rows = _as_token_rows(sequences, length, truncate)
  lengths = np.array([len(row) for row in rows])
  mask = np.arange(length)[None, :] < lengths[:, None]
  tokens = np.full((len(rows), length), pad_id, dtype=np.int32)
  if lengths.sum():
    tokens[mask] = np.concatenate(rows)  # row-major order of mask == record order
  return {"tokens": tokens, "mask": mask}


def pack_sequences(sequences: Sequence[Any], length: int, num_rows: int, *,
                   pad_id: int = 0, truncate: bool = True,
                   drop_overflow: bool = True) -> dict[str, np.ndarray]:
  """Several records per row, placed first-fit in order, with segment ids.

  Each record (cut to ``length``) goes into the first of the ``num_rows`` rows
  with room for all of it, after the records already there. In that row it
  gets ``segment_ids = k`` (its 1-based place in the row) and ``positions = 0,
  1, ..., n - 1``; unused positions have ``segment_ids = 0``, ``positions =
  0``, ``tokens = pad_id``. A record no row has room for is dropped (or, with
  ``drop_overflow=False``, raises): choose ``num_rows`` from the mean record
  length, ``num_rows >= B * mean_len / L`` plus a margin. Packed records
  count ``sum(segment_ids.max(axis=1))``.

  Args:
    sequences: ``B`` 1-D integer arrays (or lists) of any lengths.
    length: the row length ``L``.
    num_rows: the number of rows ``R``.
    pad_id: the value of unused positions.
    truncate: cut records longer than ``length`` (else raise).
    drop_overflow: drop records that fit in no row (else raise).

  Returns:
    ``{"tokens": int32 [R, L], "segment_ids": int32 [R, L], "positions":
    int32 [R, L], "mask": bool [R, L]}`` with ``mask = segment_ids > 0``.

  Raises:
    ValueError: as :func:`pad_sequences`, a non-positive ``num_rows``, or a
      record that fits nowhere when ``drop_overflow=False``.

  Example::

    pack_sequences([[5, 6, 7], [8, 9], [4]], 4, 2)
    # tokens      [[5, 6, 7, 4], [8, 9, 0, 0]]
    # segment_ids [[1, 1, 1, 2], [1, 1, 0, 0]]
    # positions   [[0, 1, 2, 0], [0, 1, 0, 0]]
  """
  length = _check_positive(length, "length")
  num_rows = _check_positive(num_rows, "num_rows")
  rows = _as_token_rows(sequences, length, truncate)
  tokens = np.full((num_rows, length), pad_id, dtype=np.int32)
  segment_ids = np.zeros((num_rows, length), dtype=np.int32)
  positions = np.zeros((num_rows, length), dtype=np.int32)
  used = np.zeros(num_rows, dtype=np.int64)   # tokens already in each row
  segments = np.zeros(num_rows, dtype=np.int32)
  for index, record in enumerate(rows):
    size = len(record)
    if size == 0:
      continue  # an empty record takes no room and has no token to learn from
    free = np.flatnonzero(used + size <= length)
    if free.size == 0:
      if not drop_overflow:
        raise ValueError(f"`sequences`[{index}] ({size} tokens) fits in none of the "
                         f"`num_rows`={num_rows} rows; raise num_rows.")
      continue
    row, start = free[0], used[free[0]]
    segments[row] += 1
    tokens[row, start:start + size] = record
    segment_ids[row, start:start + size] = segments[row]
    positions[row, start:start + size] = np.arange(size)
    used[row] += size
  return {"tokens": tokens, "segment_ids": segment_ids, "positions": positions,
          "mask": segment_ids > 0}


def _collate(records: Sequence[Mapping[str, Any]], *, key: str, layout: str,
             **options: Any) -> dict[str, np.ndarray]:
  sequences = [record[key] for record in records]
  if layout == "pad":
    return pad_sequences(sequences, **options)
  return pack_sequences(sequences, **options)


def pad_collate(length: int, *, key: str = "tokens", pad_id: int = 0,
                truncate: bool = True) -> functools.partial:
  """A ``TfdsSplit`` collate: records' ``key`` sequences -> :func:`pad_sequences`.

  Args:
    length: the row length.
    key: the record feature holding the tokens.
    pad_id: as :func:`pad_sequences`.
    truncate: as :func:`pad_sequences`.

  Returns:
    A picklable ``collate(records) -> {"tokens", "mask"}``.

  Example::

    pad_collate(8)([{"tokens": np.array([1, 2])}])["mask"].sum()  # 2
  """
  _check_positive(length, "length")
  return functools.partial(_collate, key=key, layout="pad", length=length,
                           pad_id=pad_id, truncate=truncate)


def pack_collate(length: int, num_rows: int, *, key: str = "tokens", pad_id: int = 0,
                 truncate: bool = True, drop_overflow: bool = True) -> functools.partial:
  """A ``TfdsSplit`` collate: records' ``key`` sequences -> :func:`pack_sequences`.

  Args:
    length: the row length.
    num_rows: rows per (local) batch.
    key: the record feature holding the tokens.
    pad_id: as :func:`pack_sequences`.
    truncate: as :func:`pack_sequences`.
    drop_overflow: as :func:`pack_sequences`.

  Returns:
    A picklable ``collate(records) -> {"tokens", "segment_ids", "positions",
    "mask"}``.

  Example::

    pack_collate(8, 1)([{"tokens": [1, 2]}, {"tokens": [3]}])["segment_ids"]
    # [[1, 1, 2, 0, 0, 0, 0, 0]]
  """
  _check_positive(length, "length")
  _check_positive(num_rows, "num_rows")
  return functools.partial(_collate, key=key, layout="pack", length=length,
                           num_rows=num_rows, pad_id=pad_id, truncate=truncate,
                           drop_overflow=drop_overflow)
