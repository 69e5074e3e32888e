"""Loader: deterministic order, resumable position, host slices; eval_batches."""
import itertools
import json

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest

from divlab.data import eval_batches
from divlab.data import Loader

NUM_EXAMPLES = 103  # prime, so no batch size divides it


def _arrays(num_examples=NUM_EXAMPLES):
  # Row i holds i in every key, so a batch reveals which examples it holds.
  index = np.arange(num_examples)
  return {"x": np.stack([index, -index], axis=1).astype(np.float32),
          "y": index.astype(np.int32)}


def _take(loader, count):
  return [next(loader) for _ in range(count)]


def _ids(batches):
  return np.concatenate([batch["y"] for batch in batches])


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_order_is_the_documented_permutation_per_epoch():
  loader = Loader(_arrays(), 10, seed=7, process_index=0, process_count=1)
  per_epoch = NUM_EXAMPLES // 10
  ids = _ids(_take(loader, 3 * per_epoch))
  for epoch in range(3):
    expected = np.random.default_rng([7, epoch]).permutation(NUM_EXAMPLES)[:per_epoch * 10]
    np.testing.assert_array_equal(ids[epoch * 100:(epoch + 1) * 100], expected)


def test_batches_keep_rows_aligned_across_keys():
  batch = next(Loader(_arrays(), 16, seed=0, process_index=0, process_count=1))
  assert batch["x"].shape == (16, 2) and batch["x"].dtype == np.float32
  assert batch["y"].shape == (16,) and batch["y"].dtype == np.int32
  np.testing.assert_array_equal(batch["x"][:, 0], batch["y"])
  np.testing.assert_array_equal(batch["x"][:, 1], -batch["y"])


def test_deterministic_and_seed_dependent():
  first = _take(Loader(_arrays(), 8, seed=3, process_count=1, process_index=0), 30)
  again = _take(Loader(_arrays(), 8, seed=3, process_count=1, process_index=0), 30)
  other = _take(Loader(_arrays(), 8, seed=4, process_count=1, process_index=0), 30)
  _assert_same(first, again)
  assert not np.array_equal(_ids(first), _ids(other))


def test_epochs_differ_and_each_covers_distinct_examples():
  loader = Loader(_arrays(), 10, seed=0, process_index=0, process_count=1)
  epochs = [_ids(_take(loader, 10)) for _ in range(3)]
  for ids in epochs:
    assert len(np.unique(ids)) == 100  # 3 of 103 dropped, none repeated
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(np.setdiff1d(np.arange(NUM_EXAMPLES), epochs[0]),
                            np.setdiff1d(np.arange(NUM_EXAMPLES), epochs[1]))


def test_without_shuffle_epochs_are_in_index_order():
  loader = Loader(_arrays(), 25, seed=0, shuffle=False, process_index=0, process_count=1)
  ids = _ids(_take(loader, 8))
  np.testing.assert_array_equal(ids, np.tile(np.arange(100), 2))


def test_keep_remainder_runs_across_epochs_without_dropping():
  loader = Loader(_arrays(), 10, seed=5, drop_remainder=False,
                  process_index=0, process_count=1)
  batches = _take(loader, 103)  # 1030 rows = exactly 10 epochs
  assert all(batch["y"].shape == (10,) for batch in batches)
  ids = _ids(batches)
  for epoch in range(10):
    expected = np.random.default_rng([5, epoch]).permutation(NUM_EXAMPLES)
    np.testing.assert_array_equal(ids[epoch * 103:(epoch + 1) * 103], expected)


def test_keep_remainder_allows_batches_larger_than_the_data():
  loader = Loader(_arrays(7), 10, seed=0, shuffle=False, drop_remainder=False,
                  process_index=0, process_count=1)
  np.testing.assert_array_equal(_ids(_take(loader, 2)), np.arange(20) % 7)


@pytest.mark.parametrize("drop_remainder", [True, False])
@pytest.mark.parametrize("consumed", [0, 1, 9, 10, 11, 25])
def test_state_round_trip_resumes_exactly(consumed, drop_remainder):
  kwargs = dict(seed=11, drop_remainder=drop_remainder, process_index=0, process_count=1)
  uninterrupted = Loader(_arrays(), 10, **kwargs)
  _take(uninterrupted, consumed)
  state = json.loads(json.dumps(uninterrupted.get_state()))
  assert state["batches_served"] == consumed
  resumed = Loader(_arrays(), 10, **kwargs)
  resumed.set_state(state)
  _assert_same(_take(resumed, 15), _take(uninterrupted, 15))


@settings(max_examples=30, deadline=None, derandomize=True)  # same examples every CI run
@given(num_examples=st.integers(1, 60), batch_per_process=st.integers(1, 8),
       process_count=st.sampled_from([1, 2, 4]), drop_remainder=st.booleans(),
       consumed=st.integers(0, 40), seed=st.integers(0, 2**32))
def test_state_round_trip_property(num_examples, batch_per_process, process_count,
                                   drop_remainder, consumed, seed):
  global_batch = batch_per_process * process_count
  if drop_remainder and global_batch > num_examples:
    return
  for index in range(process_count):
    kwargs = dict(seed=seed, drop_remainder=drop_remainder, process_index=index,
                  process_count=process_count)
    uninterrupted = Loader(_arrays(num_examples), global_batch, **kwargs)
    _take(uninterrupted, consumed)
    resumed = Loader(_arrays(num_examples), global_batch, **kwargs)
    resumed.set_state(uninterrupted.get_state())
    _assert_same(_take(resumed, 3), _take(uninterrupted, 3))


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_process_slices_partition_the_global_batch(drop_remainder):
  single = Loader(_arrays(), 24, seed=2, drop_remainder=drop_remainder,
                  process_index=0, process_count=1)
  hosts = [Loader(_arrays(), 24, seed=2, drop_remainder=drop_remainder,
                  process_index=i, process_count=4) for i in range(4)]
  for _ in range(12):  # past several epoch boundaries (4 batches per epoch)
    expected = next(single)
    slices = [next(host) for host in hosts]
    assert all(s["y"].shape == (6,) for s in slices)
    for key in expected:
      np.testing.assert_array_equal(np.concatenate([s[key] for s in slices]), expected[key])


def test_state_transfers_across_process_counts():
  one_host = Loader(_arrays(), 24, seed=2, process_index=0, process_count=1)
  _take(one_host, 5)
  state = one_host.get_state()
  hosts = [Loader(_arrays(), 24, seed=2, process_index=i, process_count=2) for i in range(2)]
  for host in hosts:
    host.set_state(state)
  np.testing.assert_array_equal(np.concatenate([next(h)["y"] for h in hosts]),
                                next(one_host)["y"])


def test_defaults_come_from_jax_processes():
  loader = Loader(_arrays(), 12, seed=0)  # one process in tests
  assert loader.local_batch_size == 12 and next(loader)["y"].shape == (12,)
  assert iter(loader) is loader


@pytest.mark.parametrize("kwargs, match", [
    (dict(global_batch_size=0), "global_batch_size"),
    (dict(global_batch_size=-4), "global_batch_size"),
    (dict(global_batch_size=8.0), "global_batch_size"),
    (dict(global_batch_size=True), "global_batch_size"),
    (dict(global_batch_size=10, process_count=4, process_index=0), "divisible"),
    (dict(global_batch_size=104), "exceeds"),
    (dict(global_batch_size=8, process_count=2, process_index=2), "process_index"),
    (dict(global_batch_size=8, process_count=0, process_index=0), "process_count"),
    (dict(global_batch_size=8, seed=-1), "seed"),
])
def test_bad_arguments_raise(kwargs, match):
  kwargs = {"seed": 0, **kwargs}
  size = kwargs.pop("global_batch_size")
  with pytest.raises(ValueError, match=match):
    Loader(_arrays(), size, **kwargs)


def test_bad_arrays_raise():
  with pytest.raises(ValueError, match="arrays"):
    Loader({}, 4, seed=0)
  with pytest.raises(ValueError, match="same leading"):
    Loader({"x": np.zeros(5), "y": np.zeros(6)}, 4, seed=0)
  with pytest.raises(ValueError, match="no examples"):
    Loader({"x": np.zeros((0, 3))}, 4, seed=0, drop_remainder=False)


def test_set_state_rejects_foreign_or_malformed_states():
  loader = Loader(_arrays(), 10, seed=1)
  other = Loader(_arrays(), 20, seed=1).get_state()
  with pytest.raises(ValueError, match="global_batch_size"):
    loader.set_state(other)
  with pytest.raises(ValueError, match="seed"):
    loader.set_state({**loader.get_state(), "seed": 2})
  with pytest.raises(ValueError, match="state"):
    loader.set_state({"step": 3})
  with pytest.raises(ValueError, match="batches_served"):
    loader.set_state({"batches_served": -1})
  loader.set_state({"batches_served": 4})  # the bare position is enough
  assert loader.get_state()["batches_served"] == 4


@pytest.mark.parametrize("num_examples, batch_size", [(103, 10), (100, 10), (5, 8), (1, 1)])
def test_eval_batches_cover_every_example_once_in_order(num_examples, batch_size):
  arrays = _arrays(num_examples)
  batches = list(eval_batches(arrays, batch_size))
  assert len(batches) == -(-num_examples // batch_size)
  for batch in batches:
    assert set(batch) == {"x", "y", "mask"} and batch["mask"].dtype == np.bool_
    assert all(value.shape[0] == batch_size for value in batch.values())
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == num_examples and mask[:num_examples].all()
  for key in arrays:
    real = np.concatenate([b[key] for b in batches])[mask]
    np.testing.assert_array_equal(real, arrays[key])
  padding = batches[-1]["y"][~batches[-1]["mask"]]
  assert np.all(padding == num_examples - 1)  # repeats of the last example


def test_eval_batches_bad_arguments():
  with pytest.raises(ValueError, match="batch_size"):
    eval_batches(_arrays(), 0)
  with pytest.raises(ValueError, match="mask"):
    eval_batches({**_arrays(), "mask": np.ones(NUM_EXAMPLES, bool)}, 4)
  with pytest.raises(ValueError, match="no examples"):
    eval_batches({"x": np.zeros((0, 2))}, 4)


def test_loader_is_cheap_to_resume_far_into_the_stream():
  loader = Loader(_arrays(), 10, seed=9, process_index=0, process_count=1)
  loader.set_state({"batches_served": 10**9})
  ids = next(loader)["y"]
  epoch, within = divmod(10**9, 10)
  expected = np.random.default_rng([9, epoch]).permutation(NUM_EXAMPLES)
  np.testing.assert_array_equal(ids, expected[within * 10:(within + 1) * 10])
  assert len(list(itertools.islice(loader, 3))) == 3
