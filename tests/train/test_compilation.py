"""Compile-time accounting and the persistent compilation cache."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from divlab.train import compilation

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_compile_time_is_the_union_of_overlapping_spans():
  timer = compilation.CompileTimer()
  trace, lower, backend = compilation.COMPILE_EVENTS
  # An outer trace [0, 4] containing a nested trace [1, 2]; lowering [4, 5];
  # compiling [5, 9]; a second thread compiling [8, 12]; an unrelated event.
  for event, start, end in [(trace, 0.0, 4.0), (trace, 1.0, 2.0), (lower, 4.0, 5.0),
                            (backend, 5.0, 9.0), (backend, 8.0, 12.0),
                            ("/jax/something/else", 20.0, 30.0)]:
    timer._on_span(event, start, end)  # pylint: disable=protected-access
  assert timer.compile_s == pytest.approx(12.0)
  assert timer.compiles == 2


def test_timer_sees_a_real_compilation_and_not_a_cached_call():
  fn = jax.jit(lambda x: jnp.tanh(x) * 3.0 + x.sum())
  x = jnp.asarray([0.5, -1.0, 2.0])
  with compilation.CompileTimer() as first:
    fn(x).block_until_ready()
  with compilation.CompileTimer() as second:
    fn(x).block_until_ready()
  assert first.compiles == 1 and 0 < first.compile_s <= first.wall_s
  assert second.compiles == 0 and second.compile_s == 0.0
  assert second.run_s == pytest.approx(second.wall_s)


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.delenv(compilation.CACHE_DIR_ENV, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compilation.default_cache_dir() == tmp_path / "xdg" / "divlab" / "jax"
  monkeypatch.setenv(compilation.CACHE_DIR_ENV, str(tmp_path / "mine"))
  assert compilation.default_cache_dir() == tmp_path / "mine"
  assert not compilation.cache_disabled_by_env()
  monkeypatch.setenv(compilation.CACHE_DIR_ENV, "off")
  assert compilation.cache_disabled_by_env()


def test_bad_cache_arguments(tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("x")
  with pytest.raises(ValueError, match="`directory`"):
    compilation.enable_persistent_cache(a_file)
  with pytest.raises(ValueError, match="`min_compile_time_s`"):
    compilation.enable_persistent_cache(tmp_path, min_compile_time_s=-1.0)


def _run_smoke(workdir, cache_dir, *extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  env.pop(compilation.CACHE_DIR_ENV, None)
  out = subprocess.run(
      [sys.executable, "-m", "divlab.run", "--config=configs/classify/mnist1d.py:smoke",
       f"--workdir={workdir}", f"--compilation_cache_dir={cache_dir}", *extra],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=True)
  return out.stdout, json.loads((workdir / "timing.json").read_text())


def test_second_run_loads_its_programs_from_the_cache(tmp_path):
  cache = tmp_path / "cache"
  out1, first = _run_smoke(tmp_path / "a", cache)
  out2, second = _run_smoke(tmp_path / "b", cache)
  assert "time:" in out1 and "compile" in out1
  assert first["cache_hits"] == 0 and first["compilation_cache"] == str(cache)
  # Every program of the second run comes from disk, and the table is the same.
  assert second["cache_hits"] == second["compiles"] > 0
  assert second["compile_s"] < first["compile_s"]
  assert ((tmp_path / "a" / "results.md").read_text()
          == (tmp_path / "b" / "results.md").read_text())
  _, off = _run_smoke(tmp_path / "c", tmp_path / "unused", "--nocompilation_cache")
  assert off["cache_hits"] == 0 and off["compilation_cache"] is None
  assert not (tmp_path / "unused").exists()
