"""The runner end to end, as a user calls it: `python -m divlab.run ...`."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "classify" / "mnist1d.py")
# Long enough to be killed mid-run, short enough for CI.
LONGER = ["--config.train.num_steps=300", "--config.train.checkpoint_every=40",
          "--config.train.log_every=10", "--config.train.eval_every=100",
          "--config.progress=False"]


def _cmd(workdir, *overrides, arg="smoke"):
  return [sys.executable, "-m", "divlab.run", f"--config={CONFIG}:{arg}",
          f"--workdir={workdir}", *overrides]


def _run(workdir, *overrides, check=True):
  out = subprocess.run(_cmd(workdir, *overrides), capture_output=True, text=True,
                       timeout=600, cwd=ROOT)
  if check and out.returncode:
    raise AssertionError(f"run failed ({out.returncode}):\n{out.stderr[-3000:]}")
  return out


def _outputs(workdir):
  workdir = pathlib.Path(workdir)
  runs = sorted((workdir / "runs").iterdir())
  return (json.loads((workdir / "results.json").read_text()),
          {r.name: (r / "metrics.jsonl").read_text() for r in runs})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("reference")
  _run(workdir, *LONGER)
  return workdir


def test_smoke_run_writes_every_output(reference):
  assert (reference / "config.json").exists()
  results, metrics = _outputs(reference)
  assert [r["model"] for r in results["rows"]] == ["cnn", "mlp"]
  for row in results["rows"]:
    assert 0.0 <= row["test_acc"] <= 1.0 and row["seeds"] == 1
  assert "test_acc" in (reference / "results.md").read_text()
  first = json.loads(metrics["cnn_seed0"].splitlines()[0])
  assert first["step"] == 10 and isinstance(first["train_loss"], float)
  assert list((reference / "runs" / "cnn_seed0" / "tensorboard").iterdir())
  assert (reference / "training_curves.png").read_bytes()[1:4] == b"PNG"


def _wait_for_lines(path, n, proc, timeout=300):
  start = time.time()
  while time.time() - start < timeout:
    if path.exists() and len(path.read_text().splitlines()) >= n:
      return
    if proc.poll() is not None:
      raise AssertionError("run ended before it could be interrupted")
    time.sleep(0.01)
  raise AssertionError("run made no progress")


@pytest.mark.parametrize("lines_before_kill", [3, 17])
def test_sigkill_then_rerun_matches_uninterrupted(tmp_path, reference,
                                                  lines_before_kill):
  proc = subprocess.Popen(_cmd(tmp_path, *LONGER), cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  _wait_for_lines(tmp_path / "runs" / "cnn_seed0" / "metrics.jsonl",
                  lines_before_kill, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  _run(tmp_path, *LONGER)
  assert _outputs(tmp_path) == _outputs(reference)


def test_sigterm_saves_exits_zero_and_resumes(tmp_path, reference):
  proc = subprocess.Popen(_cmd(tmp_path, *LONGER), cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
  _wait_for_lines(tmp_path / "runs" / "cnn_seed0" / "metrics.jsonl", 5, proc)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0
  assert "SIGTERM: saved step" in out
  _run(tmp_path, *LONGER)
  assert _outputs(tmp_path) == _outputs(reference)


def test_changed_config_is_refused_unless_allowed(reference):
  out = _run(reference, *LONGER[:-1], "--config.progress=True", check=False)
  assert out.returncode != 0
  assert "different config" in out.stderr and "progress" in out.stderr
  _run(reference, *LONGER[:-1], "--config.progress=True", "--allow_config_change")


@pytest.mark.parametrize("override,expected", [
    ("--config.train.no_such_key=1", "no_such_key"),
    ("--config.train.num_steps=abc", "num_steps"),
])
def test_bad_override_exits_nonzero_naming_the_key(tmp_path, override, expected):
  out = _run(tmp_path, override, check=False)
  assert out.returncode != 0
  assert expected in out.stderr


def test_unknown_dataset_lists_embedded_names(tmp_path):
  out = _run(tmp_path, "--config.data.name=no_such_dataset", check=False)
  assert out.returncode != 0
  assert "no_such_dataset" in out.stderr and "divlab_mnist1d" in out.stderr
