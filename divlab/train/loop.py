"""The generic fit loop: steps, logging, evaluation, checkpoints, preemption.

The train step is a pure jitted function (``parallel.make_train_step``); this
loop around it is plain Python. The workdir is the unit of a run: calling
:func:`fit` again on the same workdir resumes from its newest checkpoint (state
and data position), and the run ends exactly as an uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import pathlib
import signal
import sys
import threading
from typing import Any, Callable, Iterator, Mapping, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from divlab.train import parallel
from divlab.train.checkpoint import Checkpointer
from divlab.train.metrics import MetricWriter
from divlab.train.state import TrainState

PyTree = Any


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


class Preempted(SystemExit):
  """Raised after SIGTERM once the state is saved; exits the process with 0."""

  def __init__(self, step: int):
    super().__init__(0)
    self.step = step


@contextlib.contextmanager
def _sigterm_flag():
  """Yields a dict whose "set" entry becomes True when SIGTERM arrives."""
  flag = {"set": False}
  if threading.current_thread() is not threading.main_thread():
    yield flag
    return

  def handler(signum, frame):  # pylint: disable=unused-argument
    flag["set"] = True

  previous = signal.signal(signal.SIGTERM, handler)
  try:
    yield flag
  finally:
    signal.signal(signal.SIGTERM, previous)


def fit(*,
        workdir: str | pathlib.Path,
        state: TrainState,
        train_step: Callable[[TrainState, PyTree], tuple[TrainState, dict]],
        loader: Any,
        mesh: jax.sharding.Mesh,
        num_steps: int,
        log_every: int = 100,
        eval_every: int = 0,
        eval_fn: Optional[Callable[[TrainState], Mapping[str, float]]] = None,
        checkpoint_every: int = 1000,
        keep_checkpoints: int = 2,
        progress: bool = True,
        desc: str = "train") -> tuple[TrainState, dict]:
  """Trains for ``num_steps`` steps, resuming from ``workdir`` if possible.

  Args:
    workdir: this run's directory (``checkpoints/``, ``metrics.jsonl``,
      ``tensorboard/`` go there).
    state: the freshly initialised state (used as the restore target, so its
      shardings decide where restored arrays live).
    train_step: ``step(state, global_batch) -> (state, metrics)``.
    loader: a ``divlab.data.Loader`` (iterator of host-local batches with
      ``get_state``/``set_state``).
    mesh: the device mesh the batch is sharded over.
    num_steps: total number of steps of the run (not steps still to do).
    log_every: write train metrics every this many steps (and at the end):
      every scalar of ``train_step``'s metrics, with a ``train_`` prefix
      (``train_loss``, ...), to ``metrics.jsonl`` and TensorBoard.
    eval_every: call ``eval_fn`` every this many steps (0: only at the end).
    eval_fn: ``eval_fn(state) -> {name: value}``; logged with prefixes as given.
    checkpoint_every: save every this many steps (and at the end).
    keep_checkpoints: how many recent checkpoints to keep.
    progress: show a progress bar with steps/s (on stderr, so that what a
      program prints on stdout stays readable).
    desc: the progress bar's label.

  Returns:
    ``(final_state, final_eval_metrics)`` (the latter empty without
    ``eval_fn``).

  Raises:
    NonFiniteLossError: naming the first step whose loss is NaN/inf; no
      checkpoint is written past the last finite step.
    Preempted: after SIGTERM, once the current state has been saved.
  """
  for name, value in (("train.num_steps", num_steps), ("train.log_every", log_every),
                      ("train.checkpoint_every", checkpoint_every)):
    if int(value) < 1:
      raise ValueError(f"`{name}` must be >= 1, got {value}.")
  if eval_every < 0:
    raise ValueError(f"`train.eval_every` must be >= 0, got {eval_every}.")
  workdir = pathlib.Path(workdir)
  checkpointer = Checkpointer(workdir / "checkpoints", keep=keep_checkpoints)
  start = 0
  restored = checkpointer.restore_latest(state)
  if restored is not None:
    start, state, data_state = restored
    loader.set_state(data_state)
    logging.info("resumed %s from step %d", workdir, start)
  writer = MetricWriter(workdir, resume_step=start if restored else None)
  final_eval: dict = {}
  losses_since_check: list = []
  bar = tqdm.tqdm(total=num_steps, initial=start, desc=desc, unit="step",
                  disable=not progress, dynamic_ncols=True, leave=False,
                  file=sys.stderr)
  iterator: Iterator = iter(loader)

  def check_finite(upto_step: int) -> None:
    if not losses_since_check:
      return
    values = np.asarray(jax.device_get(jnp.stack(losses_since_check)))
    bad = np.flatnonzero(~np.isfinite(values))
    first = upto_step - len(values) + 1
    losses_since_check.clear()
    if bad.size:
      step = first + int(bad[0])
      last = checkpointer.latest_step()
      kept = (f"The last good checkpoint (step {last}) is kept." if last is not None
              else "No checkpoint was saved before it.")
      raise NonFiniteLossError(
          f"loss is {values[bad[0]]} at step {step} of {workdir}; stopping. {kept}")

  try:
    with _sigterm_flag() as sigterm:
      for step in range(start, num_steps):
        batch = parallel.shard_batch(next(iterator), mesh)
        state, metrics = train_step(state, batch)
        losses_since_check.append(metrics["loss"])
        done = step + 1
        bar.update(1)
        is_last = done == num_steps
        if done % log_every == 0 or is_last:
          check_finite(done)
          scalars = {f"train_{k}": v for k, v in jax.device_get(metrics).items()}
          writer.write(done, scalars)
          bar.set_postfix(loss=f"{scalars['train_loss']:.4g}", refresh=False)
        if eval_fn is not None and ((eval_every and done % eval_every == 0)
                                    or is_last):
          final_eval = dict(eval_fn(state))
          writer.write(done, final_eval)
        if done % checkpoint_every == 0 or is_last or sigterm["set"]:
          check_finite(done)
          checkpointer.save(done, state, loader.get_state())
        if sigterm["set"] and not is_last:
          writer.flush()
          print(f"SIGTERM: saved step {done} to {workdir}; re-run the same "
                "command to resume.", flush=True)
          raise Preempted(done)
      if start >= num_steps and eval_fn is not None:
        final_eval = dict(eval_fn(state))
  finally:
    bar.close()
    writer.close()
    checkpointer.close()
  if jax.process_count() > 1:
    # Process 0 alone writes metrics.jsonl; an experiment that reads it back
    # after fit (on any process) must find every line in it.
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("divlab_fit_done")
  return state, final_eval


def make_eval_step(per_example_fn: Callable[[PyTree, PyTree], Mapping[str, jax.Array]],
                   mesh: jax.sharding.Mesh) -> Callable:
  """Jits ``per_example_fn(params, batch) -> {name: [B] values}`` into masked sums.

  Summing (not averaging) per batch lets :func:`evaluate` pad the last batch
  and still divide by the exact number of examples.

  Args:
    per_example_fn: ``fn(params, batch) -> {name: [B] values}``.
    mesh: the device mesh; the sums come back replicated on it.

  Returns:
    A jitted ``step(params, batch)`` (batch with a boolean ``mask`` key marking
    real rows) returning ``{name: sum over unmasked rows, "count": n}``.
  """

  def summed(params, batch):
    values = per_example_fn(params, batch)
    mask = batch["mask"]
    out = {k: jnp.sum(jnp.where(mask, v, 0)) for k, v in values.items()}
    out["count"] = jnp.sum(mask)
    return out

  return jax.jit(summed, out_shardings=parallel.replicated(mesh))


def evaluate(eval_step: Callable, params: PyTree, arrays: Mapping[str, np.ndarray],
             batch_size: int, mesh: jax.sharding.Mesh) -> dict:
  """Averages ``eval_step``'s per-example values over every example once.

  ``arrays`` is the whole split (identical on every host); each host feeds
  its slice of each padded global batch.

  Args:
    eval_step: a step from :func:`make_eval_step`.
    params: the parameters to evaluate (replicated).
    arrays: the split, ``{key: [N, ...]}``.
    batch_size: the global evaluation batch, divisible by the device count.
    mesh: the device mesh.

  Returns:
    ``{name: mean over the N examples}`` as Python floats.
  """
  from divlab import data  # pylint: disable=g-import-not-at-top
  parallel.check_batch_size(batch_size, mesh, "eval batch size")
  pc, pi = jax.process_count(), jax.process_index()
  per_host = batch_size // pc
  totals = None
  for batch in data.eval_batches(arrays, batch_size):
    local = {k: v[pi * per_host:(pi + 1) * per_host] for k, v in batch.items()}
    sums = eval_step(params, parallel.shard_batch(local, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals.pop("count"))
  return {k: float(v) / count for k, v in totals.items()}

