"""Every public function of the core documents itself, and its examples run."""
import doctest
import importlib
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# The categorical and generator modules run their doctests in their own tests.
DOCTESTED_HERE = [
    "divlab.divergences.kernel",
    "divlab.divergences.transport",
    "divlab.divergences.dependence",
    "divlab.divergences.fused",
    "divlab.losses.reductions",
    "divlab.losses.supervised",
    "divlab.losses.distillation",
    "divlab.losses.sequence",
    "divlab.losses.unlearning",
    "divlab.losses.preference",
    "divlab.losses.policy",
    "divlab.losses.bottleneck",
    "divlab.losses.diffusion",
]
DOCUMENTED = ["divlab.divergences.categorical", "divlab.divergences.generators",
              *DOCTESTED_HERE]


def _public_functions(module):
  names = getattr(module, "__all__", None) or [
      n for n, obj in vars(module).items()
      if not n.startswith("_") and getattr(obj, "__module__", None) == module.__name__]
  return [(n, getattr(module, n)) for n in names
          if inspect.isfunction(getattr(module, n))]


@pytest.mark.parametrize("name", DOCUMENTED)
def test_public_functions_have_docstrings_with_args_and_formula(name):
  module = importlib.import_module(name)
  for fn_name, fn in _public_functions(module):
    doc = inspect.getdoc(fn) or ""
    assert len(doc.splitlines()) >= 3, f"{name}.{fn_name} has no real docstring"
    takes_args = len(inspect.signature(fn).parameters) > 0
    if takes_args:
      assert "Args:" in doc or "Returns:" in doc, f"{name}.{fn_name}: no Args/Returns"


# The rest of the library: every function its package exports.
PACKAGES = ["divlab.train", "divlab.data", "divlab.eval", "divlab.models"]


def _exported_functions(package):
  names = getattr(package, "__all__", None) or [
      n for n in vars(package) if not n.startswith("_")]
  return [(n, getattr(package, n)) for n in names
          if inspect.isfunction(getattr(package, n))]


@pytest.mark.parametrize("name", PACKAGES)
def test_exported_functions_document_args_and_returns(name):
  package = importlib.import_module(name)
  functions = _exported_functions(package)
  assert functions, name
  missing = []
  for fn_name, fn in functions:
    doc = inspect.getdoc(fn) or ""
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if len(doc.splitlines()) < 3:
      missing.append(f"{fn_name}: no real docstring")
    elif params and "Args:" not in doc:
      missing.append(f"{fn_name}: no Args:")
    elif ("Returns:" not in doc and "Yields:" not in doc
          and inspect.signature(fn).return_annotation not in (None, "None")):
      missing.append(f"{fn_name}: no Returns:")
  assert not missing, f"{name}: " + "; ".join(missing)


@pytest.mark.parametrize("name", DOCTESTED_HERE)
def test_docstring_examples_run(name):
  module = importlib.import_module(name)
  result = doctest.testmod(module, extraglobs={"jax": jax, "jnp": jnp, "np": np},
                           optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                           verbose=False)
  assert result.failed == 0
  assert result.attempted > 0
