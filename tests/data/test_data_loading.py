"""load / info / num_classes / prepare: slicing, real-dataset mapping, errors, offline."""
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds

from divlab import data


class DivlabTestTinyImages(tfds.core.GeneratorBasedBuilder):
  """A stand-in for a real tfds image dataset (uint8 ``image``, ``label``, ``id``)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, description="test images",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=3),
            "id": tfds.features.Text()}),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(12)}

  def _generate_examples(self, count):
    for i in range(count):
      yield i, {"image": np.full((4, 4, 1), 20 * i, np.uint8), "label": i % 3,
                "id": f"example-{i}"}


def test_percent_slices_partition_a_split(embedded_dir):
  full = data.load("divlab_digits", "train", data_dir=embedded_dir)
  head = data.load("divlab_digits", "train[:80%]", data_dir=embedded_dir)
  tail = data.load("divlab_digits", "train[80%:]", data_dir=embedded_dir)
  assert len(head["y"]) == 1150 and len(tail["y"]) == 287  # tfds rounds 1149.6 up
  for key in ("x", "y"):
    np.testing.assert_array_equal(np.concatenate([head[key], tail[key]]), full[key])


def test_index_slices_and_split_sums(embedded_dir):
  train = data.load("divlab_friedman3", "train", data_dir=embedded_dir)
  test = data.load("divlab_friedman3", "test", data_dir=embedded_dir)
  mixed = data.load("divlab_friedman3", "train[:10]+test[-5:]", data_dir=embedded_dir)
  np.testing.assert_array_equal(mixed["x"], np.concatenate([train["x"][:10], test["x"][-5:]]))
  np.testing.assert_array_equal(mixed["y"], np.concatenate([train["y"][:10], test["y"][-5:]]))


def test_info_and_num_classes(embedded_dir):
  assert data.info("divlab_mnist1d", data_dir=embedded_dir) == {
      "name": "divlab_mnist1d", "embedded": True, "task": "classification",
      "x_shape": (40, 1), "y_shape": (), "num_classes": 10,
      "splits": {"train": 4000, "test": 1000}}
  regression = data.info("divlab_noisy_regression", data_dir=embedded_dir)
  assert regression["task"] == "regression" and regression["num_classes"] is None
  assert regression["x_shape"] == (8,) and regression["y_shape"] == (1,)
  assert data.num_classes("divlab_gmm", data_dir=embedded_dir) == 8
  with pytest.raises(ValueError, match="regression"):
    data.num_classes("divlab_friedman1", data_dir=embedded_dir)


def test_info_of_embedded_does_not_prepare(tmp_path):
  assert data.info("divlab_digits", data_dir=tmp_path)["splits"] == {"train": 1437,
                                                                     "test": 360}
  assert not (tmp_path / "divlab_digits").exists()


def _assert_lists_embedded(message):
  for name in data.EMBEDDED:
    assert name in message


def test_unknown_name_raises_with_embedded_list(tmp_path, no_network):
  with pytest.raises(ValueError, match="Unknown dataset") as error:
    data.load("no_such_dataset_xyz", "train", data_dir=tmp_path)
  _assert_lists_embedded(str(error.value))
  assert "tfds build no_such_dataset_xyz" in str(error.value)
  with pytest.raises(ValueError, match="Unknown dataset"):
    data.info("no_such_dataset_xyz", data_dir=tmp_path)


def test_unprepared_real_dataset_raises_offline(tmp_path, no_network):
  with pytest.raises(ValueError, match="not prepared") as error:
    data.load("mnist", "train", data_dir=tmp_path)
  message = str(error.value)
  assert "tfds build mnist --file_format=array_record" in message
  assert "download_and_prepare" in message and str(tmp_path) in message
  _assert_lists_embedded(message)
  # Its description still comes from tfds's code, without any data.
  described = data.info("mnist", data_dir=tmp_path)
  assert described["x_shape"] == (28, 28, 1) and described["num_classes"] == 10
  assert described["splits"] == {} and not described["embedded"]


@pytest.mark.parametrize("name", ["", "huggingface:mnist", None])
def test_malformed_or_network_names_raise(name, tmp_path, no_network):
  with pytest.raises(ValueError, match="name") as error:
    data.load(name, "train", data_dir=tmp_path)
  _assert_lists_embedded(str(error.value))


@pytest.mark.parametrize("split", ["validation", "train[:abc]", "", "train[100%:]"])
def test_bad_split_raises(split, embedded_dir):
  with pytest.raises(ValueError, match="split"):
    data.load("divlab_diabetes", split, data_dir=embedded_dir)


def test_prepared_real_dataset_maps_image_and_label(tmp_path, no_network):
  tfds.builder("divlab_test_tiny_images", data_dir=tmp_path).download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  loaded = data.load("divlab_test_tiny_images", "train[2:6]", data_dir=tmp_path)
  assert set(loaded) == {"x", "y"}
  assert loaded["x"].dtype == np.float32 and loaded["x"].shape == (4, 4, 4, 1)
  np.testing.assert_allclose(loaded["x"][:, 0, 0, 0], np.array([40, 60, 80, 100]) / 255,
                             rtol=1e-6)
  np.testing.assert_array_equal(loaded["y"], np.array([2, 0, 1, 2], np.int32))
  assert loaded["y"].dtype == np.int32
  assert data.info("divlab_test_tiny_images", data_dir=tmp_path) == {
      "name": "divlab_test_tiny_images", "embedded": False, "task": "classification",
      "x_shape": (4, 4, 1), "y_shape": (), "num_classes": 3, "splits": {"train": 12}}


def test_default_data_dir_follows_environment(tmp_path, monkeypatch, no_network):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  loaded = data.load("divlab_diabetes", "test")
  assert loaded["x"].shape == (89, 10)
  assert (tmp_path / "divlab_diabetes" / "1.0.0" / "dataset_info.json").exists()


def test_concurrent_first_use_prepares_once(tmp_path, no_network):
  results, errors = [None] * 3, []

  def worker(slot):
    try:
      results[slot] = data.load("divlab_friedman2", "test", data_dir=tmp_path)
    except Exception as error:  # pylint: disable=broad-except
      errors.append(error)

  threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(3)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert not errors
  for result in results[1:]:
    np.testing.assert_array_equal(result["x"], results[0]["x"])
  leftovers = [p.name for p in (tmp_path / "divlab_friedman2").iterdir()]
  assert leftovers == ["1.0.0"]
