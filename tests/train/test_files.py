"""Atomic replacement of a run's small files (divlab.train.files, metrics.write_*)."""
import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from divlab.train import checkpoint
from divlab.train import files
from divlab.train import metrics


def _leftovers(folder: pathlib.Path) -> list[str]:
  return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("data,expected", [
    ("résumé ± 1\n", "résumé ± 1\n".encode("utf-8")),
    (b"\x00\xffbinary", b"\x00\xffbinary"),
])
def test_write_atomically_writes_exactly_the_data(tmp_path, data, expected):
  target = tmp_path / "deeper" / "folder" / "file.txt"
  files.write_atomically(target, data)
  assert target.read_bytes() == expected
  assert _leftovers(target.parent) == []


def test_write_atomically_replaces_and_keeps_usual_permissions(tmp_path):
  target = tmp_path / "results.md"
  target.write_text("old, longer contents")
  files.write_atomically(target, "new")
  assert target.read_text() == "new"
  umask = os.umask(0)
  os.umask(umask)
  assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failure_inside_the_block_keeps_the_old_file_and_no_temporary(tmp_path):
  target = tmp_path / "summary.json"
  target.write_text('{"old": 1}')
  with pytest.raises(RuntimeError, match="killed"):
    with files.atomic_output(target) as stream:
      stream.write(b'{"new": ')
      raise RuntimeError("killed halfway")
  assert target.read_text() == '{"old": 1}'
  assert _leftovers(tmp_path) == []


_KILLED_WRITER = """
import importlib.util, os, signal, sys
spec = importlib.util.spec_from_file_location("files", sys.argv[1])
files = importlib.util.module_from_spec(spec)
spec.loader.exec_module(files)
with files.atomic_output(sys.argv[2]) as stream:
  stream.write(b'{"half": ')
  stream.flush()
  os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_process_killed_mid_write_leaves_the_old_file_whole(tmp_path):
  # The case that motivated the module: a done marker half written by a
  # killed run would make every later resume fail to parse it.
  target = tmp_path / "summary.json"
  target.write_text('{"old": 1}')
  result = subprocess.run([sys.executable, "-c", _KILLED_WRITER, files.__file__,
                           str(target)], check=False)
  assert result.returncode == -signal.SIGKILL
  assert json.loads(target.read_text()) == {"old": 1}
  # The orphaned temporary is hidden and never mistaken for the target.
  assert [name.startswith(".summary.json.") for name in _leftovers(tmp_path)] == [True]


def test_write_atomically_rejects_other_data(tmp_path):
  with pytest.raises(ValueError, match="`data`"):
    files.write_atomically(tmp_path / "x", 3)
  assert not (tmp_path / "x").exists()


def test_a_directory_is_not_overwritten(tmp_path):
  (tmp_path / "results.md").mkdir()
  for write in (lambda: files.write_atomically(tmp_path / "results.md", "x"),
                lambda: metrics.write_json(tmp_path / "results.md", {}),
                lambda: metrics.write_npz(tmp_path / "results.md", x=np.zeros(1))):
    with pytest.raises(ValueError, match="`path`"):
      write()
  assert (tmp_path / "results.md").is_dir() and _leftovers(tmp_path) == []


def test_write_json_and_write_npz_round_trip(tmp_path):
  metrics.write_json(tmp_path / "a.json", {"x": np.float32(0.5), "v": np.arange(3)})
  assert json.loads((tmp_path / "a.json").read_text()) == {"x": 0.5, "v": [0, 1, 2]}
  arrays = {"train/logits": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
            "ids": np.array([3, 1])}
  metrics.write_npz(tmp_path / "out.npz", **arrays)
  metrics.write_text(tmp_path / "results.md", "| β |\n")
  assert (tmp_path / "results.md").read_text(encoding="utf-8") == "| β |\n"
  with np.load(tmp_path / "out.npz") as loaded:
    assert sorted(loaded.files) == sorted(arrays)
    for name, value in arrays.items():
      np.testing.assert_array_equal(loaded[name], value)
      assert loaded[name].dtype == value.dtype
  assert _leftovers(tmp_path) == []


def test_only_process_0_writes_json_npz_tables_and_trees(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda *args, **kwargs: 1)
  metrics.write_json(tmp_path / "a.json", {"x": 1})
  metrics.write_npz(tmp_path / "b.npz", x=np.zeros(2))
  metrics.write_text(tmp_path / "results.md", "| a |\n")
  metrics.write_results(tmp_path, [{"model": "m", "acc": 0.5}])
  checkpoint.save_tree(tmp_path / "params.msgpack", {"w": np.ones(2)})
  assert list(tmp_path.iterdir()) == []


def test_resumed_metric_writer_rewrites_the_file_without_later_lines(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n"
                          for s in (1, 2, 3, 4)))
  writer = metrics.MetricWriter(tmp_path, resume_step=2, tensorboard=False)
  writer.close()
  assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
  assert _leftovers(tmp_path) == []
