"""divlab: divergence-based learning in JAX.

`import divlab as dl` gives the pure-function core eagerly (`dl.divergences`,
`dl.losses`); the heavier shared layers (`dl.train`, `dl.data`, `dl.models`,
`dl.eval`, `dl.diffusion`) are imported on first attribute access so that the
core stays cheap to import in a notebook or a unit test.
"""
import importlib

from divlab import divergences
from divlab import losses

__version__ = "0.1.0"

_LAZY_SUBPACKAGES = ("train", "data", "models", "eval", "diffusion")


def __getattr__(name):
  if name in _LAZY_SUBPACKAGES:
    return importlib.import_module(f"divlab.{name}")
  raise AttributeError(f"module 'divlab' has no attribute {name!r}")


__all__ = ["divergences", "losses", *_LAZY_SUBPACKAGES, "__version__"]
