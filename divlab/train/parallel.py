"""Data parallelism over a device mesh, from one CPU to a multi-host pod.

The model is replicated and the global batch is split along a mesh axis named
``"data"``. Steps are plain ``jax.jit`` functions over globally-sharded arrays:
each device computes on its rows and XLA inserts the collectives, so a loss that
needs the whole batch (a kernel estimator, a batch-wise Sinkhorn plan) sees the
*global* batch exactly as on one device. This is the shardings route the JAX
team recommends instead of ``pmap``; the same code runs on 1 CPU, 8 fake CPU
devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``), a GPU box or
a TPU pod.

Multi-host: call :func:`maybe_initialize_distributed` first; each host loads
only its slice of every global batch (``divlab.data.Loader`` does this from
``jax.process_index()``), and :func:`shard_batch` assembles the global array
from the host-local slices.
"""
from __future__ import annotations

import os
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


def maybe_initialize_distributed(force: Optional[bool] = None) -> bool:
  """Calls ``jax.distributed.initialize()`` when running on several hosts.

  Args:
    force: True/False to decide explicitly; None (default) initialises when a
      multi-host environment is detected (a coordinator address, a TPU pod's
      worker list, or a SLURM job with several tasks).

  Returns:
    Whether the distributed runtime was initialised by this call.
  """
  if force is None:
    force = any(os.environ.get(k) not in (None, "", "1") for k in _MULTIHOST_ENV)
  if not force:
    return False
  if jax.distributed.is_initialized():
    return False
  jax.distributed.initialize()
  logging.info("jax.distributed: process %d of %d, %d global devices",
               jax.process_index(), jax.process_count(), jax.device_count())
  return True


def make_mesh(devices: Optional[list] = None) -> Mesh:
  """A 1-D mesh with axis ``"data"`` over all (global) devices."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


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
  """
  sharding = replicated(mesh)
  return jax.tree.map(lambda x: jax.device_put(x, sharding, may_alias=False), tree)


def shard_batch(local_batch: PyTree, mesh: Mesh) -> PyTree:
  """Builds global, data-sharded arrays from this host's slice of the batch.

  On one host the slice is the whole batch. Leading dimension = batch.
  """
  sharding = data_sharded(mesh)
  if jax.process_count() == 1:
    # The local slice is the global batch: one device_put of the whole tree
    # costs about half of assembling it array by array (per-step overhead).
    return jax.device_put(local_batch, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      local_batch)


def make_train_step(loss_fn: Callable[..., tuple[jax.Array, dict]],
                    mesh: Mesh,
                    *,
                    has_model_state: bool = False,
                    donate: bool = True) -> Callable[[TrainState, PyTree],
                                                     tuple[TrainState, dict]]:
  """Builds the one jitted data-parallel train step.

  Args:
    loss_fn: pure ``loss_fn(params, batch, rng) -> (loss, aux)`` where ``aux``
      is a dict of scalar metrics. With ``has_model_state=True`` the signature
      is ``loss_fn(params, batch, rng, model_state) -> (loss, aux)`` and
      ``aux["model_state"]`` holds the new mutable collections.
      ``batch`` is the global batch: reductions over it are global.
    mesh: the device mesh; the state is replicated, the batch data-sharded.
    has_model_state: whether the model carries mutable collections.
    donate: donate the old state's buffers to the new one (saves memory).

  Returns:
    ``step(state, batch) -> (new_state, metrics)``; ``metrics`` has ``loss``,
    ``grad_norm`` and the scalars of ``aux``.
  """

  def step(state: TrainState, batch: PyTree):
    rng = state.step_rng()

    def objective(params):
      if has_model_state:
        return loss_fn(params, batch, rng, state.model_state)
      return loss_fn(params, batch, rng)

    (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    aux = dict(aux)
    extra = {}
    if has_model_state:
      extra["model_state"] = aux.pop("model_state")
    new_state = state.apply_gradients(grads, **extra)
    metrics = {"loss": loss, "grad_norm": _global_norm(grads), **aux}
    return new_state, metrics

  return jax.jit(step, donate_argnums=(0,) if donate else (),
                 out_shardings=(replicated(mesh), replicated(mesh)))


def _global_norm(tree: PyTree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.sqrt(sum(jnp.vdot(x, x).real for x in leaves))
