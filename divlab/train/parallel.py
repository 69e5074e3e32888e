"""Data parallelism over a device mesh, from one CPU to a multi-host pod.

The model is replicated and the global batch is split along a mesh axis named
``"data"``. Steps are plain ``jax.jit`` functions over globally-sharded arrays:
each device computes on its rows and XLA inserts the collectives, so a loss that
needs the whole batch (a kernel estimator, a batch-wise Sinkhorn plan) sees the
*global* batch exactly as on one device. This is the shardings route the JAX
team recommends instead of ``pmap``; the same code runs on 1 CPU, 8 fake CPU
devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``), a GPU box or
a TPU pod.

Multi-host: call :func:`maybe_initialize_distributed` first (and
:func:`check_shared_directory` on the run directory); each host loads
only its slice of every global batch (``divlab.data.Loader`` does this from
``jax.process_index()``), and :func:`shard_batch` assembles the global array
from the host-local slices.
"""
from __future__ import annotations

import copy
import os
import pathlib
import time
from typing import Any, Callable, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from divlab.train.state import TrainState

PyTree = Any
DATA_AXIS = "data"

# Environment variables that mean "this process is one of several".
_MULTIHOST_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS",
                  "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS")
# What jax.distributed.initialize cannot detect by itself outside a managed
# cluster (SLURM, Open MPI, TPU pods): the job size and this process's rank.
NUM_PROCESSES_ENV = "DIVLAB_NUM_PROCESSES"
PROCESS_ID_ENV = "DIVLAB_PROCESS_ID"


def maybe_initialize_distributed(force: Optional[bool] = None, *,
                                 coordinator_address: Optional[str] = None,
                                 num_processes: Optional[int] = None,
                                 process_id: Optional[int] = None) -> bool:
  """Calls ``jax.distributed.initialize()`` when running on several hosts.

  On a managed cluster (SLURM, Open MPI, a TPU pod) jax finds the coordinator,
  the number of processes and this process's id by itself. Elsewhere give all
  three, as arguments or as the environment variables
  ``JAX_COORDINATOR_ADDRESS`` (read by jax), ``DIVLAB_NUM_PROCESSES`` and
  ``DIVLAB_PROCESS_ID``; arguments win over the environment. On CPU the
  processes talk through gloo collectives.

  Args:
    force: True/False to decide explicitly; None (default) initialises when a
      multi-host environment is detected (a coordinator address, a TPU pod's
      worker list, or a SLURM job with several tasks).
    coordinator_address: ``host:port`` of process 0's coordinator service.
    num_processes: how many processes the job has.
    process_id: this process's index, in ``[0, num_processes)``.

  Returns:
    Whether the distributed runtime was initialised by this call.

  Raises:
    ValueError: an incomplete or inconsistent set of the three settings.
  """
  env_count = os.environ.get(NUM_PROCESSES_ENV)
  env_id = os.environ.get(PROCESS_ID_ENV)
  try:
    num_processes = (int(env_count) if num_processes is None and env_count
                     else num_processes)
    process_id = int(env_id) if process_id is None and env_id else process_id
  except ValueError as err:
    raise ValueError(f"`{NUM_PROCESSES_ENV}` and `{PROCESS_ID_ENV}` must be "
                     f"integers ({err}).") from err
  explicit = {"coordinator_address": coordinator_address,
              "num_processes": num_processes, "process_id": process_id}
  if num_processes is not None or process_id is not None:
    if explicit["coordinator_address"] is None:
      explicit["coordinator_address"] = os.environ.get("JAX_COORDINATOR_ADDRESS")
    missing = [k for k, v in explicit.items() if v is None]
    if missing:
      raise ValueError(f"multi-process settings are incomplete: give "
                       f"{', '.join('`' + k + '`' for k in missing)} too "
                       "(flags or environment variables).")
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(f"`process_id`={process_id} must be in [0, num_processes="
                       f"{num_processes}).")
  if force is None:
    force = (any(v is not None for v in explicit.values())
             or any(os.environ.get(k) not in (None, "", "1") for k in _MULTIHOST_ENV))
  if not force:
    return False
  if jax.distributed.is_initialized():
    return False
  if jax.config.jax_cpu_collectives_implementation in (None, "none"):
    # Without it, CPU devices of different processes cannot run collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**{k: v for k, v in explicit.items() if v is not None})
  except ValueError as err:
    # Outside a cluster jax detects, it cannot know the job's size or rank.
    raise ValueError(
        f"jax.distributed.initialize failed ({err}): outside SLURM, Open MPI or a "
        "TPU pod give --coordinator_address, --num_processes and --process_id "
        f"(or JAX_COORDINATOR_ADDRESS, {NUM_PROCESSES_ENV}, {PROCESS_ID_ENV}).") from err
  logging.info("jax.distributed: process %d of %d, %d global devices",
               jax.process_index(), jax.process_count(), jax.device_count())
  return True


def check_shared_directory(directory: str | pathlib.Path, *,
                           timeout_s: float = 30.0) -> None:
  """Fails on every process unless all processes see the same ``directory``.

  Process 0 writes a marker file with a token drawn for this call; every
  process polls for it (for up to ``timeout_s``, for slow network file
  systems), and the verdicts are gathered, so the job stops together instead
  of hanging at its first checkpoint save when each host wrote to its own
  disk. A no-op on a single process.

  Args:
    directory: the run directory (already created by process 0).
    timeout_s: how long a process waits for the marker to appear.

  Raises:
    ValueError: naming the directory and the processes that cannot see it.
  """
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  directory = pathlib.Path(directory)
  token = int(multihost_utils.broadcast_one_to_all(
      np.asarray(np.random.default_rng().integers(1 << 30), np.int32)))
  marker = directory / f".shared_workdir_check_{token}"
  if jax.process_index() == 0:
    marker.write_text(str(token))
  multihost_utils.sync_global_devices(f"divlab_shared_marker_written_{token}")
  deadline = time.monotonic() + timeout_s
  while not marker.exists() and time.monotonic() < deadline:
    time.sleep(0.1)
  sees = multihost_utils.process_allgather(np.asarray(marker.exists(), np.int32))
  if jax.process_index() == 0:
    marker.unlink(missing_ok=True)
  blind = [i for i, ok in enumerate(np.asarray(sees).reshape(-1)) if not ok]
  if blind:
    raise ValueError(
        f"--workdir={directory} is not shared by all processes: process(es) "
        f"{blind} cannot see the file process 0 wrote there within {timeout_s:g} s. "
        "Every process needs the same directory (a shared or network file system).")


def make_mesh(devices: Optional[list] = None) -> Mesh:
  """A 1-D device mesh with one axis, ``"data"``, for data parallelism.

  The batch is split over this axis and parameters are replicated, so the
  same code runs on 1 CPU, 8 fake CPU devices, a GPU box or a TPU pod.

  Args:
    devices: the devices to use, in order; default ``jax.devices()`` (every
      device of every process).

  Returns:
    A ``jax.sharding.Mesh`` of shape ``{"data": len(devices)}``.

  Example:
    >>> make_mesh().axis_names
    ('data',)
  """
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def stacked_data_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding of K stacked batches ``[K, B, ...]``: examples split, steps not."""
  return NamedSharding(mesh, P(None, DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh,
                     name: str = "data.batch_size") -> None:
  """The global batch must split evenly over the data axis."""
  n = mesh.shape[DATA_AXIS]
  if global_batch_size % n:
    raise ValueError(
        f"`{name}`={global_batch_size} is not divisible by the {n} devices of "
        f"the data axis; pick a multiple of {n}.")


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places a pytree (identical on every host) replicated on the mesh.

  The result always owns fresh buffers (``may_alias=False``): the train step
  donates its state, and an aliased input would delete the caller's arrays.

  Args:
    tree: a pytree of host or device arrays, the same on every process.
    mesh: the device mesh (:func:`make_mesh`).

  Returns:
    The pytree with every leaf a global array replicated on ``mesh``.
  """
  sharding = replicated(mesh)

  def fresh(x):
    if isinstance(x, jax.Array) and x.is_fully_addressable:
      # `may_alias=False` alone is not enough: replicating a one-device array
      # over 8 devices reused its buffer for device 0 (jax 0.10), and the
      # first donating step then deleted the caller's array. A host copy
      # shares nothing.
      x = jax.device_get(x)
    return jax.device_put(x, sharding, may_alias=False)

  return jax.tree.map(fresh, tree)


def shard_batch(local_batch: PyTree, mesh: Mesh, *, stacked: bool = False) -> PyTree:
  """Builds global, data-sharded arrays from this host's slice of the batch.

  On one host the slice is the whole batch.

  Args:
    local_batch: a pytree of numpy arrays ``[local_batch, ...]``: this
      process's rows of the global batch (``[K, local_batch, ...]`` with
      ``stacked=True``).
    mesh: the device mesh (:func:`make_mesh`).
    stacked: the leaves carry a leading axis of K consecutive batches (the
      input of :meth:`TrainStep.run`); the examples axis is then axis 1.

  Returns:
    The pytree as global arrays ``[global_batch, ...]`` (``[K, global_batch,
    ...]``) split over the mesh's ``"data"`` axis.
  """
  sharding = stacked_data_sharded(mesh) if stacked else data_sharded(mesh)
  if jax.process_count() == 1:
    # The local slice is the global batch: one device_put of the whole tree
    # costs about half of assembling it array by array (per-step overhead).
    return jax.device_put(local_batch, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      local_batch)


class TrainStep:
  """A jitted train step that can also take K steps in one dispatch.

  ``step(state, batch)`` is one optimizer update (a jitted call).
  ``step.run(state, batches)`` takes ``batches`` with a leading axis of K
  consecutive global batches and applies K updates inside one jitted
  ``lax.scan``, returning the per-step metrics stacked along that axis. For
  small models a step is host-bound (one Python dispatch and one transfer per
  step): a call of K steps pays that cost once. Both run the same step
  function; :func:`divlab.train.fit` tests that K steps per call give the
  parameters of K single calls bit for bit.

  Loss arguments: a step built with ``loss_args`` (a dict of numbers or
  arrays, e.g. ``{"beta": 0.1}``) passes them to ``step_fn`` as traced
  keyword arguments, so ``step.with_loss_args(beta=0.5)`` is the same compiled
  program with another value. A sweep over a loss weight then compiles once
  per shape instead of once per value.

  Args:
    step_fn: the pure ``step(state, batch, **loss_args) -> (state, metrics)``.
    mesh: the device mesh; state and metrics come back replicated on it.
    donate: donate the old state's buffers to the new one.
    loss_args: optional ``{name: number or array}`` given to ``step_fn``.
  """

  def __init__(self, step_fn: Callable[..., tuple[TrainState, dict]],
               mesh: Mesh, *, donate: bool = True,
               loss_args: Optional[dict[str, Any]] = None):
    self.step_fn = step_fn
    self.mesh = mesh
    self.loss_args = _loss_args(loss_args, None, mesh)
    donate_argnums = (0,) if donate else ()
    out_shardings = (replicated(mesh), replicated(mesh))

    # The names below are the jitted programs' names (compile logs count them).
    def train_step(state, batch, loss_args):
      return step_fn(state, batch, **loss_args)

    def train_steps(state, batches, loss_args):
      return jax.lax.scan(lambda s, b: step_fn(s, b, **loss_args), state, batches)

    self._one = jax.jit(train_step, donate_argnums=donate_argnums,
                        out_shardings=out_shardings)
    self._scan = jax.jit(train_steps, donate_argnums=donate_argnums,
                         out_shardings=out_shardings)
    self._loops_well: dict = {}

  def __call__(self, state: TrainState, batch: PyTree) -> tuple[TrainState, dict]:
    return self._one(state, batch, self.loss_args)

  def run(self, state: TrainState, batches: PyTree) -> tuple[TrainState, dict]:
    """K steps on ``batches`` (leaves ``[K, global_batch, ...]``) in one call.

    Returns:
      ``(state after K steps, metrics)`` with every metric stacked ``[K]``.
    """
    return self._scan(state, batches, self.loss_args)

  def with_loss_args(self, **values: Any) -> "TrainStep":
    """This step with other loss-argument values, sharing its compiled programs.

    Args:
      **values: new values for some or all of the step's ``loss_args``; each
        keeps the shape and dtype of the value it replaces.

    Returns:
      A :class:`TrainStep` that shares this one's jitted functions (and so
      their compilations) and passes the new values.
    """
    bound = copy.copy(self)
    bound.loss_args = _loss_args(values, self.loss_args, self.mesh)
    return bound

  def loops_well(self, state: TrainState, batch: PyTree) -> bool:
    """Whether :meth:`run` is as fast per step as single calls on this backend.

    Not for a step with a convolution on the CPU: XLA:CPU rewrites the
    convolutions of a gradient into the layout its fast (Eigen) kernels take
    only outside loops; inside the ``lax.scan`` they stay in a generic form
    that measured 20-40x slower (jax 0.10, a 1-D CNN step: 58 vs 2.8 ms), and
    rounds differently. The answer is cached per batch structure.

    Args:
      state: the train state (only shapes and dtypes are read).
      batch: this process's slice of one batch (host or device arrays).
    """
    if jax.default_backend() != "cpu":
      return True
    key = jax.tree.structure(batch), tuple(
        (np.shape(x), np.result_type(x).str) for x in jax.tree.leaves(batch))
    if key not in self._loops_well:
      # The global batch's shapes (a host passes its slice), traced abstractly.
      spec = jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(
              (np.shape(x)[0] * jax.process_count(),) + np.shape(x)[1:],
              np.result_type(x)), batch)
      try:
        jaxpr = jax.make_jaxpr(self._one)(state, spec, self.loss_args)
      except Exception:  # pylint: disable=broad-except
        # Cannot tell: single steps are never the slow case.
        self._loops_well[key] = False
      else:
        self._loops_well[key] = not _uses_primitive(jaxpr.jaxpr, "conv_general_dilated")
    return self._loops_well[key]


def _uses_primitive(jaxpr, name: str) -> bool:
  """Whether ``jaxpr`` or any jaxpr nested in it applies primitive ``name``."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == name:
      return True
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (list, tuple)) else (param,)):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns") and _uses_primitive(inner, name):
          return True
  return False


def _loss_args(values: Optional[dict[str, Any]], previous: Optional[dict[str, jax.Array]],
               mesh: Mesh) -> dict[str, jax.Array]:
  """Checks loss arguments and places them replicated on the mesh.

  With ``previous`` (the values of the step being rebound) only its names are
  accepted, each with its shape and dtype, and unnamed ones keep their value:
  the compiled programs then apply unchanged.
  """
  if values is None:
    values = {}
  if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
    raise ValueError(f"`loss_args` must be a dict with string keys, got {values!r}.")
  out = dict(previous or {})
  for name, value in values.items():
    if isinstance(value, (str, bytes)) or value is None:
      raise ValueError(f"loss argument `{name}` must be a number or an array, "
                       f"got {value!r}.")
    if previous is None:
      out[name] = jnp.asarray(value)  # JAX's default dtypes: float32, int32
      continue
    if name not in previous:
      raise ValueError(f"loss argument `{name}` is not one of this step's "
                       f"{sorted(previous)}; build a step with it.")
    old = previous[name]
    if not np.can_cast(np.result_type(value), old.dtype, casting="same_kind"):
      # e.g. a step built with beta=1 (int32) would truncate beta=0.5 to 0.
      raise ValueError(f"loss argument `{name}` is {old.dtype} in this step and "
                       f"cannot take {value!r} without losing it; build the step "
                       f"with a value of the dtype you sweep (e.g. 1.0, not 1).")
    array = jnp.asarray(value, dtype=old.dtype)
    if array.shape != old.shape:
      raise ValueError(f"loss argument `{name}` must keep its shape {old.shape}, "
                       f"got {array.shape}.")
    out[name] = array
  # Host copies placed afresh: strongly typed, so every value hits one cache entry.
  return replicate(out, mesh)


def make_train_step(loss_fn: Callable[..., tuple[jax.Array, dict]],
                    mesh: Mesh,
                    *,
                    has_model_state: bool = False,
                    loss_args: Optional[dict[str, Any]] = None,
                    donate: bool = True) -> TrainStep:
  """Builds the one jitted data-parallel train step.

  Args:
    loss_fn: pure ``loss_fn(params, batch, rng) -> (loss, aux)`` where ``aux``
      is a dict of scalar metrics. With ``has_model_state=True`` the signature
      is ``loss_fn(params, batch, rng, model_state) -> (loss, aux)`` and
      ``aux["model_state"]`` holds the new mutable collections.
      ``batch`` is the global batch: reductions over it are global.
    mesh: the device mesh; the state is replicated, the batch data-sharded.
    has_model_state: whether the model carries mutable collections.
    loss_args: optional ``{name: value}`` of loss hyperparameters passed to
      ``loss_fn`` as traced keyword arguments (``loss_fn(params, batch, rng,
      **loss_args)``), e.g. ``{"beta": 0.1}``; ``step.with_loss_args(beta=1.0)``
      reuses the compiled step for another value (a sweep compiles once).
    donate: donate the old state's buffers to the new one (saves memory).

  Returns:
    A :class:`TrainStep`: ``step(state, batch) -> (new_state, metrics)``,
    and ``step.run(state, batches)`` for K steps per dispatch; ``metrics``
    has ``loss``, ``grad_norm`` and the scalars of ``aux``.

  Example:
    >>> def loss_fn(params, batch, rng, beta):
    ...   return jnp.mean((params["w"] * batch["x"]) ** 2) * beta, {}
    >>> step = make_train_step(loss_fn, make_mesh(), loss_args={"beta": 0.1})
    >>> step_at_one = step.with_loss_args(beta=1.0)  # no new compilation
  """

  def train_step(state: TrainState, batch: PyTree, **args):
    rng = state.step_rng()

    def objective(params):
      if has_model_state:
        return loss_fn(params, batch, rng, state.model_state, **args)
      return loss_fn(params, batch, rng, **args)

    (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    aux = dict(aux)
    extra = {}
    if has_model_state:
      extra["model_state"] = aux.pop("model_state")
    new_state = state.apply_gradients(grads, **extra)
    metrics = {"loss": loss, "grad_norm": _global_norm(grads), **aux}
    return new_state, metrics

  return TrainStep(train_step, mesh, donate=donate, loss_args=loss_args)


def _global_norm(tree: PyTree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.sqrt(sum(jnp.vdot(x, x).real for x in leaves))
