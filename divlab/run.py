"""The one runner: ``python -m divlab.run --config=configs/<family>/<name>.py[:arg] --workdir=DIR``.

Overrides: ``--config.train.num_steps=100``. The workdir is the unit of a run:

* the config is validated (shared keys and their ranges, the experiment
  package) before anything is written; ``config.json`` is saved next, and a
  run refused for a bad value before its first checkpoint leaves none behind;
* re-running the same command resumes the run; a different config is refused
  unless ``--allow_config_change`` is given. On an unfinished run that resumes
  with the new config (a larger ``train.num_steps`` trains on); on a finished
  run a changed ``train.num_steps`` is refused (its models and tables are final:
  use a new workdir), and other changes only rebuild the tables;
* a finished run (``finished.json``) re-run says "already finished; rebuilt
  results from its checkpoints". Its checkpoints are verified first: a sub-run
  whose newest checkpoint is corrupt is reopened (its ``final_metrics.json`` /
  ``summary.json`` marker removed) and trains again from the previous one;
* a table with NaN or infinite metrics is flagged in ``results.md`` and the
  command exits with status 3;
* compiled programs are kept in a persistent cache (``~/.cache/divlab/jax``;
  ``--compilation_cache_dir`` moves it, ``--nocompilation_cache`` or
  ``DIVLAB_COMPILATION_CACHE=off`` turns it off), so a second run of a config
  skips compiling; the run ends with one line giving its compile time and the
  rest (``timing.json`` in the workdir holds the same figures).

Command-line mistakes (an empty ``--workdir``, a workdir that is a file or not
writable, a missing config file, an unknown override key) exit with status 2
and one line naming the path or key; a loss that turns NaN exits with status 1
keeping the last good checkpoint.

Multi-process (a pod, or several processes on one machine): every process runs
the same command with ``--coordinator_address=HOST:PORT --num_processes=N
--process_id=I`` (or ``JAX_COORDINATOR_ADDRESS``, ``DIVLAB_NUM_PROCESSES``,
``DIVLAB_PROCESS_ID``; SLURM, Open MPI and TPU pods are detected without
them). The workdir must be shared: process 0 writes a marker every process must
see before training starts. Only process 0 writes the per-run files.

Also installed as the console command ``divlab-run``.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import os
import pathlib
import sys
from typing import Optional

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file defining get_config(arg), with "
    "an optional ':arg' suffix (e.g. ':smoke').", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run (created).")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "Resume a workdir even though its saved config.json differs.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "yes", "no"],
    "Call jax.distributed.initialize(): 'auto' detects a multi-host job.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0's coordinator (multi-process; default "
    "$JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes of the job (default "
    "$DIVLAB_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index (default $DIVLAB_PROCESS_ID).")
_SHARED_TIMEOUT = flags.DEFINE_float(
    "shared_workdir_timeout", 30.0,
    "Multi-process: seconds every process waits to see the marker process 0 "
    "writes into the workdir before the run is refused as not shared.")

_COMPILATION_CACHE = flags.DEFINE_bool(
    "compilation_cache", True,
    "Keep compiled programs on disk and reuse them in later runs (JAX's "
    "persistent compilation cache), so that a second run of a config skips "
    "compiling. --nocompilation_cache (or DIVLAB_COMPILATION_CACHE=off) turns it off.")
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir", None,
    "Where the compilation cache lives (default $DIVLAB_COMPILATION_CACHE, else "
    "$XDG_CACHE_HOME/divlab/jax, i.e. ~/.cache/divlab/jax). Delete it to clear it.")

_DETERMINISTIC_GPU = flags.DEFINE_bool(
    "deterministic_gpu", True,
    "On GPUs, ask XLA for deterministic kernels (--xla_gpu_deterministic_ops=true) "
    "so that a killed run resumes bit-identically: a new process may otherwise "
    "autotune different convolution algorithms, which round differently. Costs "
    "some speed; --nodeterministic_gpu turns it off. No effect on CPUs and TPUs.")

# Keys every trainer reads, with the smallest value each may take (0 steps:
# experiments without training, such as the exact diffusion mixtures).
REQUIRED_KEYS = {"experiment": None, "seed": 0, "data.name": None,
                 "data.batch_size": 1, "train.num_steps": 0, "train.log_every": 1,
                 "train.eval_every": 0, "train.checkpoint_every": 1,
                 "train.keep_checkpoints": 1}
FINISHED_FILE = "finished.json"
# Files an experiment writes into a sub-run's folder once that sub-run is done.
SUBRUN_DONE_FILES = ("final_metrics.json", "summary.json")
EXIT_USAGE, EXIT_FAILED, EXIT_NON_FINITE = 2, 1, 3


class UsageError(ValueError):
  """A problem with the command line or the config, reported without a traceback."""


class NonFiniteResultsError(RuntimeError):
  """The run finished but its tables hold NaN or infinite metrics."""


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError naming a missing shared key or an out-of-range value."""
  if not isinstance(config, ml_collections.ConfigDict):
    raise UsageError(f"the config is not a ConfigDict (got {type(config).__name__}).")
  for key, minimum in REQUIRED_KEYS.items():
    node = config
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise UsageError(f"config is missing the required key `{key}`.")
      node = node[part]
    if minimum is not None:
      if isinstance(node, bool) or not isinstance(node, int):
        raise UsageError(f"`{key}` must be an integer, got {node!r}.")
      if node < minimum:
        raise UsageError(f"`{key}` must be >= {minimum}, got {node}.")


def config_to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def config_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every dotted key of ``config`` (nested dicts included), in order."""
  keys = []
  for name in config.keys():
    value = config[name]
    keys.append(prefix + name)
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      keys += config_keys(ml_collections.ConfigDict(value) if isinstance(value, dict)
                          else value, f"{prefix}{name}.")
  return keys


def closest_key(key: str, valid: list[str]) -> str:
  """The valid key most similar to ``key`` (difflib ratio)."""
  return max(valid, key=lambda k: (difflib.SequenceMatcher(None, key, k).ratio(), -len(k)))


def check_workdir_path(workdir: Optional[str | pathlib.Path]) -> pathlib.Path:
  """Refuses an empty workdir or one that is an existing file."""
  if workdir is None or not str(workdir).strip():
    raise UsageError("--workdir is empty: give the run's directory, e.g. "
                     "--workdir=workdirs/my_run.")
  path = pathlib.Path(workdir)
  if path.exists() and not path.is_dir():
    raise UsageError(f"--workdir={path} is an existing file, not a directory.")
  return path


def _make_writable_workdir(workdir: pathlib.Path) -> None:
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / ".write_test"
    probe.write_text("")
    probe.unlink()
  except OSError as err:
    raise UsageError(f"--workdir={workdir} is not writable ({err.strerror or err})."
                     ) from err


def _diff_keys(a, b, prefix=""):
  keys = set(a) | set(b) if isinstance(a, dict) and isinstance(b, dict) else set()
  if not keys:
    return [prefix.rstrip(".") or "<root>"] if a != b else []
  out = []
  for k in keys:
    if isinstance(a, dict) and isinstance(b, dict) and isinstance(a.get(k), dict) \
        and isinstance(b.get(k), dict):
      out += _diff_keys(a[k], b[k], f"{prefix}{k}.")
    elif a.get(k) != b.get(k):
      out.append(f"{prefix}{k}")
  return out


def check_workdir_config(workdir: pathlib.Path, config: ml_collections.ConfigDict,
                         allow_change: bool) -> list[str]:
  """Refuses a workdir whose saved config differs, unless allowed.

  Returns:
    The keys that differ from the saved config (empty for a new workdir).
  """
  path = workdir / "config.json"
  if not path.exists():
    return []
  old = json.loads(path.read_text())
  new = json.loads(config_to_json(config))
  diffs = sorted(_diff_keys(old, new))
  if diffs and not allow_change:
    raise UsageError(
        f"{workdir} holds a run with a different config (keys differing: "
        f"{', '.join(diffs[:10])}). Use a new --workdir, or pass "
        "--allow_config_change to resume it with the new config.")
  if diffs and (workdir / FINISHED_FILE).exists() and "train.num_steps" in diffs:
    raise UsageError(
        f"{workdir} already finished with train.num_steps="
        f"{old.get('train', {}).get('num_steps')}; --allow_config_change does not "
        "extend a finished run (its models and tables are final): use a new --workdir.")
  return diffs


def reopen_corrupt_subruns(workdir: pathlib.Path) -> list[str]:
  """Sets aside corrupt checkpoints under ``workdir`` and reopens their sub-runs.

  Every step of every ``checkpoints/`` folder is checked against its
  checksums; a failing step is reported and moved to ``checkpoints_corrupt/``.
  When it was a sub-run's newest step, the sub-run's done marker
  (``final_metrics.json`` or ``summary.json``, in its folder or a parent below
  ``workdir``) is removed, so the experiment trains it again from the previous
  checkpoint and ends where the uncorrupted run ended.

  Returns:
    The sub-run folders reopened, relative to ``workdir``.
  """
  from divlab.train import checkpoint  # pylint: disable=g-import-not-at-top
  reopened = []
  for folder in sorted(workdir.rglob("checkpoints")):
    steps = sorted(int(p.name) for p in folder.iterdir()
                   if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []
    newest_bad = False
    for step in steps:
      reason = checkpoint.verify_step(folder / str(step))
      if reason is None:
        continue
      print(f"WARNING: checkpoint at step {step} in {folder} is corrupt ({reason}); "
            "set aside, the previous one is used.", flush=True)
      checkpoint.set_aside(folder / str(step))
      newest_bad = newest_bad or step == steps[-1]
    if newest_bad:
      run_dir = folder.parent
      for parent in [run_dir, *run_dir.parents]:
        if parent == workdir or workdir not in parent.parents:
          break
        for name in SUBRUN_DONE_FILES:
          (parent / name).unlink(missing_ok=True)
      reopened.append(str(run_dir.relative_to(workdir)))
  return reopened


def _has_checkpoints(workdir: pathlib.Path) -> bool:
  return any(p.is_dir() and p.name.isdigit()
             for folder in workdir.rglob("checkpoints") if folder.is_dir()
             for p in folder.iterdir())


def _agree(error: Optional[BaseException]) -> None:
  """Raises ``error`` on every process if process 0 (the checker) hit one."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    failed = int(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
    if failed and error is None:
      raise UsageError("process 0 refused the run; see its error message.")
  if error is not None:
    raise error


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
        allow_config_change: bool = False, shared_workdir_timeout_s: float = 30.0):
  """Runs ``experiments.<config.experiment>.run(config, workdir)``.

  Args:
    config: the experiment config.
    workdir: the run directory (created).
    allow_config_change: resume a workdir whose ``config.json`` differs.
    shared_workdir_timeout_s: multi-process only: how long each process waits
      to see the marker process 0 writes into ``workdir``.

  Returns:
    Whatever the experiment's ``run`` returns (its table rows).

  Raises:
    UsageError: a bad config or workdir, before anything is written.
    NonFiniteResultsError: a table holds NaN/inf metrics (it is written and
      flagged).
  """
  check_config(config)
  workdir = check_workdir_path(workdir)
  try:
    family = importlib.import_module(f"experiments.{config.experiment}")
  except ModuleNotFoundError as err:
    raise UsageError(f"`experiment`={config.experiment!r} names no package "
                     f"experiments/{config.experiment}/ ({err}).") from err
  import jax  # pylint: disable=g-import-not-at-top
  from divlab.train import files  # pylint: disable=g-import-not-at-top
  from divlab.train import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from divlab.train import parallel  # pylint: disable=g-import-not-at-top
  is_main = jax.process_index() == 0
  error, fresh, diffs, reopened = None, False, [], []
  was_finished = (workdir / FINISHED_FILE).exists()
  if is_main:
    try:
      _make_writable_workdir(workdir)
      diffs = check_workdir_config(workdir, config, allow_config_change)
      fresh = not (workdir / "config.json").exists()
      # Written only now that the config, the experiment and the workdir have
      # passed their checks.
      files.write_atomically(workdir / "config.json", config_to_json(config))
      if not fresh:
        reopened = reopen_corrupt_subruns(workdir)
    except UsageError as err:
      error = err
  _agree(error)
  parallel.check_shared_directory(workdir, timeout_s=shared_workdir_timeout_s)
  try:
    rows = family.run(config, workdir)
  except ValueError:
    if is_main and fresh and not _has_checkpoints(workdir):
      # Refused before it trained anything: the corrected command must not
      # meet this config as a "different config" of an existing run.
      (workdir / "config.json").unlink(missing_ok=True)
    raise
  bad = metrics_lib.find_non_finite_results(workdir)
  if bad:
    if is_main:
      (workdir / FINISHED_FILE).unlink(missing_ok=True)
    raise NonFiniteResultsError(
        "non-finite metrics in " + "; ".join(
            f"{workdir / name}: {', '.join(cells[:5])}" for name, cells in bad.items())
        + ". The run diverged or read a bad state; these are not results.")
  if is_main:
    if was_finished and not reopened:
      note = f" (changed keys {', '.join(diffs)} do not retrain it)" if diffs else ""
      print(f"{workdir} already finished; rebuilt results from its checkpoints{note}.",
            flush=True)
    elif reopened:
      print(f"{workdir}: retrained {', '.join(reopened)} from the checkpoint before "
            "the corrupt one.", flush=True)
    metrics_lib.write_json(workdir / FINISHED_FILE, {"finished": True})
  return rows


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with one-line errors instead of tracebacks."""
  # Flags keep their values between parses in one process (tests call main()
  # several times); start every parse from the defaults.
  flags.FLAGS.unparse_flags()
  for name in [n for n in flags.FLAGS if n.startswith("config.")]:
    delattr(flags.FLAGS, name)  # per-key flags config_flags defined last time
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as err:
    # An override of a key the config does not have.
    config = _load_config_quietly(argv)
    valid = config_keys(config) if isinstance(config, ml_collections.ConfigDict) else []
    for arg in argv[1:]:
      if arg.startswith("--config.") and "=" in arg:
        key = arg[len("--config."):].split("=", 1)[0]
        if key not in valid:
          hint = f"; the closest valid key is `{closest_key(key, valid)}`" if valid else ""
          _exit_usage(f"unknown config key `{key}` in {arg}{hint}.")
    _exit_usage(f"bad config override ({type(err).__name__}: {err}).")
  except flags.Error as err:
    _exit_usage(str(err))
  except IOError as err:
    # An override applied to a config file that failed to load.
    filename, _ = _config_argument(argv)
    if filename and not os.path.isfile(filename):
      _exit_usage(f"--config={filename}: no such config file.")
    _exit_usage(str(err).splitlines()[0])
  raise AssertionError("unreachable")


def _config_argument(argv: list[str]) -> tuple[Optional[str], Optional[str]]:
  """``(file, arg)`` of the last ``--config=file[:arg]`` in ``argv``."""
  filename = arg = None
  for item in argv[1:]:
    if item.startswith("--config="):
      filename, _, arg = item[len("--config="):].partition(":")
  return filename, arg


def _load_config_quietly(argv: list[str]) -> Optional[ml_collections.ConfigDict]:
  """The config named in ``argv`` without overrides, or None if it fails."""
  filename, arg = _config_argument(argv)
  if not filename or not os.path.isfile(filename):
    return None
  try:
    spec = importlib.util.spec_from_file_location("_divlab_config_for_hints", filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
  except Exception:  # pylint: disable=broad-except
    return None


def _exit_usage(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(EXIT_USAGE)


def _check_config_file() -> None:
  filename = config_flags.get_config_filename(flags.FLAGS["config"]).split(":", 1)[0]
  if not os.path.isfile(filename):
    raise UsageError(f"--config={filename}: no such config file.")


def request_deterministic_gpu() -> None:
  """Adds --xla_gpu_deterministic_ops=true to XLA_FLAGS (before any backend starts).

  Bit-identical resume needs every process to run the same kernels. On a GPU,
  XLA autotunes convolution and matmul algorithms per process and some reduce
  with atomics; measured on an H200, a CNN run killed and resumed ended with a
  different test loss without this flag. The flag is XLA's switch for
  run-to-run determinism (deterministic algorithms and reductions). A value the
  user already set in XLA_FLAGS wins.
  """
  current = os.environ.get("XLA_FLAGS", "")
  if "xla_gpu_deterministic_ops" not in current:
    os.environ["XLA_FLAGS"] = (current + " --xla_gpu_deterministic_ops=true").strip()


def report_timing(timer, workdir: pathlib.Path, cache: Optional[pathlib.Path]) -> None:
  """Prints the run's compile and run time and writes them to ``timing.json``."""
  from divlab.train import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  summary = timer.summary()
  summary["compilation_cache"] = str(cache) if cache else None
  hits = f", {timer.cache_hits} loaded from the cache" if timer.cache_hits else ""
  print(f"time: {timer.wall_s:.1f} s = compile {timer.compile_s:.1f} s "
        f"({timer.compiles} programs{hits}) + run {timer.run_s:.1f} s", flush=True)
  metrics_lib.write_json(workdir / "timing.json", summary, indent=2)


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    # orbax logs every save at INFO; keep the console to progress and results.
    logging.set_verbosity(logging.WARNING)
  if _DETERMINISTIC_GPU.value:
    request_deterministic_gpu()
  try:
    _check_config_file()
    check_workdir_path(_WORKDIR.value)
    from divlab.train import parallel  # pylint: disable=g-import-not-at-top
    parallel.maybe_initialize_distributed(
        {"auto": None, "yes": True, "no": False}[_DISTRIBUTED.value],
        coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value)
    from divlab.train import compilation  # pylint: disable=g-import-not-at-top
    cache = None
    if _COMPILATION_CACHE.value and (_COMPILATION_CACHE_DIR.value
                                     or not compilation.cache_disabled_by_env()):
      cache = compilation.enable_persistent_cache(_COMPILATION_CACHE_DIR.value)
    with compilation.CompileTimer() as timer:
      run(_CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value,
          shared_workdir_timeout_s=_SHARED_TIMEOUT.value)
    report_timing(timer, pathlib.Path(_WORKDIR.value), cache)
  except (UsageError, ValueError, FloatingPointError, NonFiniteResultsError) as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(EXIT_USAGE if isinstance(err, ValueError)
             else EXIT_NON_FINITE if isinstance(err, NonFiniteResultsError)
             else EXIT_FAILED)


def main(argv: Optional[list[str]] = None):
  """Console entry point ``divlab-run``; ``argv`` defaults to ``sys.argv``."""
  flags.mark_flag_as_required("config")
  app.run(_main, argv=argv, flags_parser=_parse_flags)


if __name__ == "__main__":
  main()
