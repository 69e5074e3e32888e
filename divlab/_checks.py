"""Argument checks shared by the pure functions.

Every check runs at trace time on static information (shapes, dtypes, Python
numbers), so a bad call fails with a ValueError naming the argument before any
computation, and the checks cost nothing inside `jit`.
"""
from __future__ import annotations

import numbers
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete_number(value: Any) -> bool:
  """True for Python/numpy scalars and concrete (non-traced) 0-d arrays."""
  if isinstance(value, numbers.Number):
    return True
  if isinstance(value, np.ndarray) and value.ndim == 0:
    return True
  if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
    return value.ndim == 0
  return False


def check_positive(value: Any, name: str) -> None:
  """Raises ValueError unless `value` is a scalar that is > 0 when concrete.

  A traced scalar passes; a string, None or an array of rank > 0 does not
  (see `check_scalar`).
  """
  check_scalar(value, name)
  if is_concrete_number(value) and not float(value) > 0:
    raise ValueError(f"`{name}` must be positive, got {value!r}.")


def check_positive_finite(value: Any, name: str) -> None:
  """Raises ValueError unless `value` is a scalar in (0, inf) when concrete.

  For divisors such as a softmax temperature, where inf is as wrong as 0.
  A traced scalar passes (see `check_scalar`).
  """
  check_in_range(value, name, 0.0, np.inf, low_inclusive=False, high_inclusive=False)


def check_in_range(value: Any, name: str, low: float, high: float,
                   *, low_inclusive: bool = True,
                   high_inclusive: bool = True) -> None:
  """Raises ValueError unless `value` is a scalar in [low, high] when concrete.

  A traced scalar passes; a string, None or an array of rank > 0 does not
  (see `check_scalar`).
  """
  check_scalar(value, name)
  if not is_concrete_number(value):
    return
  v = float(value)
  ok_low = v >= low if low_inclusive else v > low
  ok_high = v <= high if high_inclusive else v < high
  # An infinite value is allowed only as an inclusive infinite upper end.
  allowed_inf = high_inclusive and v == high == np.inf
  if not ((ok_low and ok_high and np.isfinite(v)) or allowed_inf):
    lb = "[" if low_inclusive else "("
    rb = "]" if high_inclusive else ")"
    raise ValueError(f"`{name}` must lie in {lb}{low}, {high}{rb}, got {value!r}.")


def check_same_shape(a: jax.typing.ArrayLike, b: jax.typing.ArrayLike,
                     name_a: str, name_b: str) -> None:
  """Raises ValueError unless `a` and `b` have exactly the same shape."""
  sa, sb = jnp.shape(a), jnp.shape(b)
  if sa != sb:
    raise ValueError(
        f"`{name_a}` and `{name_b}` must have the same shape, got {sa} and {sb}.")


def broadcast_mask(mask: Optional[jax.typing.ArrayLike], shape: tuple[int, ...],
                   name: str) -> Optional[jax.Array]:
  """Broadcasts a boolean mask to `shape`; a mask that does not fit is refused.

  Only the mask may broadcast (a `[B]` mask over `[B]` values, a `[1, T]` one
  over `[B, T]`); one that would enlarge `shape` raises ValueError naming it,
  and so does a floating-point mask (see `check_mask_dtype`).
  """
  if mask is None:
    return None
  mask = jnp.asarray(mask)
  check_mask_dtype(mask, name)
  try:
    fits = jnp.broadcast_shapes(mask.shape, shape) == tuple(shape)
  except ValueError:
    fits = False
  if not fits:
    raise ValueError(f"`{name}` of shape {mask.shape} does not broadcast to "
                     f"{tuple(shape)}.")
  return jnp.broadcast_to(mask.astype(bool), shape)



def example_mask(where: Optional[jax.typing.ArrayLike],
                 logits_shape: tuple[int, ...],
                 name: str = "where") -> Optional[jax.Array]:
  """A loss's per-example mask for logits ``[..., C]``, as a ``[...]`` array.

  In the losses ``where`` marks examples (positions), while in the divergences
  it marks classes (entries of the distribution). So that a class mask can never
  be read as an example mask, the shape must be exact: ``[...]`` (the logits
  without the class axis) or ``[..., 1]``. No other broadcasting is done. When
  the last batch axis has the size of the class axis (``B == C``), a ``[...]``
  mask could be either, so only the ``[..., 1]`` form is accepted there.

  Args:
    where: None, or a boolean mask of shape ``[...]`` or ``[..., 1]``.
    logits_shape: the logits' shape ``[..., C]``.
    name: the argument's name for the error message.

  Returns:
    None, or the mask as a boolean array of shape ``[...]``.
  """
  if where is None:
    return None
  where = jnp.asarray(where)
  check_mask_dtype(where, name)
  batch_shape, num_classes = tuple(logits_shape[:-1]), logits_shape[-1]
  keepdims_shape = batch_shape + (1,)
  if where.shape == keepdims_shape:
    return where[..., 0].astype(bool)
  if where.shape != batch_shape:
    raise ValueError(
        f"`{name}` marks examples: it must have shape {batch_shape} or "
        f"{keepdims_shape} (logits {tuple(logits_shape)} without the class "
        f"axis), got {where.shape}. A class mask goes to `class_where`.")
  if batch_shape and batch_shape[-1] == num_classes:
    raise ValueError(
        f"`{name}` of shape {where.shape} is ambiguous: the batch axis and the "
        f"class axis both have size {num_classes}. Pass the example mask with "
        f"shape {keepdims_shape}, or a class mask as `class_where`.")
  return where.astype(bool)


def check_mask_dtype(mask: jax.typing.ArrayLike, name: str) -> None:
  """Raises ValueError unless `mask` is boolean or integer (0/1 flags).

  A float mask is refused rather than cast: ``0.5`` would silently count as
  True, and a float array in a mask argument is usually a weight or a loss
  passed in the wrong place.
  """
  dtype = jnp.result_type(mask)
  if not (dtype == jnp.bool_ or jnp.issubdtype(dtype, jnp.integer)):
    raise ValueError(f"`{name}` must be a boolean (or integer 0/1) mask, got "
                     f"dtype {dtype}.")


def check_integer(x: jax.typing.ArrayLike, name: str) -> None:
  """Raises ValueError unless `x` has an integer dtype (labels, ids, tokens)."""
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise ValueError(f"`{name}` must have an integer dtype, got {dtype}.")


def check_scalar(value: Any, name: str) -> None:
  """Raises ValueError unless `value` is a 0-d number (concrete or traced).

  A string or None (say a config value left unset or unparsed) is refused
  here rather than failing later inside the arithmetic.
  """
  if not isinstance(value, numbers.Number) and not hasattr(value, "dtype"):
    raise ValueError(f"`{name}` must be a number, got {value!r}.")
  if jnp.ndim(value) != 0:
    raise ValueError(f"`{name}` must be a scalar, got shape {jnp.shape(value)}.")


def check_count(value: Any, name: str, minimum: int = 1) -> None:
  """Raises ValueError unless `value` is a Python (or numpy) int >= `minimum`.

  For sizes and iteration counts, which fix array shapes or loop lengths and
  so must be concrete: a bool, a float such as 2.0 or a traced value is refused.
  """
  if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral)
      or value < minimum):
    raise ValueError(f"`{name}` must be a Python int >= {minimum}, got {value!r}.")


def check_floating(x: jax.typing.ArrayLike, name: str) -> None:
  """Raises ValueError unless `x` has a floating dtype."""
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise ValueError(f"`{name}` must have a floating dtype, got {jnp.result_type(x)}.")


def canonical_axis(axis: int, ndim: int, name: str = "axis") -> int:
  """Returns `axis` as a non-negative index, with a clear error if out of range."""
  if not -ndim <= axis < ndim:
    raise ValueError(f"`{name}`={axis} is out of range for an array of rank {ndim}.")
  return axis % ndim


def as_samples(x: jax.typing.ArrayLike, name: str) -> jax.Array:
  """Returns samples as `[n, d]`: a 1-D array is read as n scalar samples.

  Anything else than rank 1 or 2 is refused rather than silently reshaped.
  """
  x = jnp.asarray(x)
  if x.ndim == 1:
    return x[:, None]
  if x.ndim != 2:
    raise ValueError(
        f"`{name}` must be samples of shape [n, d] or [n], got shape {x.shape}.")
  return x
