"""Compilation: the persistent cache, and how long a run spends compiling.

Small models spend much of a run compiling: every distinct program (a train
step per loss, an evaluation, a sampler per solver) is traced, lowered and
compiled by XLA once per process. Two things keep that cost down:

* **The persistent compilation cache.** JAX can store compiled programs on
  disk, keyed by the program, the jax/jaxlib version, the backend and the
  compiler flags, and load them in the next process instead of compiling
  again. :func:`enable_persistent_cache` switches it on for every program
  (JAX's default only stores programs that took over a second); ``divlab.run``
  does so by default in :func:`default_cache_dir`. The cache is only an
  accelerator: a hit gives the same executable a fresh compile would, so a
  result never depends on it. Delete the directory to clear it.
* **Measuring it.** :class:`CompileTimer` sums the seconds spent tracing,
  lowering and compiling while it is active (JAX reports each of these through
  ``jax.monitoring``), so a run's summary can print compile time and the rest
  (running) separately.
"""
from __future__ import annotations

import collections
import os
import pathlib
import threading
import time
from typing import Optional

import jax

# Where divlab.run keeps compiled programs unless told otherwise; "off" (or 0,
# false, no, none) disables the cache.
CACHE_DIR_ENV = "DIVLAB_COMPILATION_CACHE"
_OFF = ("", "0", "off", "false", "no", "none")

# The jax.monitoring duration events that make up "compiling" a program.
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
_BACKEND_COMPILE = COMPILE_EVENTS[-1]
_CACHE_HIT = "/jax/compilation_cache/cache_hits"


def default_cache_dir() -> pathlib.Path:
  """``$DIVLAB_COMPILATION_CACHE``, else ``$XDG_CACHE_HOME/divlab/jax``.

  ``XDG_CACHE_HOME`` defaults to ``~/.cache``.
  """
  explicit = os.environ.get(CACHE_DIR_ENV)
  if explicit and explicit.strip().lower() not in _OFF:
    return pathlib.Path(explicit).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base).expanduser() / "divlab" / "jax"


def cache_disabled_by_env() -> bool:
  """Whether ``$DIVLAB_COMPILATION_CACHE`` is set to off/0/false/no/none."""
  value = os.environ.get(CACHE_DIR_ENV)
  return value is not None and value.strip().lower() in _OFF


def enable_persistent_cache(directory: Optional[str | pathlib.Path] = None, *,
                            min_compile_time_s: float = 0.0) -> pathlib.Path:
  """Turns on JAX's persistent compilation cache in ``directory``.

  Call it before the first compilation of the process: JAX reads the setting
  when it first compiles.

  Args:
    directory: where to keep compiled programs (created); default
      :func:`default_cache_dir`.
    min_compile_time_s: store only programs that took at least this long to
      compile. 0 (the default here; JAX's own is 1 s) stores every program:
      the small programs of a CPU run compile in well under a second each, but
      there are many of them.

  Returns:
    The cache directory.

  Raises:
    ValueError: ``directory`` exists and is not a folder, or cannot be created;
      ``min_compile_time_s`` is negative.
  """
  if min_compile_time_s < 0:
    raise ValueError(f"`min_compile_time_s` must be >= 0, got {min_compile_time_s}.")
  directory = pathlib.Path(directory).expanduser() if directory else default_cache_dir()
  if directory.exists() and not directory.is_dir():
    raise ValueError(f"compilation cache `directory`={str(directory)!r} is a file.")
  try:
    directory.mkdir(parents=True, exist_ok=True)
  except OSError as err:
    raise ValueError(f"compilation cache `directory`={str(directory)!r} cannot be "
                     f"created ({err}).") from err
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  return directory


def disable_persistent_cache() -> None:
  """Turns the persistent compilation cache off for this process."""
  jax.config.update("jax_enable_compilation_cache", False)


class CompileTimer:
  """Measures the time spent compiling while active (a context manager).

  Counts every thread of the process. ``compile_s`` is the length of the union
  of the tracing, lowering and XLA-compiling intervals JAX reports (a union,
  because tracing a function traces the jitted functions it calls inside its
  own interval); a program loaded from the persistent cache counts only its
  (short) load. ``run_s = wall_s - compile_s`` is everything else: running
  programs, data, checkpoints, Python.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> with CompileTimer() as timer:
    ...   _ = jax.jit(lambda x: x * 2.0)(jnp.ones(3)).block_until_ready()
    >>> timer.compiles >= 1 and timer.compile_s > 0
    True
  """

  def __init__(self):
    self.compiles = 0
    # Compiled programs by the name of the function jitted ("train_steps",
    # "<lambda>", ...), to see which program compiled how often.
    self.programs: collections.Counter = collections.Counter()
    self.cache_hits = 0
    self.wall_s = 0.0
    self._spans: list[tuple[float, float]] = []
    self._start = None
    self._lock = threading.Lock()

  def _on_span(self, event: str, start: float, end: float, **kwargs) -> None:
    if event in COMPILE_EVENTS:
      with self._lock:
        self._spans.append((float(start), float(end)))
        if event == _BACKEND_COMPILE:
          self.compiles += 1
          self.programs[str(kwargs.get("fun_name", "?"))] += 1

  def _on_event(self, event: str, **kwargs) -> None:
    del kwargs
    if event == _CACHE_HIT:
      with self._lock:
        self.cache_hits += 1

  def __enter__(self) -> "CompileTimer":
    self._start = time.perf_counter()
    jax.monitoring.register_event_time_span_listener(self._on_span)
    jax.monitoring.register_event_listener(self._on_event)
    return self

  def __exit__(self, *exc_info) -> None:
    self.wall_s = time.perf_counter() - self._start
    jax.monitoring.unregister_event_time_span_listener(self._on_span)
    jax.monitoring.unregister_event_listener(self._on_event)

  @property
  def compile_s(self) -> float:
    """Seconds in which some thread was tracing, lowering or compiling."""
    with self._lock:
      spans = sorted(self._spans)
    total, reach = 0.0, float("-inf")
    for start, end in spans:
      if end > reach:
        total += end - max(start, reach)
        reach = end
    return total

  @property
  def run_s(self) -> float:
    """Wall time not spent compiling."""
    return max(0.0, self.wall_s - self.compile_s)

  def summary(self) -> dict:
    """``{"wall_s", "compile_s", "run_s", "compiles", "cache_hits"}``."""
    return {"wall_s": round(self.wall_s, 3), "compile_s": round(self.compile_s, 3),
            "run_s": round(self.run_s, 3), "compiles": self.compiles,
            "cache_hits": self.cache_hits}
