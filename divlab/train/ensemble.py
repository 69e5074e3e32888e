"""Training K models at once: one jitted step vmapped over ensemble members.

Unlearning metrics such as KLoM compare the *distribution* of a model's
outputs over training randomness, so they need tens of models per method;
datamodels need hundreds trained on random subsets. On a CPU that is only
affordable when the models train side by side: the members' parameters and
optimizer states are stacked along a leading axis and one ``jax.vmap``-ed
update advances them all, while the plain-Python fit loop
(:func:`divlab.train.loop.fit`) around it still logs, evaluates, checkpoints
and resumes exactly as for one model.

Layout conventions:

* parameters and optimizer state: a leading **member** axis ``[K, ...]``
  (``TrainState.step`` and ``TrainState.rng`` stay shared scalars/keys);
* batches from :class:`EnsembleLoader`: **example-major** ``[B, K, ...]``, so
  that ``parallel.shard_batch`` splits the examples of every member over the
  mesh's data axis, as for a single model, and every device holds all members.

Member ``k`` of an ensemble trained with seeds ``s_k`` starts from
``model.init(jax.random.key(s_k), x[:1])``, the same parameters
``trainer.init_params(model, x, s_k)`` gives a single model, and reads its data
in the order of ``divlab.data.Loader(arrays_k, B, seed=s_k)``.
"""
from __future__ import annotations

import pathlib
import weakref
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from divlab.train import loop
from divlab.train import parallel
from divlab.train.state import TrainState

PyTree = Any
GradientFn = Callable[[PyTree, PyTree, jax.Array], tuple[jax.Array, dict, PyTree]]

__all__ = [
    "EnsembleLoader",
    "init_ensemble_params",
    "create_ensemble_state",
    "make_ensemble_train_step",
    "train_ensemble",
    "ensemble_outputs",
    "num_members",
    "member",
    "stack_members",
]


class EnsembleLoader:
  """Batches for K members at once, each from its own arrays and seed.

  Member ``k`` is an ordinary ``divlab.data.Loader(members[k], batch_size,
  seed=seeds[k])``: its examples, order and position are exactly those of a
  single-model run with that seed. A batch stacks the members' batches on
  axis 1: ``{key: [B_local, K, ...]}``. Members may hold different numbers of
  examples (e.g. random subsets of a training set) but must share keys and
  per-example shapes.

  Args:
    members: K dicts ``{key: [n_k, ...] array}``.
    global_batch_size: examples per member per step (summed over processes).
    seeds: K non-negative integer seeds, one per member.
    shuffle: reshuffle every epoch (``False``: index order, e.g. full-batch
      gradient descent with ``global_batch_size = n_k``).
    drop_remainder: as in ``divlab.data.Loader``.

  Raises:
    ValueError: no members, a seed count that differs from the member count,
      or members whose keys differ.
  """

  def __init__(self,
               members: Sequence[Mapping[str, np.ndarray]],
               global_batch_size: int,
               *,
               seeds: Sequence[int],
               shuffle: bool = True,
               drop_remainder: bool = True):
    from divlab import data  # pylint: disable=g-import-not-at-top
    members = list(members)
    seeds = [int(s) for s in seeds]
    if not members:
      raise ValueError("`members` must hold at least one member's arrays.")
    if len(seeds) != len(members):
      raise ValueError(f"`seeds` must give one seed per member: {len(members)} "
                       f"members, {len(seeds)} seeds.")
    keys = set(members[0])
    for k, arrays in enumerate(members):
      if set(arrays) != keys:
        raise ValueError(f"member {k} has keys {sorted(arrays)}, member 0 has "
                         f"{sorted(keys)}; every member needs the same keys.")
    self._loaders = [data.Loader(arrays, global_batch_size, seed=seed,
                                 shuffle=shuffle, drop_remainder=drop_remainder)
                     for arrays, seed in zip(members, seeds)]

  @property
  def num_members(self) -> int:
    return len(self._loaders)

  def __iter__(self) -> "EnsembleLoader":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batches = [next(loader) for loader in self._loaders]
    return {key: np.stack([b[key] for b in batches], axis=1) for key in batches[0]}

  def get_state(self) -> dict[str, Any]:
    """The members' positions, JSON-serialisable."""
    return {"members": [loader.get_state() for loader in self._loaders]}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Restores the positions saved by :meth:`get_state`."""
    states = state.get("members") if isinstance(state, Mapping) else None
    if not isinstance(states, (list, tuple)) or len(states) != len(self._loaders):
      raise ValueError(f"`state` must come from an EnsembleLoader with "
                       f"{len(self._loaders)} members, got {state!r:.200}.")
    for loader, member_state in zip(self._loaders, states):
      loader.set_state(member_state)


def num_members(stacked: PyTree) -> int:
  """The size of the leading member axis of a stacked pytree."""
  leaves = jax.tree.leaves(stacked)
  if not leaves:
    raise ValueError("the stacked pytree has no leaves.")
  sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) else None for leaf in leaves}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(f"leaves disagree on the member axis: sizes {sizes}.")
  return sizes.pop()


def member(stacked: PyTree, index: int) -> PyTree:
  """Member ``index`` of a stacked pytree (e.g. one model's params)."""
  return jax.tree.map(lambda leaf: leaf[index], stacked)


def stack_members(trees: Sequence[PyTree]) -> PyTree:
  """Stacks K pytrees of one structure along a new leading member axis."""
  if not trees:
    raise ValueError("`trees` must hold at least one pytree.")
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def init_ensemble_params(model, sample_x: np.ndarray, seeds: Sequence[int]) -> PyTree:
  """Stacked linen params, member k initialised with ``jax.random.key(seeds[k])``.

  One vmapped ``model.init`` rather than K calls, so hundreds of members
  initialise in one compilation.
  """
  seeds = jnp.asarray([int(s) for s in seeds], jnp.uint32)
  return jax.device_get(_ensemble_init(model)(seeds, jnp.asarray(sample_x[:1])))


# Compiled initialisers, keyed weakly by module: equal modules (same class and
# fields) share one compilation across the runs of an experiment.
_INIT_CACHE: "weakref.WeakKeyDictionary[Any, Callable]" = weakref.WeakKeyDictionary()


def _ensemble_init(model) -> Callable:
  init = _INIT_CACHE.get(model)
  if init is None:
    init = jax.jit(jax.vmap(lambda seed, x: model.init(jax.random.key(seed), x)["params"],
                            in_axes=(0, None)))
    _INIT_CACHE[model] = init
  return init


def create_ensemble_state(params: PyTree, tx: optax.GradientTransformation,
                          seed: int, mesh: jax.sharding.Mesh) -> TrainState:
  """A replicated TrainState whose params and optimizer state are stacked.

  ``step`` and ``rng`` are shared by the members; each step derives one key
  per member from ``fold_in(rng, step)``. The state owns fresh device
  buffers (``params`` is copied through host memory), so a train step that
  donates the state never deletes the caller's arrays.
  """
  params = jax.device_get(params)
  opt_state = jax.vmap(tx.init)(params)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state=opt_state,
                     rng=jax.random.key_data(jax.random.key(seed + 1)),
                     model_state={}, tx=tx)
  return parallel.replicate(state, mesh)


def _value_and_grad(loss_fn: Callable) -> GradientFn:
  def gradient_fn(params, batch, rng):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
    return loss, aux, grads
  return gradient_fn


def make_ensemble_train_step(loss_fn: Optional[Callable] = None,
                             mesh: Optional[jax.sharding.Mesh] = None,
                             *,
                             gradient_fn: Optional[GradientFn] = None,
                             donate: bool = True) -> Callable:
  """The jitted ensemble step: every member takes one optimizer update.

  Args:
    loss_fn: pure ``loss_fn(params, batch, rng) -> (loss, aux)`` of ONE
      member: ``params`` unstacked, ``batch`` that member's ``[B, ...]``
      slice, ``aux`` a dict of scalars.
    mesh: the device mesh (default: all devices).
    gradient_fn: instead of ``loss_fn``, ``gradient_fn(params, batch, rng) ->
      (loss, aux, grads)`` for optimizers whose input is not the gradient of
      one loss, e.g. ``{'forget': g_f, 'retain': R}`` for
      ``divlab.losses.unlearning.gu_project``.
    donate: donate the old state's buffers.

  Returns:
    A ``parallel.TrainStep``: ``step(state, batch) -> (state, metrics)`` with
    ``batch`` example-major ``[B, K, ...]`` (and ``step.run`` for several
    steps per dispatch). ``metrics``: ``loss`` (mean over members), ``loss_max``,
    ``grad_norm`` (mean of the members' global norms) and the member means
    of ``aux``.
  """
  if (loss_fn is None) == (gradient_fn is None):
    raise ValueError("give exactly one of `loss_fn` and `gradient_fn`.")
  gradient_fn = gradient_fn or _value_and_grad(loss_fn)
  mesh = parallel.make_mesh() if mesh is None else mesh

  def train_step(state: TrainState, batch: PyTree):
    count = num_members(state.params)
    keys = jax.random.split(state.step_rng(), count)

    def update_member(params, opt_state, member_batch, key):
      loss, aux, grads = gradient_fn(params, member_batch, key)
      updates, opt_state = state.tx.update(grads, opt_state, params)
      norm = jnp.sqrt(sum(jnp.vdot(g, g).real for g in jax.tree.leaves(grads)))
      return optax.apply_updates(params, updates), opt_state, loss, aux, norm

    params, opt_state, losses, aux, norms = jax.vmap(
        update_member, in_axes=(0, 0, 1, 0))(state.params, state.opt_state, batch,
                                             keys)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    metrics = {"loss": losses.mean(), "loss_max": losses.max(),
               "grad_norm": norms.mean(),
               **{k: jnp.mean(v) for k, v in dict(aux).items()}}
    return new_state, metrics

  return parallel.TrainStep(train_step, mesh, donate=donate)


def train_ensemble(*,
                   workdir: str | pathlib.Path,
                   train_config: ml_collections.ConfigDict,
                   params: PyTree,
                   tx: optax.GradientTransformation,
                   loader: Any,
                   seed: int,
                   loss_fn: Optional[Callable] = None,
                   gradient_fn: Optional[GradientFn] = None,
                   train_step: Optional[Callable] = None,
                   eval_fn: Optional[Callable[[TrainState], Mapping[str, float]]] = None,
                   mesh: Optional[jax.sharding.Mesh] = None,
                   progress: bool = True,
                   desc: str = "ensemble") -> tuple[PyTree, dict]:
  """Trains a stacked ensemble with the shared fit loop; resumable.

  Args:
    workdir: the ensemble's run directory (checkpoints, metrics.jsonl).
    train_config: ``num_steps``, ``log_every``, ``eval_every``,
      ``checkpoint_every``, ``keep_checkpoints`` and optionally
      ``steps_per_call`` (a config's ``train`` node).
    params: stacked initial params ``[K, ...]``.
    tx: the optimizer of ONE member (its state is vmapped).
    loader: yields example-major batches ``[B, K, ...]`` (an
      :class:`EnsembleLoader`, or several zipped by
      ``divlab.train.zipped.ZippedLoader``) and has ``get_state``/``set_state``.
    seed: seeds the step keys.
    loss_fn / gradient_fn / train_step: see :func:`make_ensemble_train_step`;
      a prebuilt ``train_step`` lets several runs share one compilation.
    eval_fn: ``eval_fn(state) -> {name: float}`` every ``eval_every`` steps
      and at the end (``state.params`` is stacked).
    mesh: the device mesh (default: all devices).
    progress: show the progress bar.
    desc: the progress bar's label.

  Returns:
    ``(stacked_params, final_eval_metrics)`` on host.
  """
  mesh = parallel.make_mesh() if mesh is None else mesh
  num_members(params)  # Fails early on an unstacked tree.
  state = create_ensemble_state(params, tx, seed, mesh)
  step = train_step or make_ensemble_train_step(loss_fn, mesh, gradient_fn=gradient_fn)
  state, final = loop.fit(
      workdir=workdir, state=state, train_step=step, loader=loader, mesh=mesh,
      num_steps=int(train_config.num_steps), log_every=int(train_config.log_every),
      eval_every=int(train_config.eval_every), eval_fn=eval_fn,
      checkpoint_every=int(train_config.checkpoint_every),
      keep_checkpoints=int(train_config.keep_checkpoints),
      steps_per_call=train_config.get("steps_per_call"), progress=progress,
      desc=desc)
  return jax.device_get(state.params), final


def ensemble_outputs(apply_fn: Callable[[PyTree, jax.Array], jax.Array],
                     params: PyTree,
                     x: np.ndarray,
                     *,
                     batch_size: int = 1024) -> np.ndarray:
  """Every member's outputs on every example: ``[K, n, ...]`` on host.

  Args:
    apply_fn: ``apply_fn(params, x_batch) -> outputs`` for ONE member, e.g.
      ``lambda p, x: model.apply({'params': p}, x)``.
    params: stacked params ``[K, ...]``.
    x: ``[n, ...]`` inputs shared by all members.
    batch_size: examples per call; the last chunk is padded (by repeating the
      final example) so one compilation serves every chunk.
  """
  x = np.asarray(x)
  n = x.shape[0]
  if n == 0:
    raise ValueError("`x` holds no examples.")
  # Chunks of a power-of-two size (capped at batch_size): inputs of similar
  # sizes share one compilation, at most twice the needed rows are computed.
  size = min(int(batch_size), 1 << (n - 1).bit_length())
  forward = _ensemble_forward(apply_fn)
  chunks = []
  for start in range(0, n, size):
    rows = np.minimum(np.arange(start, start + size), n - 1)
    out = forward(params, jnp.asarray(x[rows]))
    chunks.append(np.asarray(out)[:, :min(size, n - start)])
  return np.concatenate(chunks, axis=1)


# Compiled forwards, keyed weakly by `apply_fn`: passing the same function
# object again reuses the compilation, and a dropped function frees its entry.
_FORWARD_CACHE: "weakref.WeakKeyDictionary[Callable, Callable]" = (
    weakref.WeakKeyDictionary())


def _ensemble_forward(apply_fn: Callable) -> Callable:
  """One jitted vmapped forward per ``apply_fn`` object."""
  forward = _FORWARD_CACHE.get(apply_fn)
  if forward is None:
    forward = jax.jit(jax.vmap(apply_fn, in_axes=(0, None)))
    _FORWARD_CACHE[apply_fn] = forward
  return forward
