"""Checkpoints with orbax: save, keep-N, verify, resume, fall back past a bad one.

A checkpoint holds the whole :class:`TrainState` (params, optimizer state,
step, RNG, model state) and the data loader's position, so a run restarted from
it continues exactly where the saved run was: killed at any moment, re-running
the same command ends bit-identical to an uninterrupted run.

Orbax writes each step into a temporary directory and renames it when complete,
so a process killed mid-save leaves no half-written checkpoint behind. Orbax
0.12 does not check what it reads back, though: a data file with flipped bytes
(same size) restores silently as wrong numbers. So when a save has finished,
process 0 writes ``divlab_checksums.json`` into the step folder, the SHA-256 of
every file orbax wrote. Before a restore the files are hashed again; a step
whose files differ, are missing or fail to load is reported, moved to
``<checkpoints>_corrupt/<step>`` (kept for inspection, out of the way of the
re-save) and the previous step is used. A step without the checksum file (saved
by an older divlab, or killed in the instant between the save and the checksum)
is restored unverified, with a warning.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
from typing import Any, Optional

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from divlab.train import files
from divlab.train import metrics

PyTree = Any
CHECKSUM_FILE = "divlab_checksums.json"
_ITEM_HANDLERS = {"state": ocp.StandardCheckpointHandler,
                  "data": ocp.JsonCheckpointHandler}


def save_tree(path: str | pathlib.Path, tree: Any) -> None:
  """Writes a pytree of arrays (e.g. a finished stage's params) to one file.

  For results a later stage reads back whole (an SFT model, a trained
  ensemble), not for resuming a run (that is :class:`Checkpointer`). The
  file is msgpack (``flax.serialization``), written atomically by process 0
  only; the tree comes back from :func:`load_tree` as nested dicts of numpy
  arrays.

  Args:
    path: the file to (over)write; its folder is created.
    tree: a pytree of arrays (host or device).
  """
  import flax.serialization  # pylint: disable=g-import-not-at-top
  if not metrics.is_writer():
    return
  files.write_atomically(path, flax.serialization.msgpack_serialize(
      jax.tree.map(np.asarray, jax.device_get(tree))))


def load_tree(path: str | pathlib.Path) -> Any:
  """Reads a tree written by :func:`save_tree` (nested dicts of numpy arrays).

  Raises:
    ValueError: ``path`` is not a file.
  """
  import flax.serialization  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f"`path`={str(path)!r} is not a file written by save_tree.")
  return flax.serialization.msgpack_restore(path.read_bytes())


def file_digests(step_dir: str | pathlib.Path) -> dict[str, str]:
  """SHA-256 of every file under ``step_dir`` (except the checksum file).

  Args:
    step_dir: one checkpoint step folder.

  Returns:
    ``{relative posix path: hex digest}``, sorted by path.
  """
  step_dir = pathlib.Path(step_dir)
  digests = {}
  for path in sorted(step_dir.rglob("*")):
    if path.is_file() and path.name != CHECKSUM_FILE:
      digest = hashlib.sha256()
      with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          digest.update(block)
      digests[path.relative_to(step_dir).as_posix()] = digest.hexdigest()
  return digests


def verify_step(step_dir: str | pathlib.Path) -> Optional[str]:
  """Why a saved step fails its checksums, or None if it passes.

  Args:
    step_dir: one checkpoint step folder.

  Returns:
    None when every file matches the digests written at save time (or when the
    step has no checksum file: unverifiable, see the module docstring);
    otherwise a short reason naming the first offending file.
  """
  step_dir = pathlib.Path(step_dir)
  manifest = step_dir / CHECKSUM_FILE
  if not manifest.exists():
    return None
  try:
    expected = json.loads(manifest.read_text())["sha256"]
  except (ValueError, KeyError, TypeError) as err:
    return f"{CHECKSUM_FILE} is unreadable ({type(err).__name__})"
  actual = file_digests(step_dir)
  for name, digest in expected.items():
    if name not in actual:
      return f"{name} is missing"
    if actual[name] != digest:
      return f"{name} does not match its checksum"
  extra = sorted(set(actual) - set(expected))
  if extra:
    return f"{extra[0]} was not part of the saved checkpoint"
  return None


def _agreed(reason: Optional[str]) -> Optional[str]:
  """A step fails on every process if it fails on any (they must act alike:
  a process restoring alone while another sets the step aside would hang)."""
  if jax.process_count() == 1:
    return reason
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  failed = multihost_utils.process_allgather(np.asarray(reason is not None, np.int32))
  if reason is None and np.any(failed):
    return "it failed its checksums on another process"
  return reason


def set_aside(step_dir: str | pathlib.Path) -> pathlib.Path:
  """Moves a bad step folder ``<dir>/<step>`` to ``<dir>_corrupt/<step>``.

  Kept for inspection rather than deleted; a second bad copy of the same step
  gets a ``.1``, ``.2``, ... suffix. Returns where the folder went.
  """
  step_dir = pathlib.Path(step_dir)
  corrupt_dir = step_dir.parent.parent / f"{step_dir.parent.name}_corrupt"
  corrupt_dir.mkdir(parents=True, exist_ok=True)
  target, suffix = corrupt_dir / step_dir.name, 1
  while target.exists():
    target, suffix = corrupt_dir / f"{step_dir.name}.{suffix}", suffix + 1
  shutil.move(str(step_dir), str(target))
  return target


class Checkpointer:
  """A thin wrapper over ``orbax.checkpoint.CheckpointManager`` with checksums.

  Args:
    directory: where the step folders go (created if missing).
    keep: how many of the most recent checkpoints to keep.
  """

  def __init__(self, directory: str | pathlib.Path, *, keep: int = 2):
    if keep < 1:
      raise ValueError(f"`keep` (train.keep_checkpoints) must be >= 1, got {keep}.")
    self.directory = pathlib.Path(directory).absolute()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True,
            # Synchronous saves: a save has finished when `save` returns, so a
            # SIGKILL right after it cannot lose it (the cost is small for the
            # models here; large models can flip this in a subclass).
            enable_async_checkpointing=False),
        item_handlers={name: handler() for name, handler in _ITEM_HANDLERS.items()})

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def step_dir(self, step: int) -> pathlib.Path:
    return self.directory / str(int(step))

  def save(self, step: int, state: PyTree, data_state: dict,
           *, force: bool = False) -> bool:
    """Saves ``state`` and the JSON-able ``data_state`` under ``step``."""
    if step in self.all_steps():
      return False
    saved = self._manager.save(
        int(step),
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                data=ocp.args.JsonSave(data_state)),
        force=force)
    self._manager.wait_until_finished()
    if saved and jax.process_index() == 0:
      # Written after orbax has renamed the step into place, so it covers
      # exactly the files a restore will read.
      step_dir = self.step_dir(step)
      files.write_atomically(step_dir / CHECKSUM_FILE,
                             json.dumps({"sha256": file_digests(step_dir)}, indent=1))
    return saved

  def _set_aside(self, step: int, reason: str) -> None:
    """Reports a bad step and moves it out of the step folders (process 0)."""
    message = (f"checkpoint at step {step} in {self.directory} is unreadable "
               f"({reason}); falling back to the previous one.")
    logging.warning("%s", message)
    print(f"WARNING: {message}", flush=True)
    if jax.process_index() == 0 and self.step_dir(step).exists():
      set_aside(self.step_dir(step))
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"divlab_checkpoint_set_aside_{step}")
    self._manager.reload()

  def _restore_step(self, step: int, target: PyTree) -> tuple[PyTree, dict]:
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                      data=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["data"])

  def _restore_newest(self, target_fn) -> Optional[tuple[int, PyTree, dict]]:
    for step in reversed(self.all_steps()):
      reason = _agreed(verify_step(self.step_dir(step)))
      if reason is None:
        try:
          state, data_state = self._restore_step(step, target_fn(step))
        except Exception as err:  # pylint: disable=broad-except
          reason = f"{type(err).__name__}: {str(err)[:200]}"
        else:
          if not (self.step_dir(step) / CHECKSUM_FILE).exists():
            logging.warning("checkpoint at step %d in %s has no %s; restored "
                            "unverified.", step, self.directory, CHECKSUM_FILE)
          return step, state, data_state
      self._set_aside(step, reason)
    return None

  def restore_latest(self, abstract_state: PyTree
                     ) -> Optional[tuple[int, PyTree, dict]]:
    """Restores the newest step that passes its checksums and loads.

    Args:
      abstract_state: a state with the target structure, shapes, dtypes and
        shardings (a real state or ``jax.eval_shape`` of one).

    Returns:
      ``(step, state, data_state)``, or None if no step is usable. A step that
      fails is reported, set aside and the one before it tried.
    """
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    return self._restore_newest(lambda step: target)

  def restore_raw_state(self, sharding: Optional[jax.sharding.Sharding] = None
                        ) -> dict:
    """The newest good saved state as nested dicts of arrays, without a target.

    For reading a finished run (e.g. a teacher's params) when the optimizer
    that produced it is unknown. The arrays are placed with ``sharding``
    (default: replicated over all current devices), whatever the number of
    devices or processes that saved them.
    """
    if sharding is None:
      from divlab.train import parallel  # pylint: disable=g-import-not-at-top
      sharding = parallel.replicated(parallel.make_mesh())

    def target_fn(step):
      saved = self._manager.item_metadata(step)["state"]
      saved = getattr(saved, "tree", saved)
      return jax.tree.map(
          lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
          saved)

    restored = self._restore_newest(target_fn)
    if restored is None:
      raise ValueError(f"no usable checkpoint in {self.directory}.")
    return restored[1]

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
