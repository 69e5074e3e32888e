"""The one runner: ``python -m divlab.run --config=configs/<family>/<name>.py[:arg] --workdir=DIR``.

Overrides: ``--config.train.num_steps=100`` (an unknown key or a value of the
wrong type exits non-zero naming the key). The workdir is the unit of a run:
re-running the same command resumes it; re-running with a different config is
refused unless ``--allow_config_change`` is given. Also installed as the
console command ``divlab-run``.
"""
from __future__ import annotations

import importlib
import json
import pathlib
import sys

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

# Keys every trainer reads; a config without them is a mistake worth naming.
REQUIRED_KEYS = ("experiment", "seed", "data.name", "data.batch_size",
                 "train.num_steps", "train.log_every", "train.eval_every",
                 "train.checkpoint_every", "train.keep_checkpoints")


class UsageError(ValueError):
  """A problem with the command line or the config, reported without a traceback."""


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UsageError naming any missing shared key."""
  for key in REQUIRED_KEYS:
    node = config
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise UsageError(f"config is missing the required key `{key}`.")
      node = node[part]


def config_to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def check_workdir_config(workdir: pathlib.Path, config: ml_collections.ConfigDict,
                         allow_change: bool) -> None:
  """Refuses a workdir whose saved config differs, unless allowed; saves it."""
  path = workdir / "config.json"
  new = json.loads(config_to_json(config))
  if path.exists():
    old = json.loads(path.read_text())
    if old != new and not allow_change:
      diffs = sorted(_diff_keys(old, new))
      raise UsageError(
          f"{workdir} holds a run with a different config (keys differing: "
          f"{', '.join(diffs[:10])}). Use a new --workdir, or pass "
          "--allow_config_change to resume it with the new config.")
  path.write_text(config_to_json(config))


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


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
        allow_config_change: bool = False):
  """Runs ``experiments.<config.experiment>.run(config, workdir)``."""
  check_config(config)
  import jax  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir)
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    check_workdir_config(workdir, config, allow_config_change)
  try:
    family = importlib.import_module(f"experiments.{config.experiment}")
  except ModuleNotFoundError as err:
    raise UsageError(f"`experiment`={config.experiment!r} names no package "
                     f"experiments/{config.experiment}/ ({err}).") from err
  return family.run(config, workdir)


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required.")
  if not flags.FLAGS["verbosity"].present:
    # orbax logs every save at INFO; keep the console to progress and results.
    logging.set_verbosity(logging.WARNING)
  from divlab.train import parallel  # pylint: disable=g-import-not-at-top
  parallel.maybe_initialize_distributed(
      {"auto": None, "yes": True, "no": False}[_DISTRIBUTED.value])
  try:
    run(_CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  except (UsageError, ValueError, FloatingPointError) as err:
    logging.error("%s", err)
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2 if isinstance(err, ValueError) else 1)


def main():
  """Console entry point ``divlab-run``."""
  flags.mark_flag_as_required("config")
  app.run(_main)


if __name__ == "__main__":
  main()
