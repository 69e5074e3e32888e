"""Datasets by name and deterministic, checkpointable batch iterators.

Importing this package registers the embedded tfds builders (``EMBEDDED``),
which prepare offline on first use. Public API:

- ``load(name, split, *, data_dir=None)``: a whole split as
  ``{"x": float32, "y": int32 labels or float32 targets}``, for embedded and
  prepared real tfds names alike; ``info(name)`` and ``num_classes(name)``
  describe a dataset without reading it; ``prepare(name)`` only prepares.
- ``Loader(arrays, global_batch_size, *, seed, ...)``: infinite training
  batches (this process's slice), with ``get_state``/``set_state``.
- ``eval_batches(arrays, batch_size)``: every example once, with a ``mask``.
- ``open_split(name, split, loader="auto")``: a training split in memory, or
  as a lazy ``TfdsSplit`` when it exceeds a memory budget; ``make_loader``
  gives ``Loader`` for the first and ``GrainLoader`` (grain over the split's
  array_record files, same order, slices and position; ``cache_bytes`` keeps
  decoded records in memory, ``DecodedRecordCache``) for the second.
- ``sequences``: variable-length token records to fixed shapes, padded with a
  ``mask`` (``pad_sequences``) or packed with ``segment_ids``
  (``pack_sequences``), and the collates that do it inside a ``GrainLoader``.
- ``prepare_text(folder, level="byte" | "char")``: the ``divlab_text`` builder,
  a user's own ``*.txt`` files as token records, offline (array_record).
- ``tasks``: synthetic verifiable language tasks (sorting digit lists, 2-digit
  addition) with a tokenizer-free vocabulary, seeded disjoint train/test
  splits and exact / partial-credit reward functions.
- ``synthetic``: the seeded generators behind ``divlab_gmm`` and
  ``divlab_noisy_regression`` (ring means, the noise-free regression target).
"""
from divlab.data import sequences
from divlab.data import synthetic
from divlab.data import tasks
from divlab.data import text_builder
from divlab.data.builders import BUILDERS
from divlab.data.builders import EMBEDDED
from divlab.data.loader import eval_batches
from divlab.data.loader import Loader
from divlab.data.loading import info
from divlab.data.loading import load
from divlab.data.loading import num_classes
from divlab.data.loading import prepare
from divlab.data.synthetic import noisy_regression_mean
from divlab.data.synthetic import ring_gmm_means
from divlab.data.synthetic import sample_noisy_regression
from divlab.data.synthetic import sample_ring_gmm
from divlab.data.streaming import collate_supervised
from divlab.data.streaming import DecodedRecordCache
from divlab.data.streaming import first_examples
from divlab.data.streaming import GrainLoader
from divlab.data.streaming import make_loader
from divlab.data.streaming import open_split
from divlab.data.streaming import supervised_from_columns
from divlab.data.streaming import TfdsSplit
from divlab.data.text_builder import prepare_text

__all__ = [
    "BUILDERS",
    "DecodedRecordCache",
    "EMBEDDED",
    "GrainLoader",
    "Loader",
    "TfdsSplit",
    "collate_supervised",
    "eval_batches",
    "first_examples",
    "info",
    "load",
    "make_loader",
    "noisy_regression_mean",
    "num_classes",
    "open_split",
    "prepare",
    "prepare_text",
    "ring_gmm_means",
    "sample_noisy_regression",
    "supervised_from_columns",
    "sample_ring_gmm",
    "sequences",
    "synthetic",
    "tasks",
    "text_builder",
]
