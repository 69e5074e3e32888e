"""Argument checks: open/closed ends, infinities and NaN."""
import math

import numpy as np
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


@pytest.mark.parametrize("value, message", [
    ("0.5", "must be a number"), (None, "must be a number"),
    (np.array([0.5, 0.5]), "must be a scalar"),
])
@pytest.mark.parametrize("check", [
    lambda value: _checks.check_positive(value, "arg"),
    lambda value: _checks.check_in_range(value, "arg", 0.0, 1.0),
    lambda value: _checks.check_positive_finite(value, "arg"),
], ids=["check_positive", "check_in_range", "check_positive_finite"])
def test_range_checks_refuse_what_is_not_a_scalar(check, value, message):
  # A range check that let an array or a string through unchecked would pass
  # it on to the arithmetic (a wrong-shaped loss, or a TypeError deep inside).
  with pytest.raises(ValueError, match=f"`arg` {message}"):
    check(value)


def test_range_checks_let_traced_scalars_through():
  import jax  # pylint: disable=g-import-not-at-top
  jax.jit(lambda x: (_checks.check_positive(x, "arg"),
                     _checks.check_in_range(x, "arg", 0.0, 1.0),
                     _checks.check_positive_finite(x, "arg"), x)[-1])(-3.0)


@pytest.mark.parametrize("value", [0.0, -1.0, np.inf, -np.inf, np.nan])
def test_check_positive_finite_rejects(value):
  with pytest.raises(ValueError, match=r"`temperature` must lie in \(0.0, inf\)"):
    _checks.check_positive_finite(value, "temperature")


@pytest.mark.parametrize("value", [1e-30, 0.5, 1e30, np.float32(2.0)])
def test_check_positive_finite_accepts(value):
  _checks.check_positive_finite(value, "temperature")


def test_sliced_wasserstein_refuses_infinite_order():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from divlab.divergences import sliced_wasserstein  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="`p`"):
    sliced_wasserstein(jnp.zeros((3, 2)), jnp.ones((3, 2)), jax.random.key(0), p=math.inf)


@pytest.mark.parametrize("mask_shape, logits_shape", [
    ((4,), (4, 3)), ((4, 1), (4, 3)), ((2, 5), (2, 5, 7)), ((2, 5, 1), (2, 5, 7)),
    ((), (3,)),
])
def test_example_mask_accepts_the_batch_shape_or_keepdims(mask_shape, logits_shape):
  mask = np.arange(int(np.prod(mask_shape))).reshape(mask_shape) % 2 == 0
  got = _checks.example_mask(mask, logits_shape)
  assert got.shape == logits_shape[:-1] and got.dtype == bool
  np.testing.assert_array_equal(np.asarray(got), mask.reshape(logits_shape[:-1]))


@pytest.mark.parametrize("mask_shape, logits_shape, message", [
    ((5,), (2, 5, 7), "must have shape"),      # would broadcast over the batch
    ((1,), (4, 3), "must have shape"),
    ((4, 3), (4, 3), "must have shape"),       # a per-entry (class) mask
    ((3,), (3, 3), "ambiguous"),               # B == C: class or example?
    ((2, 7), (2, 7, 7), "ambiguous"),
])
def test_example_mask_refuses_broadcasting_and_ambiguity(mask_shape, logits_shape, message):
  with pytest.raises(ValueError, match=message):
    _checks.example_mask(np.ones(mask_shape, bool), logits_shape)
  assert _checks.example_mask(None, logits_shape) is None


@pytest.mark.parametrize("value", [True, np.bool_(True), 2.0, "3", None, 0, -1,
                                   np.array(3)])
def test_check_count_rejects(value):
  with pytest.raises(ValueError, match=r"`num_iters` must be a Python int >= 1"):
    _checks.check_count(value, "num_iters")


@pytest.mark.parametrize("value, minimum", [(1, 1), (np.int64(7), 1), (0, 0)])
def test_check_count_accepts(value, minimum):
  _checks.check_count(value, "num_iters", minimum=minimum)
