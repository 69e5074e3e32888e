"""The generic fit loop: steps, logging, evaluation, checkpoints, preemption.

The train step is a pure jitted function (``parallel.make_train_step``); this
loop around it is plain Python. The workdir is the unit of a run: calling
:func:`fit` again on the same workdir resumes from its newest checkpoint (state
and data position), and the run ends exactly as an uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import math
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


# Steps per dispatch when a config does not say. On an accelerator every
# Python dispatch leaves the device idle while the host catches up; on the CPU
# host and device share the cores, and longer calls still save the per-step
# dispatch and transfer (benchmarks/train_step.py measures both).
_DEFAULT_STEPS_PER_CALL = {"cpu": 16, "gpu": 32, "cuda": 32, "rocm": 32, "tpu": 32}


def default_steps_per_call(platform: Optional[str] = None) -> int:
  """The number of train steps per dispatch used when none is configured.

  Args:
    platform: a jax platform name ("cpu", "gpu", "tpu"); default: the
      default backend of this process.

  Returns:
    16 on the CPU, 32 on accelerators (and unknown platforms).
  """
  platform = jax.default_backend() if platform is None else platform
  return _DEFAULT_STEPS_PER_CALL.get(platform, 32)


def _steps_per_call(requested: Optional[int], periods: tuple[int, ...]) -> int:
  """The K calls use: at most ``requested``, dividing every period.

  Calls end on the log/eval/checkpoint steps, so K is the largest divisor of
  the periods' greatest common divisor that does not exceed ``requested``:
  every call then has the same length and one program serves the whole run.
  """
  if requested is None:
    requested = default_steps_per_call()
  requested = int(requested)
  if requested < 1:
    raise ValueError(f"`train.steps_per_call` must be >= 1, got {requested}.")
  period = 0
  for p in periods:
    period = math.gcd(period, int(p))
  return max(d for d in range(1, min(requested, period) + 1) if period % d == 0)


def _chunk_sizes(start: int, num_steps: int, k: int) -> Iterator[int]:
  """Lengths of the calls from ``start`` to ``num_steps``: K, or 1 off the grid.

  A run that resumes off a multiple of K (saved by a different K), and the
  steps after the last multiple of K, go one step per call, so no third
  program is compiled.
  """
  step = start
  while step < num_steps:
    size = k if step % k == 0 and step + k <= num_steps else 1
    yield size
    step += size


class _StepRunner:
  """Feeds a train step K batches per call.

  A :class:`divlab.train.parallel.TrainStep` runs a call of K > 1 steps as one
  ``lax.scan`` (``step.run``) and a call of one step as one plain jitted step;
  any other ``step(state, batch)`` callable always runs one step per call.
  """

  def __init__(self, train_step: Callable, loader: Any, mesh: jax.sharding.Mesh):
    self.scans = callable(getattr(train_step, "run", None))
    self._step = train_step
    self._loader = loader
    self._iterator: Iterator = iter(loader)
    self._mesh = mesh
    self._peeked: list = []

  def _next(self) -> PyTree:
    return self._peeked.pop() if self._peeked else next(self._iterator)

  def usable_k(self, k: int, state: TrainState, explicit: bool) -> int:
    """``k``, or 1 where K steps in one call would be slower (see ``loops_well``)."""
    if k == 1:
      return 1
    if not self.scans:
      if explicit:
        logging.warning("train.steps_per_call=%d: this train step has no `run` "
                        "method (not a parallel.TrainStep); one step per call.", k)
      return 1
    self._peeked.append(self._next())
    if self._step.loops_well(state, self._peeked[0]):
      return k
    message = ("XLA:CPU runs convolutions inside a loop much slower than alone: "
               "one step per call (train.steps_per_call=%d not used).")
    (logging.warning if explicit else logging.info)(message, k)
    return 1

  def prepare(self, size: int) -> tuple[PyTree, Any, int]:
    """Reads ``size`` batches and starts their transfer to the devices.

    Returns the device batch(es), the loader's position after them (what a
    checkpoint taken after this call must save) and ``size``.
    """
    if size == 1:
      batch = parallel.shard_batch(self._next(), self._mesh)
    else:
      batch = parallel.shard_batch(
          jax.tree.map(lambda *xs: np.stack(xs), *[self._next() for _ in range(size)]),
          self._mesh, stacked=True)
    return batch, self._loader.get_state(), size

  def __call__(self, state: TrainState, batch: PyTree,
               size: int) -> tuple[TrainState, dict]:
    """``size`` steps; metrics of a K-step call come stacked ``[K]``."""
    return self._step.run(state, batch) if size > 1 else self._step(state, batch)


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
        steps_per_call: Optional[int] = None,
        progress: bool = True,
        desc: str = "train") -> tuple[TrainState, dict]:
  """Trains for ``num_steps`` steps, resuming from ``workdir`` if possible.

  Steps run K at a time (``steps_per_call``): the loop reads K batches,
  stacks them, starts their transfer, and one jitted ``lax.scan`` applies the
  K updates (``TrainStep.run``); the next K batches are read and sent while
  the device works. Calls end on the log, eval and checkpoint steps, and
  metrics stay on the device until a log step. K does not change a result:
  the data order and the step keys (``fold_in(rng, step)``) are the same for
  every K, and the parameters agree bit for bit (tested on the CPU with 1 and
  8 devices). On the CPU a step with a convolution runs one step per call,
  because XLA:CPU compiles convolutions inside a loop into slow generic code
  (``TrainStep.loops_well``).

  Args:
    workdir: this run's directory (``checkpoints/``, ``metrics.jsonl``,
      ``tensorboard/`` go there).
    state: the freshly initialised state (used as the restore target, so its
      shardings decide where restored arrays live).
    train_step: a ``parallel.TrainStep`` (from ``make_train_step`` or
      ``ensemble.make_ensemble_train_step``), or any ``step(state,
      global_batch) -> (state, metrics)`` callable, which then runs one step
      per call.
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
    steps_per_call: K, the most steps per dispatch (None:
      :func:`default_steps_per_call`). The K used is the largest divisor of
      ``gcd(log_every, checkpoint_every, eval_every)`` not above it, so every
      call has one length; the steps after the last multiple of K run one
      per call (two programs in all). A SIGTERM is noticed at the end of a
      call.
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
  periods = (log_every, checkpoint_every) + ((eval_every,) if eval_every else ())
  k = _steps_per_call(steps_per_call, periods)
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
  runner = _StepRunner(train_step, loader, mesh)
  if start < num_steps:
    k = runner.usable_k(k, state, explicit=steps_per_call is not None)

  def check_finite(upto_step: int) -> None:
    if not losses_since_check:
      return
    if all(jnp.ndim(x) == 0 for x in losses_since_check):
      losses = jnp.stack(losses_since_check)
    else:  # Calls of K steps give [K] losses.
      losses = jnp.concatenate([jnp.reshape(x, (-1,)) for x in losses_since_check])
    values = np.asarray(jax.device_get(losses))
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
      sizes = _chunk_sizes(start, num_steps, k)
      size = next(sizes, None)
      pending = runner.prepare(size) if size else None
      done = start
      while pending is not None:
        batches, data_state, call_size = pending
        state, metrics = runner(state, batches, call_size)
        # Read and send the next batches while the device computes this call.
        size = next(sizes, None)
        pending = runner.prepare(size) if size else None
        losses_since_check.append(metrics["loss"])
        done += call_size
        bar.update(call_size)
        is_last = done == num_steps
        if done % log_every == 0 or is_last:
          check_finite(done)
          last = {name: value[-1] if call_size > 1 else value
                  for name, value in metrics.items()}
          scalars = {f"train_{name}": value
                     for name, value in jax.device_get(last).items()}
          writer.write(done, scalars)
          bar.set_postfix(loss=f"{scalars['train_loss']:.4g}", refresh=False)
        if eval_fn is not None and ((eval_every and done % eval_every == 0)
                                    or is_last):
          final_eval = dict(eval_fn(state))
          writer.write(done, final_eval)
        if done % checkpoint_every == 0 or is_last or sigterm["set"]:
          check_finite(done)
          checkpointer.save(done, state, data_state)
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

