"""Checkpoints with orbax: save, keep-N, resume, fall back past a broken one.

A checkpoint holds the whole :class:`TrainState` (params, optimizer state,
step, RNG, model state) and the data loader's position, so a run restarted from
it continues exactly where the saved run was: killed at any moment, re-running
the same command ends bit-identical to an uninterrupted run.

Orbax writes each step into a temporary directory and renames it when complete,
so a process killed mid-save leaves no half-written checkpoint behind; one that
is broken anyway (disk full, files removed) is skipped with a warning and the
previous one is used.
"""
from __future__ import annotations

import pathlib
from typing import Any, Optional

from absl import logging
import jax
import orbax.checkpoint as ocp

PyTree = Any


class Checkpointer:
  """A thin wrapper over ``orbax.checkpoint.CheckpointManager``.

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
        item_names=("state", "data"))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    steps = self.all_steps()
    return steps[-1] if steps else None

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
    return saved

  def restore_latest(self, abstract_state: PyTree
                     ) -> Optional[tuple[int, PyTree, dict]]:
    """Restores the newest readable checkpoint, or None if there is none.

    Args:
      abstract_state: a state with the target structure, shapes, dtypes and
        shardings (a real state or ``jax.eval_shape`` of one).

    Returns:
      ``(step, state, data_state)``; a checkpoint that fails to load is
      skipped with a warning in favour of the one before it.
    """
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    for step in reversed(self.all_steps()):
      try:
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                          data=ocp.args.JsonRestore()))
      except Exception as err:  # pylint: disable=broad-except
        logging.warning("checkpoint at step %d in %s is unreadable (%s: %s); "
                        "falling back to the previous one.", step,
                        self.directory, type(err).__name__, err)
        print(f"WARNING: checkpoint at step {step} is unreadable "
              f"({type(err).__name__}); falling back to the previous one.")
        continue
      return step, restored["state"], dict(restored["data"])
    return None

  def restore_raw_state(self, step: Optional[int] = None) -> dict:
    """The saved state as plain nested dicts of arrays, without a target.

    For reading a finished run (e.g. a teacher's params) when the optimizer
    that produced it is unknown. Defaults to the latest step.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise ValueError(f"no checkpoint in {self.directory}.")
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return restored["state"]

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
