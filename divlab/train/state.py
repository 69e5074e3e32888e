"""The one train state every experiment uses."""
from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue bit-identically.

  Attributes:
    step: number of optimizer updates applied so far (int32 scalar).
    params: the trainable parameters (a pytree, e.g. linen ``variables["params"]``).
    opt_state: the optax state of ``tx``.
    rng: the run's base PRNG key; the key of step ``s`` is ``fold_in(rng, s)``,
      so randomness depends only on the step, never on how often a run resumed.
    model_state: non-trainable mutable collections (e.g. ``batch_stats``); an
      empty dict for models without any.
    tx: the optax transformation (static: not saved, rebuilt from the config).
  """
  step: jax.Array
  params: PyTree
  opt_state: optax.OptState
  rng: jax.Array
  model_state: PyTree
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, *, params: PyTree, tx: optax.GradientTransformation,
             rng: jax.Array, model_state: PyTree | None = None) -> "TrainState":
    """Builds the state at step 0 (``rng`` is a raw uint32 key or a typed key)."""
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               opt_state=tx.init(params), rng=rng,
               model_state={} if model_state is None else model_state, tx=tx)

  def step_rng(self) -> jax.Array:
    """The PRNG key for the current step."""
    return jax.random.fold_in(self.rng, self.step)

  def apply_gradients(self, grads: PyTree, **updates: Any) -> "TrainState":
    """One optimizer update; ``updates`` may replace e.g. ``model_state``."""
    param_updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, param_updates)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state,
                        **updates)


LossFn = Callable[..., tuple[jax.Array, dict]]
