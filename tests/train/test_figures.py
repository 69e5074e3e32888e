"""save_figure: process 0 alone writes, atomically, and every process closes."""
import doctest

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from divlab.train import figures  # pylint: disable=g-import-not-at-top,wrong-import-position

# The eight bytes every PNG file starts with (PNG specification, section 5.2).
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _small_figure(width_inches=1.0):
  fig, ax = plt.subplots(figsize=(width_inches, 1.0))
  ax.plot([0.0, 1.0, 2.0], [1.0, 0.0, 1.0])
  return fig


def _png_size(data):
  # Width and height are the first two big-endian words of the IHDR chunk,
  # which starts right after the signature, the chunk length and its type.
  assert data[12:16] == b"IHDR"
  return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _leftovers(folder):
  return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_writes_a_whole_png_at_the_given_dpi_and_closes(tmp_path):
  fig = _small_figure(width_inches=2.0)
  path = tmp_path / "new" / "folder" / "curve.png"
  figures.save_figure(fig, path, dpi=50)
  data = path.read_bytes()
  assert data.startswith(PNG_SIGNATURE)
  # 2 x 1 inches at 50 dots per inch.
  assert _png_size(data) == (100, 50)
  assert data.endswith(b"IEND\xaeB`\x82")  # the closing chunk: nothing cut off
  assert not plt.fignum_exists(fig.number)
  assert _leftovers(path.parent) == []


def test_other_format_from_suffix(tmp_path):
  fig = _small_figure()
  figures.save_figure(fig, tmp_path / "curve.PDF")
  assert (tmp_path / "curve.PDF").read_bytes().startswith(b"%PDF-")


def test_non_writer_process_writes_nothing_and_still_closes(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda *args, **kwargs: 1)
  fig = _small_figure()
  path = tmp_path / "plots" / "curve.png"
  figures.save_figure(fig, path)
  assert not plt.fignum_exists(fig.number)
  assert not (tmp_path / "plots").exists()  # not even the folder
  assert list(tmp_path.iterdir()) == []


def test_existing_file_is_replaced_whole(tmp_path):
  path = tmp_path / "curve.png"
  path.write_bytes(b"an older, much longer file " * 4000)
  figures.save_figure(_small_figure(), path, dpi=40)
  data = path.read_bytes()
  assert data.startswith(PNG_SIGNATURE)
  assert b"an older" not in data
  assert _png_size(data) == (40, 40)
  assert _leftovers(tmp_path) == []


def test_interrupted_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
  path = tmp_path / "curve.png"
  old = b"the previous figure"
  path.write_bytes(old)
  fig = _small_figure()

  def savefig_killed_midway(target, **kwargs):
    del kwargs
    part = PNG_SIGNATURE + b"\x00\x00\x00\rIHDR"
    if hasattr(target, "write"):
      target.write(part)
      target.flush()
    else:
      with open(target, "wb") as stream:
        stream.write(part)
    # Something was written to the temporary file before the failure.
    assert _leftovers(tmp_path), "expected a temporary file beside the target"
    raise KeyboardInterrupt("killed while writing")

  monkeypatch.setattr(fig, "savefig", savefig_killed_midway)
  with pytest.raises(KeyboardInterrupt, match="killed while writing"):
    figures.save_figure(fig, path)
  assert path.read_bytes() == old
  assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.png"]
  assert not plt.fignum_exists(fig.number)


@pytest.mark.parametrize("name", ["curve", "curve.txt", "curve.png.bak"])
def test_bad_suffix_is_refused_naming_path(tmp_path, name):
  fig = _small_figure()
  with pytest.raises(ValueError, match=r"^path .*" + name.replace(".", r"\.")):
    figures.save_figure(fig, tmp_path / name)
  assert list(tmp_path.iterdir()) == []
  assert not plt.fignum_exists(fig.number)


def test_docstring_example_runs():
  failures, tried = doctest.testmod(figures, raise_on_error=False)
  assert tried > 0 and failures == 0


def test_learning_curves_average_runs_at_their_common_steps(tmp_path):
  run_a = [{"step": 10, "train_loss": 2.0}, {"step": 20, "train_loss": 1.0,
                                             "test_accuracy": 0.5}]
  run_b = [{"step": 10, "train_loss": 4.0}, {"step": 20, "train_loss": 3.0,
                                             "test_accuracy": 0.7},
           {"step": 30, "train_loss": 0.5}]  # step 30: only in run b
  lines = figures.learning_curves(tmp_path / "curves.png",
                                  {"cnn": [run_a, run_b], "mlp": [run_a]},
                                  ("train_loss", "test_accuracy", "never_logged"))
  steps, mean = lines[("cnn", "train_loss")]
  assert steps.tolist() == [10, 20] and mean.tolist() == [3.0, 2.0]
  steps, mean = lines[("cnn", "test_accuracy")]
  assert steps.tolist() == [20] and mean == pytest.approx([0.6])
  assert lines[("mlp", "train_loss")][1].tolist() == [2.0, 1.0]
  assert not any(key == "never_logged" for _, key in lines)
  assert (tmp_path / "curves.png").read_bytes()[:8] == PNG_SIGNATURE
  assert not plt.get_fignums()  # closed after saving


def test_learning_curves_without_any_logged_key_is_a_value_error(tmp_path):
  with pytest.raises(ValueError, match="no history logs any of `keys`"):
    figures.learning_curves(tmp_path / "c.png", {"mlp": [[{"step": 1}]]}, ("train_loss",))
  assert not (tmp_path / "c.png").exists()
