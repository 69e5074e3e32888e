"""GrainLoader: Loader's order, host slices and position, read lazily through grain.

The reference for every batch is the plain numpy gather of the whole split
(``divlab.data.load``) at the documented indices, computed here from
``np.random.default_rng([seed, epoch]).permutation(n)``.
"""
import concurrent.futures
import json
import pathlib
import pickle
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from divlab import data
from divlab.data import records
from divlab.data import streaming

NAME = "divlab_diabetes"  # 353 training records: prime, so no batch size divides it


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("tfds_streaming")
  data.prepare(NAME, data_dir=directory)
  return directory


@pytest.fixture(scope="module")
def split(data_dir):
  return data.TfdsSplit(NAME, "train", data_dir=data_dir)


@pytest.fixture(scope="module")
def arrays(data_dir):
  return data.load(NAME, "train", data_dir=data_dir)


def _documented_indices(seed, num_examples, batch_size, num_batches, drop_remainder):
  """Global batch indices straight from the documented per-epoch permutations."""
  epochs = num_batches * batch_size // num_examples + 2
  orders = [np.random.default_rng([seed, e]).permutation(num_examples) for e in range(epochs)]
  if drop_remainder:
    per_epoch = num_examples // batch_size
    orders = [order[:per_epoch * batch_size] for order in orders]
  stream = np.concatenate(orders)
  return stream[:num_batches * batch_size].reshape(num_batches, batch_size)


def _grain(split, batch_size, **kwargs):
  kwargs.setdefault("process_index", 0)
  kwargs.setdefault("process_count", 1)
  return data.GrainLoader(split, batch_size, **kwargs)


def _assert_batch(batch, arrays, indices):
  assert batch.keys() == {"x", "y"}
  for key in ("x", "y"):
    assert batch[key].dtype == arrays[key].dtype
    np.testing.assert_array_equal(batch[key], arrays[key][indices])


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_batches_are_the_numpy_gather_of_the_documented_order(split, arrays, drop_remainder):
  # 353 // 32 = 11 batches per epoch: 25 batches cross two epoch boundaries.
  loader = _grain(split, 32, seed=5, drop_remainder=drop_remainder)
  expected = _documented_indices(5, len(arrays["y"]), 32, 25, drop_remainder)
  for indices in expected:
    _assert_batch(next(loader), arrays, indices)
  loader.close()


def test_unshuffled_order_is_index_order(split, arrays):
  loader = _grain(split, 100, seed=0, shuffle=False)
  for start in (0, 100, 200, 0):  # the fourth batch starts the second epoch
    _assert_batch(next(loader), arrays, np.arange(start, start + 100))
  loader.close()


@pytest.mark.parametrize("process_count", [2, 4])
def test_each_process_reads_its_slice_and_slices_make_one_copy(split, arrays, process_count):
  batch_size, num_batches = 24, 17  # 353 // 24 = 14 batches per epoch: two epochs
  loaders = [_grain(split, batch_size, seed=1, process_index=p, process_count=process_count)
             for p in range(process_count)]
  expected = _documented_indices(1, len(arrays["y"]), batch_size, num_batches, True)
  per_process = batch_size // process_count
  seen = []
  for indices in expected:
    slices = [next(loader) for loader in loaders]
    for p, batch in enumerate(slices):
      _assert_batch(batch, arrays, indices[p * per_process:(p + 1) * per_process])
    seen.append(np.concatenate([batch["y"] for batch in slices]))
  # The first epoch's 14 global batches hold 14 * 24 distinct examples, each once.
  first_epoch = np.concatenate(seen)[:(353 // batch_size) * batch_size, 0]
  order = np.random.default_rng([1, 0]).permutation(353)[:len(first_epoch)]
  np.testing.assert_array_equal(first_epoch, arrays["y"][order, 0])
  assert len(np.unique(order)) == len(order)
  for loader in loaders:
    loader.close()


@pytest.mark.parametrize("batches_per_element", [1, 3])
def test_resume_from_json_state_continues_the_stream(split, batches_per_element):
  # Batches come 3 to an element too: 17 served stops inside the 6th element.
  uninterrupted = _grain(split, 16, seed=3, drop_remainder=False)
  reference = [next(uninterrupted) for _ in range(30)]
  first = _grain(split, 16, seed=3, drop_remainder=False,
                 batches_per_element=batches_per_element)
  for _ in range(17):  # across the first epoch boundary (353 / 16 = 22.06)
    next(first)
  state = json.loads(json.dumps(first.get_state()))
  first.close()  # a killed run: its prefetched batches are lost
  resumed = _grain(split, 16, seed=3, drop_remainder=False,
                   batches_per_element=batches_per_element)
  resumed.set_state(state)
  assert resumed.get_state() == state
  for expected in reference[17:]:
    got = next(resumed)
    np.testing.assert_array_equal(got["x"], expected["x"])
    np.testing.assert_array_equal(got["y"], expected["y"])
  for loader in (uninterrupted, resumed):
    loader.close()


def test_state_is_interchangeable_with_the_memory_loader(split, arrays):
  memory = data.Loader(arrays, 32, seed=2, process_index=0, process_count=1)
  for _ in range(13):
    next(memory)
  streaming_loader = _grain(split, 32, seed=2)
  streaming_loader.set_state(memory.get_state())
  for _ in range(3):
    expected, got = next(memory), next(streaming_loader)
    _assert_batch(got, expected, np.arange(32))
  assert streaming_loader.get_state() == memory.get_state()
  streaming_loader.close()


def test_state_from_another_stream_is_refused(split):
  loader = _grain(split, 16, seed=3)
  state = loader.get_state()
  with pytest.raises(ValueError, match="seed"):
    _grain(split, 16, seed=4).set_state(state)
  with pytest.raises(ValueError, match="global_batch_size"):
    _grain(split, 32, seed=3).set_state(state)
  with pytest.raises(ValueError, match="state"):
    loader.set_state({"position": 3})


def test_worker_processes_give_the_same_batches(split, arrays):
  loader = _grain(split, 32, seed=9, num_workers=1, prefetch=2, batches_per_element=2)
  expected = _documented_indices(9, len(arrays["y"]), 32, 5, True)
  for indices in expected:
    _assert_batch(next(loader), arrays, indices)
  loader.close()


@pytest.mark.parametrize("kwargs, argument", [
    ({"num_workers": -1}, "num_workers"),
    ({"num_threads": 0}, "num_threads"),
    ({"prefetch": 0}, "prefetch"),
    ({"batches_per_element": 0}, "batches_per_element"),
    ({"process_index": 2, "process_count": 2}, "process_index"),
    ({"process_count": 3}, "global_batch_size"),
])
def test_bad_arguments_name_themselves(split, kwargs, argument):
  options = {"seed": 0, "process_index": 0, "process_count": 1, **kwargs}
  with pytest.raises(ValueError, match=argument):
    data.GrainLoader(split, 16, **options)


def test_open_split_picks_by_budget_or_by_name(data_dir, arrays, capsys):
  # Decoded size: 353 records x (10 + 1) float32 = 15532 bytes.
  assert data.TfdsSplit(NAME, "train", data_dir=data_dir).estimated_bytes() == 353 * 11 * 4
  in_memory = data.open_split(NAME, "train", data_dir=data_dir, memory_budget_bytes=15532)
  assert isinstance(in_memory, dict)
  np.testing.assert_array_equal(in_memory["x"], arrays["x"])
  lazy = data.open_split(NAME, "train", data_dir=data_dir, memory_budget_bytes=15531)
  assert isinstance(lazy, data.TfdsSplit) and len(lazy) == 353
  assert "grain loader" in capsys.readouterr().out
  forced = data.open_split(NAME, "train", data_dir=data_dir, loader="grain")
  assert isinstance(forced, data.TfdsSplit)
  assert isinstance(data.make_loader(in_memory, 8, seed=0), data.Loader)
  assert isinstance(data.make_loader(forced, 8, seed=0), data.GrainLoader)
  np.testing.assert_array_equal(data.first_examples(forced, 2)["x"], arrays["x"][:2])
  np.testing.assert_array_equal(data.first_examples(in_memory, 2)["y"], arrays["y"][:2])


def test_open_split_rejects_bad_arguments(data_dir):
  with pytest.raises(ValueError, match="loader"):
    data.open_split(NAME, "train", data_dir=data_dir, loader="disk")
  with pytest.raises(ValueError, match="memory_budget_bytes"):
    data.open_split(NAME, "train", data_dir=data_dir, memory_budget_bytes=0)
  with pytest.raises(ValueError, match="split"):
    data.TfdsSplit(NAME, "validation", data_dir=data_dir)
  with pytest.raises(ValueError, match="collate"):
    data.TfdsSplit(NAME, "train", data_dir=data_dir, collate="stack")


def test_collate_supervised_matches_load_conversions():
  records = [{"image": np.full((2, 2, 1), 255, np.uint8), "label": np.int64(3)},
             {"image": np.zeros((2, 2, 1), np.uint8), "label": np.int64(1)}]
  batch = streaming.collate_supervised(records)
  assert batch["x"].dtype == np.float32 and batch["y"].dtype == np.int32
  np.testing.assert_array_equal(batch["x"][:, 0, 0, 0], [1.0, 0.0])
  np.testing.assert_array_equal(batch["y"], [3, 1])
  with pytest.raises(ValueError, match="records"):
    streaming.collate_supervised([{"tokens": np.arange(3)}])


def _tfds_decoded(name, data_dir, count):
  """Records decoded by tfds's own generic decoder: the reference."""
  source = tfds.data_source(name, split="train", data_dir=str(data_dir), download=False)
  return source.__getitems__(list(range(count))), source.dataset_info.features


def _assert_same_records(got, want):
  for a, b in zip(got, want):
    assert a.keys() == b.keys()
    for key in a:
      assert np.asarray(a[key]).dtype == np.asarray(b[key]).dtype, key
      assert np.shape(a[key]) == np.shape(b[key]), key
      np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("name", [NAME, "divlab_digits"])
def test_fast_decoder_matches_tfds_decoder(data_dir, name):
  data.prepare(name, data_dir=data_dir)
  want, features = _tfds_decoded(name, data_dir, 50)
  decoder = records.ExampleDecoder(features)
  assert decoder.is_fast
  raw = tfds.data_source(name, split="train", data_dir=str(data_dir), download=False,
                         deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  _assert_same_records([decoder(r) for r in raw.__getitems__(list(range(50)))], want)


def test_fast_decoder_bytes_encoding_and_fallback(tmp_path):
  fast = tfds.features.FeaturesDict({
      "blob": tfds.features.Tensor(shape=(2, 3), dtype=np.float32,
                                   encoding=tfds.features.Encoding.BYTES),
      "ids": tfds.features.Tensor(shape=(None,), dtype=np.int32),
      "flag": tfds.features.Tensor(shape=(), dtype=np.bool_),
      "label": tfds.features.ClassLabel(num_classes=3)})
  slow = tfds.features.FeaturesDict({"text": tfds.features.Text(),
                                     "x": tfds.features.Tensor(shape=(2,), dtype=np.float32)})
  examples = [(fast, {"blob": np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5,
                      "ids": np.array([7, -1, 300], np.int32), "flag": True, "label": 2}),
              (fast, {"blob": np.ones((2, 3), np.float32), "ids": np.zeros(0, np.int32),
                      "flag": False, "label": 0}),
              (slow, {"text": "héllo", "x": np.array([0.5, -1.0], np.float32)})]
  for features, example in examples:
    serialized = features.serialize_example(example)
    decoder = records.ExampleDecoder(features)
    assert decoder.is_fast == (features is fast)
    _assert_same_records([decoder(serialized)], [features.deserialize_example_np(serialized)])


def test_grain_run_killed_and_resumed_equals_the_memory_run(tmp_path):
  """The runner end to end: kill -9 mid-run with data.loader=grain, re-run, and
  every metric and result equals an uninterrupted data.loader=memory run."""
  root = pathlib.Path(__file__).resolve().parents[2]
  config = root / "configs" / "classify" / "mnist1d.py"
  common = ["--config.train.num_steps=40", "--config.train.checkpoint_every=10",
            "--config.train.log_every=5", "--config.train.eval_every=20",
            "--config.progress=False"]

  def command(workdir, loader):
    return [sys.executable, "-m", "divlab.run", f"--config={config}:smoke",
            f"--workdir={workdir}", f"--config.data.loader={loader}", *common]

  def outputs(workdir):
    runs = sorted((workdir / "runs").iterdir())
    return ((workdir / "results.json").read_text(),
            {run.name: (run / "metrics.jsonl").read_text() for run in runs})

  killed = subprocess.Popen(command(tmp_path / "grain", "grain"), cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  metrics = tmp_path / "grain" / "runs" / "cnn_seed0" / "metrics.jsonl"
  deadline = time.time() + 300
  # Three logged steps (15): past the first checkpoint (10), before the end (40).
  while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
    assert killed.poll() is None and time.time() < deadline, "run ended or stalled"
    time.sleep(0.01)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  for workdir, loader in ((tmp_path / "grain", "grain"), (tmp_path / "memory", "memory")):
    done = subprocess.run(command(workdir, loader), cwd=root, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
  assert outputs(tmp_path / "grain") == outputs(tmp_path / "memory")


# The batch path: one numpy pass over a batch of records equals the per-record path.

_BATCH_FEATURES = tfds.features.FeaturesDict({
    "blob": tfds.features.Tensor(shape=(2, 3), dtype=np.float32,
                                 encoding=tfds.features.Encoding.BYTES),
    "floats": tfds.features.Tensor(shape=(3,), dtype=np.float32),
    "ints": tfds.features.Tensor(shape=(2,), dtype=np.int64),
    "small": tfds.features.Tensor(shape=(), dtype=np.int32),
    "flag": tfds.features.Tensor(shape=(), dtype=np.bool_),
    "label": tfds.features.ClassLabel(num_classes=300)})


def _batch_example(rng, ints):
  # Random values of fixed serialized size: floats, a negative int32 (always a
  # 10-byte varint) and a label in [128, 300) (always 2 bytes).
  return {"blob": rng.standard_normal((2, 3)).astype(np.float32),
          "floats": rng.standard_normal(3).astype(np.float32),
          "ints": np.asarray(ints, np.int64), "small": np.int32(rng.integers(-5, 0)),
          "flag": bool(rng.integers(2)), "label": int(rng.integers(128, 300))}


def _stack_reference(features, serialized):
  """Each record through tfds's own decoder, stacked with numpy at the spec's
  dtype (tfds gives scalars as Python numbers)."""
  decoded = [features.deserialize_example_np(record) for record in serialized]
  return {key: np.stack([np.asarray(d[key], features[key].np_dtype) for d in decoded])
          for key in decoded[0]}


def _assert_same_columns(got, want):
  assert got.keys() == want.keys()
  for key in want:
    assert got[key].dtype == want[key].dtype, key
    np.testing.assert_array_equal(got[key], want[key])


def test_batch_decoder_equals_the_per_record_decoder():
  rng = np.random.default_rng(0)
  # Same varint lengths in every record (a 1- and a 10-byte value, negative):
  # one shared layout, so the batch path applies.
  examples = [_batch_example(rng, [int(rng.integers(0, 100)), -int(rng.integers(1, 2**40))])
              for _ in range(6)]
  serialized = [_BATCH_FEATURES.serialize_example(e) for e in examples]
  decoder = records.ExampleDecoder(_BATCH_FEATURES)
  columns = decoder.decode_batch(serialized)
  assert columns is not None
  _assert_same_columns(columns, _stack_reference(_BATCH_FEATURES, serialized))
  np.testing.assert_array_equal(columns["ints"], np.stack([e["ints"] for e in examples]))


def test_batch_decoder_declines_batches_without_one_layout():
  rng = np.random.default_rng(1)
  decoder = records.ExampleDecoder(_BATCH_FEATURES)
  # Values of different varint lengths (5 vs 300, 1 vs 2 bytes), at equal record
  # length: the continuation bits differ, so the layout check must refuse.
  same_length = [_BATCH_FEATURES.serialize_example(_batch_example(rng, ints))
                 for ints in ([5, 300], [300, 5])]
  assert len(same_length[0]) == len(same_length[1])
  assert decoder.decode_batch(same_length) is None
  different_length = [_BATCH_FEATURES.serialize_example(_batch_example(rng, ints))
                      for ints in ([5, 5], [300, 5])]
  assert decoder.decode_batch(different_length) is None
  assert decoder.decode_batch([]) is None
  ragged = records.ExampleDecoder(tfds.features.FeaturesDict(
      {"ids": tfds.features.Tensor(shape=(None,), dtype=np.int32)}))
  assert ragged.decode_batch([b""]) is None


@pytest.mark.parametrize("name", [NAME, "divlab_digits", "divlab_mnist1d"])
def test_batched_read_equals_per_record_read(data_dir, name):
  """TfdsSplit.read (batch path) == read_records (per record) == the numpy gather."""
  data.prepare(name, data_dir=data_dir)
  split = data.TfdsSplit(name, "train", data_dir=data_dir)
  assert split._decode.decode_batch(split._read_serialized([0, 1])) is not None
  indices = np.random.default_rng(2).permutation(len(split))[:40]
  batched, per_record = split.read(indices), split.read_records(indices)
  _assert_same_columns(batched, per_record)
  _assert_batch(batched, data.load(name, "train", data_dir=data_dir), indices)


def test_supervised_from_columns_matches_collate_supervised():
  records_ = [{"image": np.full((2, 1), 200, np.uint8), "label": np.int64(4)},
              {"image": np.zeros((2, 1), np.uint8), "label": np.int64(0)}]
  columns = {key: np.stack([r[key] for r in records_]) for key in records_[0]}
  _assert_same_columns(streaming.supervised_from_columns(columns),
                       streaming.collate_supervised(records_))
  with pytest.raises(ValueError, match="columns"):
    streaming.supervised_from_columns({"tokens": np.arange(3)})


def test_sharded_records_follow_file_instructions_and_pickle(data_dir):
  """A split made of two slices of the file (two instructions, with skips):
  every record read equals the numpy gather of load() on the same split."""
  sliced = "train[:10%]+train[50%:60%]"
  split = data.TfdsSplit(NAME, sliced, data_dir=data_dir)
  assert isinstance(split._source, records.ShardedArrayRecords)
  arrays = data.load(NAME, sliced, data_dir=data_dir)
  assert len(split) == len(arrays["y"])
  indices = np.random.default_rng(3).permutation(len(split))
  copy = pickle.loads(pickle.dumps(split))  # as a worker process receives it
  for source in (split, copy):
    _assert_batch(source.read(indices), arrays, indices)
  # Loader threads read at once, each seeking its own readers.
  chunks = np.array_split(indices, 8)
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    for chunk, batch in zip(chunks, pool.map(split.read, chunks)):
      _assert_batch(batch, arrays, chunk)
  with pytest.raises(ValueError, match="indices"):
    split._source.read([len(split)])
  with pytest.raises(ValueError, match="file_instructions"):
    records.ShardedArrayRecords([])


# Decoded size of one diabetes record: x of 10 float32 and y of 1 float32.
ROW_BYTES = 11 * 4


class _CountingSplit:
  """A split that counts the records read from it (the files' side of a cache)."""

  def __init__(self, split):
    self.split, self.reads = split, []
    self.rows_are_records = split.rows_are_records

  def __len__(self):
    return len(self.split)

  def read(self, indices):
    self.reads.append(np.array(indices))
    return self.split.read(indices)


@pytest.mark.parametrize("cache_records, batches_per_element", [(353, 1), (353, 3), (100, 1)])
def test_cached_batches_are_the_numpy_gather_over_epochs(split, arrays, cache_records,
                                                         batches_per_element):
  counting = _CountingSplit(split)
  loader = _grain(counting, 32, seed=7, drop_remainder=False,
                  cache_bytes=cache_records * ROW_BYTES,
                  batches_per_element=batches_per_element)
  # 40 batches of 32: 3.6 epochs of 353, every record visited 3 times or more.
  expected = _documented_indices(7, 353, 32, 40, False)
  for served, indices in enumerate(expected, start=1):
    _assert_batch(next(loader), arrays, indices)
    assert loader.get_state()["batches_served"] == served  # not what was read ahead
  cache = loader.cache
  assert cache.capacity == cache_records and cache.num_cached == cache_records
  assert cache.complete == (cache_records == 353)
  # The first epoch cached records 0..cache_records-1: later reads are of the
  # others only (none at all once the whole split is cached).
  reads_so_far = len(counting.reads)
  for indices in _documented_indices(7, 353, 32, 50, False)[40:]:
    _assert_batch(next(loader), arrays, indices)
  later = np.concatenate([np.zeros(0, np.int64)] + counting.reads[reads_so_far:])
  if cache.complete:
    assert later.size == 0
  else:
    assert later.size > 0 and later.min() >= cache_records
  loader.close()


def test_cached_loader_resumes_and_rewinds_exactly(split, arrays):
  expected = _documented_indices(3, 353, 16, 60, True)
  loader = _grain(split, 16, seed=3, cache_bytes=353 * ROW_BYTES)
  states = {}
  for served, indices in enumerate(expected[:45], start=1):
    _assert_batch(next(loader), arrays, indices)
    states[served] = json.loads(json.dumps(loader.get_state()))
  # drop_remainder: 22 batches of 16 per epoch skip one record each epoch.
  assert loader.cache.num_cached >= 352
  loader.set_state(states[5])  # back into the first epoch, on the same loader
  for indices in expected[5:30]:
    _assert_batch(next(loader), arrays, indices)
  resumed = _grain(split, 16, seed=3, cache_bytes=353 * ROW_BYTES)
  resumed.set_state(states[41])
  assert resumed.get_state() == states[41]
  for indices in expected[41:60]:
    _assert_batch(next(resumed), arrays, indices)
  for each in (loader, resumed):
    each.close()


def test_worker_processes_with_a_cache_fill_this_process_cache(split, arrays):
  loader = _grain(split, 32, seed=9, num_workers=1, prefetch=2, batches_per_element=2,
                  drop_remainder=False, cache_bytes=353 * ROW_BYTES)
  # 12 batches of 32 cover the first epoch of 353; then memory serves them.
  for indices in _documented_indices(9, 353, 32, 20, False):
    _assert_batch(next(loader), arrays, indices)
  assert loader.cache.complete
  loader.close()


def test_record_cache_reads_hits_misses_and_duplicates(split, arrays):
  # Budget for 10 records and a bit: records 0..9 are cached, the rest read.
  cache = streaming.DecodedRecordCache(split, 10 * ROW_BYTES + ROW_BYTES - 1)
  for indices in ([5, 1, 5], [1, 200, 5, 7, 12, 7], [7, 1, 5], [300, 2]):
    _assert_batch(cache.read(np.asarray(indices)), arrays, indices)
  assert cache.capacity == 10
  assert cache.num_cached == 4  # 5, 1, 7, 2: each once, duplicates counted once
  assert not cache.complete
  copy = pickle.loads(pickle.dumps(cache))  # a worker's copy starts empty
  assert copy.num_cached == 0
  _assert_batch(copy.read([3, 300]), arrays, [3, 300])
  assert copy.num_cached == 1 and cache.num_cached == 4


@pytest.mark.parametrize("cache_bytes", [0, -1, True, 1.5])
def test_record_cache_rejects_bad_budgets(split, cache_bytes):
  with pytest.raises(ValueError, match="cache_bytes"):
    streaming.DecodedRecordCache(split, cache_bytes)


def test_cache_refuses_a_split_that_is_not_one_row_per_record(data_dir, split):
  # Another collate may pad or pack records, so its rows are not records.
  packing = data.TfdsSplit(NAME, "train", data_dir=data_dir, collate=lambda records: {})
  assert split.rows_are_records and not packing.rows_are_records
  with pytest.raises(ValueError, match="split"):
    streaming.DecodedRecordCache(packing, 64)
  with pytest.raises(ValueError, match="split"):
    data.make_loader(packing, 16, seed=0, cache_bytes=64)
  with pytest.raises(ValueError, match="cache_bytes"):
    data.GrainLoader(split, 16, seed=0, cache_bytes=-1, process_index=0, process_count=1)


def test_make_loader_passes_the_cache_budget(split):
  assert data.make_loader(split, 16, seed=0).cache is None
  loader = data.make_loader(split, 16, seed=0, cache_bytes=3 * ROW_BYTES)
  next(loader)
  assert loader.cache.capacity == 3  # 3 records fit the budget
  loader.close()


def test_config_cache_and_grouping_reach_the_loader_and_training_is_unchanged(
    split, arrays, tmp_path, monkeypatch):
  """``data.cache_mb`` and ``data.batches_per_element`` reach the GrainLoader
  ``train_model`` builds, and the run equals the one fed from memory."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from divlab import train  # pylint: disable=g-import-not-at-top

  model = nn.Dense(1)

  def loss_fn(params, batch, rng):
    del rng
    return jnp.mean((model.apply({"params": params}, batch["x"]) - batch["y"]) ** 2), {}

  def per_example(params, batch):
    return {"se": jnp.sum((model.apply({"params": params}, batch["x"]) - batch["y"]) ** 2, -1)}

  built = []
  make_loader = data.make_loader
  monkeypatch.setattr(data, "make_loader",
                      lambda *a, **k: built.append(make_loader(*a, **k)) or built[-1])
  results = {}
  for name, train_arrays, extra in (("memory", arrays, {}),
                                    ("grain", split, {"cache_mb": 1, "batches_per_element": 3})):
    config = train.run_config(batch_size=32, optimizer={"name": "adam", "learning_rate": 1e-2},
                              num_steps=25, progress=False)  # 25 batches: 2.3 epochs
    config.data.update(extra)
    results[name] = train.train_model(
        workdir=tmp_path / name, config=config, model=model, loss_fn=loss_fn,
        train_arrays=train_arrays, eval_sets={"train": arrays},
        per_example_metrics=per_example, seed=0)
  memory_loader, grain_loader = built
  assert isinstance(memory_loader, data.Loader)
  assert grain_loader.cache.capacity == 353  # 1 MiB holds all 353 records
  assert grain_loader._per_element == 3  # pylint: disable=protected-access
  (grain_params, grain_final), (memory_params, memory_final) = results["grain"], results["memory"]
  for got, want in zip(jax.tree.leaves(grain_params), jax.tree.leaves(memory_params)):
    np.testing.assert_array_equal(got, want)
  assert grain_final == memory_final
