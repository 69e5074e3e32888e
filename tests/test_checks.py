"""Argument checks: open/closed ends, infinities and NaN."""
import math

import pytest

from divlab import _checks


@pytest.mark.parametrize("value, kwargs", [
    (math.inf, {"high_inclusive": False}),
    (math.nan, {}),
    (-0.1, {}),
    (1.0, {"high_inclusive": False}),
    (0.0, {"low_inclusive": False}),
])
def test_check_in_range_rejects(value, kwargs):
  high = math.inf if value == math.inf else 1.0
  with pytest.raises(ValueError, match="`arg` must lie in"):
    _checks.check_in_range(value, "arg", 0.0, high, **kwargs)


@pytest.mark.parametrize("value, high, kwargs", [
    (math.inf, math.inf, {}),
    (1.0, 1.0, {}),
    (0.0, 1.0, {}),
    (1e9, math.inf, {"high_inclusive": False}),
])
def test_check_in_range_accepts(value, high, kwargs):
  _checks.check_in_range(value, "arg", 0.0, high, **kwargs)


def test_sliced_wasserstein_refuses_infinite_order():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from divlab.divergences import sliced_wasserstein  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="`p`"):
    sliced_wasserstein(jnp.zeros((3, 2)), jnp.ones((3, 2)), jax.random.key(0), p=math.inf)
