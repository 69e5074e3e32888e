"""Two processes x two CPU devices, as on a pod, against one process x four.

The processes talk through jax.distributed on localhost with gloo CPU
collectives. The run is the classification experiment on one small MLP; what
must hold: the same files with the same contents as the single-process run
(process 0 alone writes them; numbers equal to float32 round-off), a kill -9 of both processes resumes to the same
end, and per-process workdirs are refused instead of hanging.
"""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY_CONFIG = '''
from configs.classify import mnist1d


def get_config(arg=""):
  config = mnist1d.get_config("smoke")
  config.models = {"mlp": {"arch": "mlp", "hidden": (16,)}}
  config.train.num_steps = 200
  config.train.log_every = 10
  config.train.eval_every = 100
  config.train.checkpoint_every = 40
  config.progress = False
  return config
'''
# Files whose names or number depend on the process layout, not on the run.
LAYOUT_DEPENDENT = ("checkpoints", "tensorboard", "timing.json")


def _free_port():
  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    return sock.getsockname()[1]


def _env(devices):
  env = {k: v for k, v in os.environ.items()
         if k not in ("JAX_COORDINATOR_ADDRESS", "DIVLAB_NUM_PROCESSES",
                      "DIVLAB_PROCESS_ID", "SLURM_NTASKS")}
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu")
  return env


def _launch(config, workdirs, processes, devices, *extra):
  """Starts one `python -m divlab.run` per process; returns the Popen objects."""
  port = _free_port()
  procs = []
  for index, workdir in enumerate(workdirs):
    args = [sys.executable, "-m", "divlab.run", f"--config={config}",
            f"--workdir={workdir}", *extra]
    if processes > 1:
      args += [f"--coordinator_address=localhost:{port}",
               f"--num_processes={processes}", f"--process_id={index}"]
    procs.append(subprocess.Popen(args, cwd=ROOT, env=_env(devices), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  return procs


def _finish(procs, timeout=240):
  outputs = []
  for proc in procs:
    out, err = proc.communicate(timeout=timeout)
    outputs.append((proc.returncode, out, err))
  return outputs


def _run_files(workdir):
  """{relative path: path} of every file that does not depend on the layout."""
  workdir = pathlib.Path(workdir)
  return {str(p.relative_to(workdir)): p for p in workdir.rglob("*")
          if p.is_file() and not set(LAYOUT_DEPENDENT) & set(p.relative_to(workdir).parts)}


def _json_values(path):
  """The JSON document(s) of a .json or .jsonl file."""
  text = path.read_text()
  if path.suffix == ".jsonl":
    return [json.loads(line) for line in text.splitlines()]
  return json.loads(text)


def _assert_close(actual, expected, where):
  """Same structure and strings; numbers equal to float32 round-off.

  A cross-process all-reduce (gloo) may add the devices' partial sums in
  another order than XLA does within one process, so the last bits of a
  float32 reduction can differ; everything else must be identical.
  """
  if isinstance(expected, dict):
    assert isinstance(actual, dict) and sorted(actual) == sorted(expected), where
    for key in expected:
      _assert_close(actual[key], expected[key], f"{where}.{key}")
  elif isinstance(expected, list):
    assert isinstance(actual, list) and len(actual) == len(expected), where
    for i, (a, e) in enumerate(zip(actual, expected)):
      _assert_close(a, e, f"{where}[{i}]")
  elif isinstance(expected, float):
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6, err_msg=where)
  else:
    assert actual == expected, where


@pytest.fixture(scope="module")
def config(tmp_path_factory):
  path = tmp_path_factory.mktemp("config") / "tiny.py"
  path.write_text(TINY_CONFIG)
  return path


@pytest.fixture(scope="module")
def single_process(config, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("one_by_four")
  ((code, _, err),) = _finish(_launch(config, [workdir], 1, 4))
  assert code == 0, err[-3000:]
  return workdir


def test_two_processes_killed_and_resumed_match_one_process(config, single_process,
                                                            tmp_path):
  workdir = tmp_path / "two_by_two"
  metrics = workdir / "runs" / "mlp_seed0" / "metrics.jsonl"
  procs = _launch(config, [workdir, workdir], 2, 2)
  start = time.time()
  # Past the checkpoint at step 40 (the 5th line is step 50), before the end.
  while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
    assert all(p.poll() is None for p in procs), _finish(procs)
    assert time.time() - start < 180, "the two processes made no progress"
    time.sleep(0.01)
  for proc in procs:
    proc.send_signal(signal.SIGKILL)
  for proc in procs:
    proc.wait()
  assert not (workdir / "results.json").exists()
  outputs = _finish(_launch(config, [workdir, workdir], 2, 2))
  for code, _, err in outputs:
    assert code == 0, err[-3000:]
  # One writer: the same files as the single-process run, line for line (a
  # second writer would have duplicated every metrics.jsonl line).
  files, expected = _run_files(workdir), _run_files(single_process)
  assert sorted(files) == sorted(expected)
  for name, path in expected.items():
    if path.suffix in (".json", ".jsonl"):
      _assert_close(_json_values(files[name]), _json_values(path), name)
    elif path.suffix == ".png":
      # Drawn from the metrics compared above as close, not bit-equal, so
      # the pixels may differ; the image must still be a whole PNG.
      assert files[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    elif path.suffix != ".md":  # the Markdown rounds the same numbers
      assert files[name].read_bytes() == path.read_bytes(), name
  # Each of the two launches wrote one TensorBoard file, from process 0 only.
  events = list((workdir / "runs" / "mlp_seed0" / "tensorboard").iterdir())
  assert len(events) == 2
  assert (workdir / "runs" / "mlp_seed0" / "checkpoints" / "200").is_dir()


def test_per_process_workdirs_are_refused(config, tmp_path):
  workdirs = [tmp_path / "host0", tmp_path / "host1"]
  outputs = _finish(_launch(config, workdirs, 2, 2, "--shared_workdir_timeout=1"))
  for code, _, err in outputs:
    assert code == 2, err[-3000:]
    assert "is not shared by all processes: process(es) [1] cannot see" in err
  assert not (workdirs[0] / "runs").exists()
  assert not workdirs[1].exists()
