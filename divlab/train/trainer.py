"""Building blocks an experiment composes: optimizer, state, one model's run.

An experiment says *what* to optimise (a pure ``loss_fn(params, batch, rng)``)
and *what* to measure; :func:`train_model` does the rest with the shared layer:
mesh, jitted data-parallel step, loader, checkpoints, metrics, resume. A finished
run leaves ``model.json`` + ``checkpoints/`` in its workdir, so
:func:`load_model` can give the trained model back by path (the distillation
family loads its teacher this way).
"""
from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from divlab import models as models_lib
from divlab.train import loop
from divlab.train import metrics as metrics_lib
from divlab.train import parallel
from divlab.train.checkpoint import Checkpointer
from divlab.train.state import TrainState

PyTree = Any


def make_optimizer(config: ml_collections.ConfigDict,
                   num_steps: int) -> optax.GradientTransformation:
  """Builds the optax optimizer an ``optimizer`` config block describes.

  Args:
    config: the ``optimizer`` block. Keys (all optional): ``name`` in
      {"adam" (default), "adamw", "sgd"}; ``learning_rate`` (default 1e-3,
      > 0); ``schedule`` in {"constant" (default), "cosine"};
      ``warmup_steps`` (linear warm-up from 0, default 0); ``weight_decay``
      (adamw only, default 0); ``momentum`` (sgd only, default 0.9);
      ``grad_clip`` (global-norm clipping, default 0 = off).
    num_steps: the run's length, the horizon of the cosine decay.

  Returns:
    An ``optax.GradientTransformation``.
  """
  name = config.get("name", "adam")
  lr = float(config.get("learning_rate", 1e-3))
  if lr <= 0:
    raise ValueError(f"`optimizer.learning_rate` must be positive, got {lr}.")
  schedule_name = config.get("schedule", "constant")
  warmup = int(config.get("warmup_steps", 0))
  if schedule_name == "constant":
    schedule = (optax.linear_schedule(0.0, lr, warmup) if warmup else lr)
    if warmup:
      schedule = optax.join_schedules([schedule, optax.constant_schedule(lr)], [warmup])
  elif schedule_name == "cosine":
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(num_steps, warmup + 1))
  else:
    raise ValueError(f"`optimizer.schedule`={schedule_name!r}: use 'constant' or 'cosine'.")
  weight_decay = float(config.get("weight_decay", 0.0))
  if name == "adam":
    tx = optax.adam(schedule)
  elif name == "adamw":
    tx = optax.adamw(schedule, weight_decay=weight_decay)
  elif name == "sgd":
    tx = optax.sgd(schedule, momentum=config.get("momentum", 0.9) or None)
  else:
    raise ValueError(f"`optimizer.name`={name!r}: use 'adam', 'adamw' or 'sgd'.")
  clip = config.get("grad_clip", 0.0)
  if clip:
    tx = optax.chain(optax.clip_by_global_norm(float(clip)), tx)
  return tx


def init_params(model, sample_x: np.ndarray, seed: int) -> PyTree:
  """Initialises linen parameters on one example batch (host arrays)."""
  variables = model.init(jax.random.key(seed), jnp.asarray(sample_x[:1]))
  return variables["params"]


def create_state(params: PyTree, tx: optax.GradientTransformation, seed: int,
                 mesh: jax.sharding.Mesh) -> TrainState:
  """A TrainState at step 0, replicated over the mesh.

  Args:
    params: the initial parameters (a pytree).
    tx: the optax optimizer; its state is initialised here.
    seed: the run's seed; the per-step PRNG keys derive from ``seed + 1``
      (``seed`` itself initialises the parameters).
    mesh: the device mesh the state is replicated on.

  Returns:
    A :class:`TrainState` with ``step`` 0, ready for ``make_train_step``.
  """
  state = TrainState.create(params=params, tx=tx,
                            rng=jax.random.key_data(jax.random.key(seed + 1)))
  return parallel.replicate(state, mesh)


def classification_metrics(apply_fn: Callable) -> Callable:
  """Per-example ``accuracy`` and ``loss`` (cross-entropy) of a classifier."""
  from divlab.losses import softmax_cross_entropy  # pylint: disable=g-import-not-at-top

  def per_example(params, batch):
    logits = apply_fn({"params": params}, batch["x"])
    return {"accuracy": (jnp.argmax(logits, -1) == batch["y"]).astype(jnp.float32),
            "loss": softmax_cross_entropy(logits, batch["y"])}

  return per_example


def run_config(*, batch_size: int, optimizer: Mapping[str, Any], num_steps: int,
               log_every: int = 100, eval_every: int = 0,
               checkpoint_every: int = 1000, keep_checkpoints: int = 1,
               steps_per_call: Optional[int] = None,
               progress: bool = True) -> ml_collections.ConfigDict:
  """Builds every config key :func:`train_model` reads, with their defaults.

  Use it to call :func:`train_model` from your own code (or for a model an
  experiment trains on the side, such as a teacher) without writing a config
  file. ``log_every`` and ``checkpoint_every`` are capped at ``num_steps`` so
  short (smoke) runs still log and checkpoint.

  Args:
    batch_size: global batch size (``data.batch_size``), divisible by the
      number of devices.
    optimizer: the ``optimizer`` block, read by :func:`make_optimizer` (e.g.
      ``{"name": "adam", "learning_rate": 1e-3}``).
    num_steps: ``train.num_steps``, the total number of optimizer steps.
    log_every: ``train.log_every``: write ``train_*`` metrics this often.
    eval_every: ``train.eval_every``: evaluate this often (0: only at the end).
    checkpoint_every: ``train.checkpoint_every``.
    keep_checkpoints: ``train.keep_checkpoints``, how many to keep.
    steps_per_call: ``train.steps_per_call``, the most optimizer steps per
      dispatch (None: ``loop.default_steps_per_call()`` for the backend).
      Results do not depend on it.
    progress: ``progress``, whether to draw a progress bar (on stderr).

  Returns:
    A ``ConfigDict`` with ``data``, ``optimizer``, ``train`` and ``progress``.

  Example:
    >>> config = run_config(batch_size=32, optimizer={"name": "adam"}, num_steps=50)
    >>> config.train.checkpoint_every, config.train.keep_checkpoints
    (50, 1)
  """
  num_steps = int(num_steps)
  return ml_collections.ConfigDict({
      "data": {"batch_size": int(batch_size)},
      "optimizer": dict(optimizer),
      "train": {"num_steps": num_steps, "log_every": max(1, min(log_every, num_steps)),
                "eval_every": int(eval_every),
                "checkpoint_every": max(1, min(checkpoint_every, num_steps)),
                "keep_checkpoints": int(keep_checkpoints),
                "steps_per_call": None if steps_per_call is None else int(steps_per_call)},
      "progress": bool(progress)})


def train_model(*,
                workdir: str | pathlib.Path,
                config: ml_collections.ConfigDict,
                model,
                model_spec: Optional[Mapping[str, Any]] = None,
                loss_fn: Optional[Callable] = None,
                train_arrays: Mapping[str, np.ndarray],
                eval_sets: Mapping[str, Mapping[str, np.ndarray]],
                per_example_metrics: Callable,
                seed: int,
                params: Optional[PyTree] = None,
                mesh: Optional[jax.sharding.Mesh] = None,
                train_step: Optional[Callable] = None,
                eval_step: Optional[Callable] = None,
                tx: Optional[optax.GradientTransformation] = None,
                desc: str = "train") -> tuple[PyTree, dict]:
  """Trains one model in its own workdir with the shared layer; resumable.

  Args:
    workdir: this model's run directory.
    config: a ``ConfigDict``; :func:`run_config` builds one with every key.
      Required: ``data.batch_size`` (global), ``train.num_steps`` and, unless
      ``tx`` is given, the ``optimizer`` block (:func:`make_optimizer`); a
      missing one is a ValueError naming it. Optional, with run_config's
      defaults: ``train.log_every`` (100), ``train.eval_every`` (0: at the
      end only), ``train.checkpoint_every`` (1000), both capped at
      ``num_steps``; ``train.keep_checkpoints`` (1); ``train.steps_per_call``
      (None: the backend's default, see ``loop.fit``); for the grain loader
      ``data.num_workers`` (worker processes, 0), ``data.batches_per_element``
      (1) and ``data.cache_mb`` (decoded records kept in memory, 0; >= 0);
      ``eval_batch_size`` (about 512, a multiple of the device count);
      ``progress`` (True; the bar goes to stderr).
    model: a linen module whose ``init(key, x)`` takes a batch of ``x`` (used
      only when ``params`` is None).
    model_spec: optional ``{"name", "num_outputs", **kwargs}`` for
      ``divlab.models.build``, saved as ``model.json`` so that
      :func:`load_model` can rebuild a divlab model from the path alone. Leave
      it None for your own module and pass it to ``load_model(path, model=)``.
    loss_fn: pure ``loss_fn(params, batch, rng) -> (loss, aux)``; give it
      or ``train_step``.
    train_arrays: the training split: arrays (``x``, ``y``, ...) or the
      lazy split ``data.open_split`` returns for the grain loader.
    eval_sets: ``{split_name: arrays}`` evaluated every ``train.eval_every``
      steps and at the end; metrics logged as ``<split>_<metric>``.
    per_example_metrics: ``fn(params, batch) -> {name: [B] values}``.
    seed: seeds initialisation, shuffling and step keys.
    params: initial parameters (default: fresh ``model.init``).
    mesh: the device mesh (default: all devices).
    train_step: a step from ``parallel.make_train_step(loss_fn, mesh)`` to
      reuse (e.g. across seeds of one method, or across a loss weight bound
      with ``step.with_loss_args``, to compile once); built from ``loss_fn``
      when None.
    eval_step: likewise, from ``loop.make_eval_step(per_example_metrics, mesh)``.
    tx: the optimizer (default: ``make_optimizer(config.optimizer, ...)``).
      ``TrainState.tx`` is static, so a reused ``train_step`` compiles once
      only if every run passes the *same* optax object: build it once per
      method and pass it here.
    desc: progress-bar label.

  Returns:
    ``(params, final_metrics)`` with ``final_metrics`` keyed like the log
    (``<split>_<metric>``). ``metrics.jsonl`` in ``workdir`` also holds the
    training scalars with a ``train_`` prefix (see :func:`loop.fit`).
  """
  from divlab import data  # pylint: disable=g-import-not-at-top
  if (loss_fn is None) == (train_step is None):
    raise ValueError("give exactly one of `loss_fn` and `train_step`.")
  mesh = parallel.make_mesh() if mesh is None else mesh
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if model_spec is not None:
    metrics_lib.write_json(workdir / "model.json", dict(model_spec), indent=2)
  batch_size = int(_required(config, "data.batch_size"))
  parallel.check_batch_size(batch_size, mesh)
  num_steps = int(_required(config, "train.num_steps"))
  # The optional keys take run_config's defaults, so a hand-written config
  # needs only the required ones.
  defaults = run_config(batch_size=batch_size, optimizer={}, num_steps=num_steps).train
  train_config = config.get("train")
  train_keys = {k: int(train_config.get(k, defaults[k])) for k in
                ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints")}
  if tx is None:
    tx = make_optimizer(_required(config, "optimizer"), num_steps)
  if params is None:
    params = init_params(model, data.first_examples(train_arrays)["x"], seed)
  state = create_state(params, tx, seed, mesh)
  step = train_step or parallel.make_train_step(loss_fn, mesh)
  # In-memory arrays get the numpy Loader, a lazy split (data.open_split) grain.
  loader = data.make_loader(
      train_arrays, batch_size, seed=seed,
      num_workers=int(config.data.get("num_workers", 0)),
      batches_per_element=int(config.data.get("batches_per_element", 1)),
      cache_bytes=_cache_bytes(config.data.get("cache_mb", 0)))
  eval_step = eval_step or loop.make_eval_step(per_example_metrics, mesh)
  eval_batch = int(config.get("eval_batch_size", 0) or 0) or _eval_batch_size(mesh)

  def eval_fn(state):
    out = {}
    for split, arrays in eval_sets.items():
      values = loop.evaluate(eval_step, state.params, arrays, eval_batch, mesh)
      out.update({f"{split}_{k}": v for k, v in values.items()})
    return out

  state, final = loop.fit(
      workdir=workdir, state=state, train_step=step, loader=loader, mesh=mesh,
      num_steps=num_steps, eval_fn=eval_fn, **train_keys,
      steps_per_call=train_config.get("steps_per_call"),
      progress=bool(config.get("progress", True)), desc=desc)
  return jax.device_get(state.params), final


def _cache_bytes(cache_mb: Any) -> int:
  """``data.cache_mb`` in bytes, or a ValueError naming the key."""
  if float(cache_mb) < 0:
    raise ValueError(f"`data.cache_mb` must be >= 0, got {cache_mb}.")
  return int(float(cache_mb) * 2**20)


def _required(config: ml_collections.ConfigDict, dotted_key: str) -> Any:
  """``config[a][b]`` for "a.b", or a ValueError naming the missing key."""
  node = config
  for part in dotted_key.split("."):
    if not hasattr(node, "get") or node.get(part) is None:
      raise ValueError(f"config key `{dotted_key}` is missing; train_model needs "
                       "it (run_config builds a complete config).")
    node = node.get(part)
  return node


def _eval_batch_size(mesh: jax.sharding.Mesh) -> int:
  n = mesh.shape[parallel.DATA_AXIS]
  return max(n, (512 // n) * n)


def load_model(path: str | pathlib.Path, model=None) -> tuple[Any, PyTree]:
  """Loads ``(model, params)`` from a run directory written by train_model.

  The newest checkpoint that passes its checksums is read onto the current
  devices (replicated), whatever the number of devices or processes that
  saved it: a teacher trained on 8 devices loads on 1.

  Args:
    path: the model's run directory (holding ``checkpoints/``, and
      ``model.json`` when it was trained with a ``model_spec``).
    model: the linen module the run trained, for your own module (a run
      without ``model.json``); None rebuilds it from ``model.json``.

  Returns:
    ``(model, params)``: the linen module (``model`` itself when given) and
    its parameters as arrays replicated over all current devices.

  Example:
    ``model, params = load_model("workdir/teacher")`` for a divlab model, or
    ``_, params = load_model("workdir/mine", model=MyModule())``.
  """
  path = pathlib.Path(path)
  spec_path = path / "model.json"
  if model is None:
    if not spec_path.exists():
      raise ValueError(
          f"`path`={str(path)!r} holds no model.json (a run of your own module "
          "trains without a model_spec): pass the module as `model=`.")
    model = models_lib.build(**json.loads(spec_path.read_text()))
  if not (path / "checkpoints").is_dir():
    raise ValueError(f"`path`={str(path)!r} holds no checkpoints/ folder.")
  checkpointer = Checkpointer(path / "checkpoints")
  try:
    state = checkpointer.restore_raw_state()
  finally:
    checkpointer.close()
  return model, state["params"]
