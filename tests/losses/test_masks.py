"""The two meanings of a mask: examples in the losses, classes in the divergences.

A loss's ``where`` has the batch shape exactly (or ``[..., 1]``); its class mask
is ``class_where``. A divergence's ``where`` masks classes. These tests pin
the shapes each accepts, refuse the ambiguous case, and check a hard label in
an excluded class (ValueError when concrete, NaN under jit).
"""
import jax
import jax.numpy as jnp
import numpy as np
from scipy import special
import pytest

from divlab import divergences
from divlab import losses
from divlab.losses import distillation

_RNG = np.random.default_rng(3)
S = _RNG.normal(size=(4, 3)).astype(np.float32)
T = _RNG.normal(size=(4, 3)).astype(np.float32)
Y = np.array([0, 2, 1, 2])
EXAMPLES = np.array([1, 0, 1, 1], bool)


def _np_kd(s, t, y, alpha, temperature=1.0):
  """(1 - a) CE + a T^2 KL(softmax(t/T) || softmax(s/T)) per row, float64."""
  s, t = s.astype(np.float64), t.astype(np.float64)
  ls, lt = special.log_softmax(s / temperature, -1), special.log_softmax(t / temperature, -1)
  soft = (np.exp(lt) * (lt - ls)).sum(-1) * temperature ** 2
  if alpha == 1.0:
    return soft
  hard = -np.take_along_axis(special.log_softmax(s, -1), y[:, None], -1)[:, 0]
  return (1 - alpha) * hard + alpha * soft


@pytest.fixture(scope="module")
def kd_jit():
  return jax.jit(distillation.kd, static_argnames="reduction")


@pytest.mark.parametrize("shape", [(4,), (4, 1)])
def test_example_mask_of_batch_shape_or_keepdims(kd_jit, shape):
  got = kd_jit(S, T, Y, alpha=0.5, where=EXAMPLES.reshape(shape), reduction="mean")
  expected = _np_kd(S[EXAMPLES], T[EXAMPLES], Y[EXAMPLES], 0.5).mean()
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)


@pytest.mark.parametrize("shape", [(1,), (1, 4), (4, 3), (3,)])
def test_loss_where_of_another_shape_is_refused(shape):
  with pytest.raises(ValueError, match="`where`"):
    distillation.kd(S, T, Y, alpha=0.5, where=np.ones(shape, bool))


def test_class_mask_as_where_when_batch_equals_classes_is_refused():
  s, t, y = S[:3], T[:3], Y[:3]  # batch 3 == 3 classes
  class_mask = np.array([1, 1, 0], bool)
  with pytest.raises(ValueError, match="ambiguous"):
    distillation.kd(s, t, y, alpha=0.5, where=class_mask)
  # Written unambiguously, each reading is accepted and means what it says.
  as_examples = distillation.kd(s, t, y, alpha=1.0, where=class_mask[:, None])
  np.testing.assert_allclose(np.asarray(as_examples),
                             np.where(class_mask, _np_kd(s, t, y, 1.0), 0), rtol=1e-5)
  as_classes = distillation.kd(s, t, alpha=1.0, class_where=class_mask)
  expected = _np_kd(s[:, :2], t[:, :2], y, 1.0)
  np.testing.assert_allclose(np.asarray(as_classes), expected, rtol=1e-5)


def test_divergence_where_is_a_class_mask():
  class_mask = np.array([1, 0, 1], bool)
  got = divergences.kl(T, S, where=class_mask)
  # atol: a small KL is a difference of O(1) float32 terms (6e-8 apart on an H200).
  np.testing.assert_allclose(np.asarray(got), _np_kd(S[:, [0, 2]], T[:, [0, 2]], Y, 1.0),
                             rtol=1e-5, atol=2e-7)


def test_label_in_an_excluded_class_is_refused_when_concrete():
  class_mask = np.array([1, 1, 0], bool)  # Y holds class 2
  with pytest.raises(ValueError, match="`labels`.*class 2"):
    distillation.kd(S, T, Y, alpha=0.5, class_where=class_mask)


def test_label_in_an_excluded_class_is_nan_under_jit(kd_jit):
  class_mask = np.array([1, 1, 0], bool)
  got = np.asarray(kd_jit(S, T, Y, alpha=0.5, class_where=class_mask))
  assert np.all(np.isnan(got[Y == 2])), got
  kept = Y != 2
  expected = _np_kd(S[kept][:, :2], T[kept][:, :2], Y[kept], 0.5)
  np.testing.assert_allclose(got[kept], expected, rtol=1e-5)


def test_padded_position_may_hold_a_label_of_an_excluded_class():
  class_mask = np.array([1, 1, 0], bool)
  padded = Y != 2
  got = distillation.kd(S, T, Y, alpha=0.5, where=padded, class_where=class_mask)
  np.testing.assert_array_equal(np.asarray(got)[~padded], 0.0)
  expected = _np_kd(S[padded][:, :2], T[padded][:, :2], Y[padded], 0.5)
  np.testing.assert_allclose(np.asarray(got)[padded], expected, rtol=1e-5)


def test_cross_entropy_where_follows_the_same_rule():
  ce = losses.softmax_cross_entropy
  got = ce(S, Y, where=EXAMPLES, reduction="mean")
  expected = _np_kd(S[EXAMPLES], T[EXAMPLES], Y[EXAMPLES], 0.0).mean()
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)
  with pytest.raises(ValueError, match="ambiguous"):
    ce(S[:3], Y[:3], where=np.array([1, 1, 0], bool))
  with pytest.raises(ValueError, match="`where`"):
    ce(S, Y, where=np.ones((1, 4), bool))
