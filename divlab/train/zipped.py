"""Several batch streams served together, e.g. a forget and a retain stream.

Unlearning objectives (GradDiff, NPO+RT, GU, oracle matching) need, at every
step, a batch of forget examples *and* a batch of retain examples. The two
sets differ in size, so they cannot share one ``divlab.data.Loader``; each
gets its own loader (own batch size, own epochs) and :class:`ZippedLoader`
serves ``{name: batch}`` with one checkpointable position.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

__all__ = ["ZippedLoader"]


class ZippedLoader:
  """Draws one batch from each named loader per step: ``{name: batch}``.

  Every stream keeps its own order and epochs (the smaller one simply cycles
  faster). ``parallel.shard_batch`` maps over the nested dict, so a zipped
  batch shards like a flat one, provided every stream's leading axis is the
  example axis.

  Example::

    loader = ZippedLoader({"forget": Loader(forget, 32, seed=0),
                           "retain": Loader(retain, 32, seed=0)})
    batch = next(loader)   # {"forget": {"x", "y"}, "retain": {"x", "y"}}

  Args:
    loaders: ``{name: loader}``; each loader is an iterator with
      ``get_state``/``set_state`` (``divlab.data.Loader``,
      ``divlab.train.ensemble.EnsembleLoader``, or another ZippedLoader).

  Raises:
    ValueError: no loaders, or one without ``get_state``/``set_state``.
  """

  def __init__(self, loaders: Mapping[str, Any]):
    if not isinstance(loaders, Mapping) or not loaders:
      raise ValueError("`loaders` must be a non-empty {name: loader} dict.")
    for name, loader in loaders.items():
      if not (hasattr(loader, "get_state") and hasattr(loader, "set_state")):
        raise ValueError(f"loader {name!r} has no get_state/set_state, so the "
                         "zipped position could not be checkpointed.")
    self._loaders = dict(loaders)
    self._iterators = {name: iter(loader) for name, loader in self._loaders.items()}

  def __iter__(self) -> Iterator[dict[str, Any]]:
    return self

  def __next__(self) -> dict[str, Any]:
    return {name: next(iterator) for name, iterator in self._iterators.items()}

  def get_state(self) -> dict[str, Any]:
    """``{name: that loader's state}``, JSON-serialisable."""
    return {name: loader.get_state() for name, loader in self._loaders.items()}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Restores every stream's position from :meth:`get_state`'s output."""
    if not isinstance(state, Mapping) or set(state) != set(self._loaders):
      raise ValueError(f"`state` must hold the streams {sorted(self._loaders)}, "
                       f"got {state!r:.200}.")
    for name, loader in self._loaders.items():
      loader.set_state(state[name])
