"""ZippedLoader: one batch from each stream, one checkpointable position."""
import numpy as np
import pytest

from divlab import data
from divlab.train import zipped


def _arrays(n, offset):
  return {"x": np.arange(n, dtype=np.float32)[:, None] + offset,
          "y": np.arange(n, dtype=np.int32)}


def test_batches_are_the_streams_own_batches():
  forget, retain = _arrays(6, 0.0), _arrays(20, 100.0)
  loader = zipped.ZippedLoader({"forget": data.Loader(forget, 4, seed=1),
                                "retain": data.Loader(retain, 8, seed=2)})
  reference_f = data.Loader(forget, 4, seed=1)
  reference_r = data.Loader(retain, 8, seed=2)
  for _ in range(5):  # the small stream cycles through several epochs
    batch = next(loader)
    assert set(batch) == {"forget", "retain"}
    np.testing.assert_array_equal(batch["forget"]["x"], next(reference_f)["x"])
    np.testing.assert_array_equal(batch["retain"]["x"], next(reference_r)["x"])


def test_state_round_trip_resumes_every_stream():
  def make():
    return zipped.ZippedLoader({"a": data.Loader(_arrays(6, 0.0), 4, seed=1),
                                "b": data.Loader(_arrays(9, 0.0), 3, seed=2)})
  loader = make()
  for _ in range(3):
    next(loader)
  resumed = make()
  resumed.set_state(loader.get_state())
  for _ in range(3):
    expected, got = next(loader), next(resumed)
    for name in ("a", "b"):
      np.testing.assert_array_equal(got[name]["y"], expected[name]["y"])


def test_rejects_bad_inputs():
  with pytest.raises(ValueError, match="non-empty"):
    zipped.ZippedLoader({})
  with pytest.raises(ValueError, match="get_state"):
    zipped.ZippedLoader({"a": iter([1, 2])})
  loader = zipped.ZippedLoader({"a": data.Loader(_arrays(6, 0.0), 2, seed=0)})
  with pytest.raises(ValueError, match="streams"):
    loader.set_state({"b": {}})
