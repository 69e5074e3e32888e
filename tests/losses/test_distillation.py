"""Tests of divlab.losses.distillation against float64 numpy references.

Every reference below is written in plain numpy from the formulas in the
docstrings (and the papers), never by calling divlab.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from jax.test_util import check_grads

from divlab.losses import distillation as dl_kd
from finite_differences import central_differences

RTOL = 2e-5
ATOL = 2e-6


# ----------------------------------------------------------------------------
# numpy float64 references
# ----------------------------------------------------------------------------


def np_log_softmax(z, mask=None):
  z = np.asarray(z, np.float64)
  if mask is not None:
    z = np.where(np.broadcast_to(mask, z.shape), z, -np.inf)
  m = np.max(z, axis=-1, keepdims=True)
  return z - m - np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True))


def np_softmax(z, mask=None):
  return np.exp(np_log_softmax(z, mask))


def np_kl(p_logits, q_logits, mask=None):
  lp, lq = np_log_softmax(p_logits, mask), np_log_softmax(q_logits, mask)
  p = np.exp(lp)
  return np.sum(np.where(p > 0, p * (lp - np.where(p > 0, lq, 0)), 0), axis=-1)


def np_js(p_logits, q_logits, beta=0.5):
  p, q = np_softmax(p_logits), np_softmax(q_logits)
  m = beta * p + (1 - beta) * q
  return np.sum(beta * p * np.log(p / m) + (1 - beta) * q * np.log(q / m), -1)


def np_tv(p_logits, q_logits):
  return 0.5 * np.sum(np.abs(np_softmax(p_logits) - np_softmax(q_logits)), -1)


def np_ce(logits, labels, mask=None):
  lp = np_log_softmax(logits, mask)
  return -np.take_along_axis(lp, np.asarray(labels)[..., None], -1)[..., 0]


def np_kd(s, t, y, temperature, alpha, divergence="kl", beta=0.5):
  ps, pt = np.asarray(s) / temperature, np.asarray(t) / temperature
  soft = {"kl": lambda: np_kl(pt, ps), "rkl": lambda: np_kl(ps, pt),
          "js": lambda: np_js(pt, ps, beta),
          "tv": lambda: np_tv(pt, ps)}[divergence]()
  out = alpha * temperature**2 * soft
  if alpha < 1:
    out = out + (1 - alpha) * np_ce(s, y)
  return out


def np_alpha_terms(p, q, a, clip):
  """AlphaNet f_divergence: (value, rho) with the released branches."""
  r = p / q
  if abs(a) < 1e-3:
    r = np.minimum(r, clip)
    return np.sum(q * -np.log(r), -1), np.log(r) - 1.0
  if abs(a - 1) < 1e-3:
    return np.sum(q * r * np.log(r), -1), r
  ra = np.minimum(r**a, clip)
  base = 1.0 / (a * (a - 1))
  return np.sum(q * (ra * base - base), -1), ra / a + base


def np_alpha_kd(s, t, a_min=-1.0, a_max=1.0, clip=5.0):
  """Returns (value, gradient wrt student logits) of the AlphaNet loss."""
  q, p = np_softmax(s), np_softmax(t)
  v_min, rho_min = np_alpha_terms(p, q, a_min, clip)
  v_max, rho_max = np_alpha_terms(p, q, a_max, clip)
  use_min = v_min > v_max
  value = np.where(use_min, v_min, v_max)
  rho = np.where(use_min[..., None], rho_min, rho_max)
  # d/ds_j of -sum_i q_i rho_i log q_i with q * rho held fixed.
  w = q * rho
  grad = -w + q * np.sum(w, -1, keepdims=True)
  return value, grad


def np_amari(p, q, a):
  return (1 - np.sum(p**a * q**(1 - a), -1)) / (a * (1 - a))


def np_sinkhorn(s, t, temperature=2.0, epsilon=0.1, num_iters=20):
  ps = np_softmax(np.asarray(s) / temperature)
  pt = np_softmax(np.asarray(t) / temperature)
  cost = np.abs(ps[:, None, :] - pt[None, :, :]).sum(-1)
  plan = np.exp(-cost / epsilon)
  for _ in range(num_iters):
    plan = plan / plan.sum(1, keepdims=True)
    plan = plan / plan.sum(0, keepdims=True)
  return cost, plan


def np_pl_loss(s, ranking, weights):
  """sum_k w_k (log sum_{l>=k} exp s_{pi_l} - s_{pi_k}) by explicit loops."""
  s = np.asarray(s, np.float64)
  out = np.zeros(s.shape[:-1])
  for idx in np.ndindex(*s.shape[:-1]):
    ranked = s[idx][ranking[idx]]
    total = 0.0
    for k in range(len(ranked)):
      tail = ranked[k:]
      total += weights[idx][k] * (scipy.special.logsumexp(tail) - ranked[k])
    out[idx] = total
  return out


def np_ranking(t, y):
  t = np.asarray(t, np.float64)
  ranking = np.zeros(t.shape, np.int64)
  for idx in np.ndindex(*t.shape[:-1]):
    others = [c for c in np.argsort(-t[idx], kind="stable") if c != y[idx]]
    ranking[idx] = [y[idx]] + others
  return ranking


def np_pld(s, t, y, tau=1.0):
  ranking = np_ranking(t, y)
  weights = np.take_along_axis(np_softmax(np.asarray(t) / tau), ranking, -1)
  return np_pl_loss(s, ranking, weights)


def np_pearson_rows(a, b, eps=1e-8):
  a = a - a.mean(1, keepdims=True)
  b = b - b.mean(1, keepdims=True)
  norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
  return (a * b).sum(1) / (norms + eps)


def np_dist(s, t, beta=1.0, gamma=1.0, temperature=1.0):
  ys = np_softmax(np.asarray(s) / temperature)
  yt = np_softmax(np.asarray(t) / temperature)
  inter = 1 - np_pearson_rows(ys, yt).mean()
  intra = 1 - np_pearson_rows(ys.T, yt.T).mean()
  return temperature**2 * (beta * inter + gamma * intra)


def np_sigmoid(x):
  return 1 / (1 + np.exp(-x))


def np_bernoulli_kl(a, b):
  return a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))


def np_ofa_target(t, y, gamma, temperature=1.0):
  p = np_softmax(np.asarray(t) / temperature)
  onehot = np.eye(p.shape[-1])[y]
  return (p + onehot)**gamma - onehot


def jit_grad(fn, **kwargs):
  """jax.grad compiled as one program (cheaper than grad of a jitted call)."""
  return jax.jit(jax.grad(fn, **kwargs))


def random_logits(seed, shape, scale=2.0):
  return np.random.default_rng(seed).normal(size=shape) * scale


def random_labels(seed, shape, num_classes):
  return np.random.default_rng(seed).integers(0, num_classes, size=shape)


# Jitted entry points shared by the tests (static options as partials).
kd_jit = jax.jit(dl_kd.kd, static_argnames=("reduction",))
reverse_kl_kd_jit = jax.jit(dl_kd.reverse_kl_kd)
js_kd_jit = jax.jit(dl_kd.js_kd)
tv_kd_jit = jax.jit(dl_kd.tv_kd)
alpha_kd_jit = jax.jit(dl_kd.alpha_kd)
sinkhorn_kd_jit = jax.jit(dl_kd.sinkhorn_kd, static_argnames=("num_iters",))
sinkhorn_plan_jit = jax.jit(dl_kd.sinkhorn_kd_plan,
                            static_argnames=("num_iters",))
pld_jit = jax.jit(dl_kd.pld)
listmle_jit = jax.jit(dl_kd.listmle)
plackett_luce_jit = jax.jit(dl_kd.plackett_luce)
dist_jit = jax.jit(dl_kd.dist)
dual_head_jit = jax.jit(dl_kd.dual_head_kd, static_argnames=("logit_loss",))
ofa_kd_jit = jax.jit(dl_kd.ofa_kd)
ofa_target_jit = jax.jit(dl_kd.ofa_target)

SHAPE = (2, 3, 5)  # [..., C] with two leading axes
S = random_logits(0, SHAPE)
T = random_logits(1, SHAPE)
Y = random_labels(2, SHAPE[:-1], SHAPE[-1])


# ----------------------------------------------------------------------------
# Hinton KD and the divergence swaps
# ----------------------------------------------------------------------------


class TestKdFamily:

  @pytest.mark.parametrize("fn,divergence", [
      (kd_jit, "kl"), (reverse_kl_kd_jit, "rkl"), (js_kd_jit, "js"),
      (tv_kd_jit, "tv")])
  def test_matches_numpy(self, fn, divergence):
    got = fn(S, T, Y, temperature=2.5, alpha=0.7)
    want = np_kd(S, T, Y, 2.5, 0.7, divergence)
    assert got.shape == SHAPE[:-1]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)

  @pytest.mark.parametrize("fn,divergence", [
      (kd_jit, "kl"), (reverse_kl_kd_jit, "rkl"), (js_kd_jit, "js"),
      (tv_kd_jit, "tv")])
  def test_soft_only_without_labels(self, fn, divergence):
    got = fn(S, T, temperature=0.5)
    np.testing.assert_allclose(got, np_kd(S, T, None, 0.5, 1.0, divergence),
                               rtol=RTOL, atol=ATOL)

  def test_js_beta(self):
    got = js_kd_jit(S, T, beta=0.2)
    np.testing.assert_allclose(got, np_js(T, S, 0.2), rtol=RTOL, atol=ATOL)

  def test_alpha_zero_is_cross_entropy(self):
    got = kd_jit(S, T, Y, temperature=3.0, alpha=0.0)
    np.testing.assert_allclose(got, np_ce(S, Y), rtol=RTOL, atol=ATOL)

  def test_kl_closed_form_two_classes(self):
    # KL(softmax([1, 0]) || softmax([0, 1])) = 2 sigmoid(1) - 1 = tanh(1/2).
    got = kd_jit(jnp.array([0.0, 1.0]), jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(got, np.tanh(0.5), rtol=1e-6)

  def test_temperature_squared_gradient(self):
    # With T^2 applied, d/ds [T^2 KL(p_t^T || p_s^T)]
    #   = T (softmax(s/T) - softmax(t/T)).
    s, t = S[0, 0], T[0, 0]
    for temperature in (0.5, 2.0, 8.0):
      grad = jax.grad(lambda z: kd_jit(z, t, temperature=temperature))(s)
      want = temperature * (np_softmax(s / temperature)
                            - np_softmax(t / temperature))
      np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)
    # ... which tends to (s - t - mean(s - t)) / C: independent of T at high T.
    grad_hot = jit_grad(lambda z: kd_jit(z, t, temperature=200.0))(s)
    centred = (s - t) - np.mean(s - t)
    np.testing.assert_allclose(grad_hot, centred / s.shape[-1],
                               rtol=2e-2, atol=1e-3)

  def test_alpha_mixes_linearly(self):
    soft = kd_jit(S, T, Y, temperature=2.0, alpha=1.0)
    hard = kd_jit(S, T, Y, temperature=2.0, alpha=0.0)
    mixed = kd_jit(S, T, Y, temperature=2.0, alpha=0.3)
    np.testing.assert_allclose(mixed, 0.7 * hard + 0.3 * soft,
                               rtol=RTOL, atol=ATOL)

  @pytest.mark.parametrize("fn", [dl_kd.kd, dl_kd.reverse_kl_kd, dl_kd.js_kd])
  def test_gradients_finite_differences(self, fn):
    with jax.enable_x64(True):
      s, t, y = jnp.asarray(S[0]), jnp.asarray(T[0]), jnp.asarray(Y[0])
      loss = jax.jit(lambda z: fn(z, t, y, temperature=1.7, alpha=0.6).sum())
      check_grads(loss, (s,), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)

  def test_tv_gradient_finite_differences(self):
    with jax.enable_x64(True):
      s, t = jnp.asarray(S[0]), jnp.asarray(T[0])
      loss = jax.jit(lambda z: dl_kd.tv_kd(z, t, temperature=1.7).sum())
      check_grads(loss, (s,), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)

  def test_teacher_gets_no_gradient(self):
    grad_t = jit_grad(
        lambda t: kd_jit(S, t, Y, temperature=2.0, alpha=0.5).sum())(T)
    np.testing.assert_array_equal(grad_t, 0.0)

  def test_padded_positions_are_zero_with_zero_gradient(self):
    where = np.array([[True, True, False], [True, False, True]])
    s = np.where(where[..., None], S, np.nan)  # padding holds garbage
    t = np.where(where[..., None], T, -np.inf)
    y = np.where(where, Y, -100)  # an ignore index at padded positions
    loss = lambda z: kd_jit(z, t, y, temperature=2.0, alpha=0.5, where=where)
    values = loss(s)
    np.testing.assert_array_equal(values[~where], 0.0)
    np.testing.assert_allclose(values[where], np_kd(S, T, Y, 2.0, 0.5)[where],
                               rtol=RTOL, atol=ATOL)
    grad = jit_grad(lambda z: loss(z).sum())(s)
    np.testing.assert_array_equal(grad[~where], 0.0)
    # At the valid positions: the float64 loss's differences on clean inputs.
    expected = central_differences(
        lambda z: np_kd(z, T, Y, 2.0, 0.5)[where].sum(), S)
    np.testing.assert_allclose(grad[where], expected[where], rtol=1e-4, atol=1e-6)

  def test_mean_reduction_counts_valid_positions_only(self):
    where = np.array([[True, True, False], [True, False, False]])
    got = kd_jit(S, T, Y, temperature=2.0, alpha=0.5, where=where,
                 reduction="mean")
    want = np_kd(S, T, Y, 2.0, 0.5)[where].mean()
    np.testing.assert_allclose(got, want, rtol=RTOL)

  @pytest.mark.parametrize("fn,divergence", [
      (kd_jit, "kl"), (reverse_kl_kd_jit, "rkl"), (js_kd_jit, "js"),
      (tv_kd_jit, "tv")])
  def test_class_where_equals_dropping_classes(self, fn, divergence):
    class_where = np.array([True, False, True, True, False])
    # Labels must point at included classes.
    y = np.array([[0, 2, 3], [3, 0, 2]])
    got = fn(S, T, y, temperature=1.5, alpha=0.4, class_where=class_where)
    kept = np.flatnonzero(class_where)
    y_kept = np.searchsorted(kept, y)
    want = np_kd(S[..., kept], T[..., kept], y_kept, 1.5, 0.4, divergence)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    grad = jit_grad(lambda z: fn(z, T, y, temperature=1.5, alpha=0.4,
                                  class_where=class_where).sum())(S)
    np.testing.assert_array_equal(grad[..., ~class_where], 0.0)
    expected = central_differences(lambda z: np_kd(
        z, T[..., kept], y_kept, 1.5, 0.4, divergence).sum(), S[..., kept])
    np.testing.assert_allclose(grad[..., kept], expected, rtol=1e-4, atol=1e-6)

  def test_errors(self):
    with pytest.raises(ValueError, match="student_logits"):
      dl_kd.kd(S, T[..., :4])
    with pytest.raises(ValueError, match="temperature"):
      dl_kd.kd(S, T, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
      dl_kd.js_kd(S, T, temperature=-1.0)
    with pytest.raises(ValueError, match="labels"):
      dl_kd.kd(S, T, alpha=0.5)
    with pytest.raises(ValueError, match="labels"):
      dl_kd.kd(S, T, Y[0], alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
      dl_kd.tv_kd(S, T, Y, alpha=1.5)
    with pytest.raises(ValueError, match="where"):
      dl_kd.kd(S, T, where=np.ones((3, 2), bool))
    with pytest.raises(ValueError, match="class_where"):
      dl_kd.reverse_kl_kd(S, T, class_where=np.ones((4,), bool))


# ----------------------------------------------------------------------------
# AlphaNet alpha-divergence KD
# ----------------------------------------------------------------------------


# Moderately sharp logits: the q/p clip is active and both alphas get selected.
AS = random_logits(3, (8, 6), scale=1.5)
AT = random_logits(4, (8, 6), scale=1.5)


class TestAlphaKd:

  def test_value_and_gradient_match_released_estimator(self):
    s, t = AS, AT
    want_value, want_grad = np_alpha_kd(s, t)
    q, p = np_softmax(s), np_softmax(t)
    assert np.any(q / p > 5), "fixture must exercise the importance-weight clip"
    got = alpha_kd_jit(s, t)
    np.testing.assert_allclose(got, want_value, rtol=RTOL, atol=ATOL)
    grad = jit_grad(lambda z: alpha_kd_jit(z, t).sum())(s)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)

  def test_fixture_selects_both_alphas(self):
    # Guards the fixture above: some rows pick D_{-1}, others KL (D_{+1}).
    q, p = np_softmax(AS), np_softmax(AT)
    v_min, _ = np_alpha_terms(p, q, -1.0, 5.0)
    v_max, _ = np_alpha_terms(p, q, 1.0, 5.0)
    assert np.any(v_min > v_max) and np.any(v_min <= v_max)

  def test_unclipped_equals_amari_divergence_and_its_gradient(self):
    # Close teacher and student: every ratio stays inside [1/5, 5].
    s = random_logits(5, (3, 4), scale=0.5)
    t = s + random_logits(6, (3, 4), scale=0.3)
    p, q = np_softmax(t), np_softmax(s)
    want = np.maximum(np_amari(p, q, -1.0), np_kl(t, s))
    np.testing.assert_allclose(alpha_kd_jit(s, t), want, rtol=RTOL, atol=ATOL)
    # Without clipping the surrogate gradient is the true gradient.
    with jax.enable_x64(True):
      loss = jax.jit(lambda z: dl_kd.alpha_kd(z, jnp.asarray(t)).sum())
      check_grads(loss, (jnp.asarray(s),), order=1, modes=("rev",),
                  atol=1e-6, rtol=1e-6)

  def test_other_alphas_and_limits(self):
    s = random_logits(7, (3, 5), scale=1.5)
    t = random_logits(8, (3, 5), scale=1.5)
    for a_min, a_max in ((-0.5, 0.5), (0.0, 2.0), (-2.0, 1.0)):
      want_value, want_grad = np_alpha_kd(s, t, a_min, a_max, clip=3.0)
      loss = jax.jit(functools.partial(
          dl_kd.alpha_kd, alpha_min=a_min, alpha_max=a_max, iw_clip=3.0))
      got, loss_vjp = jax.vjp(lambda z: loss(z, t), s)
      (grad,) = loss_vjp(jnp.ones_like(got))
      np.testing.assert_allclose(got, want_value, rtol=RTOL, atol=ATOL)
      np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)

  def test_masks(self):
    s, t = AS, AT
    where = np.array([True, False, True, False, True, True, False, True])
    class_where = np.array([True, True, False, True, True, False])
    s_pad = np.where(where[:, None], s, np.nan)
    got = alpha_kd_jit(s_pad, t, where=where, class_where=class_where)
    kept = np.flatnonzero(class_where)
    want_value, want_grad = np_alpha_kd(s[:, kept], t[:, kept])
    np.testing.assert_array_equal(got[~where], 0.0)
    np.testing.assert_allclose(got[where], want_value[where],
                               rtol=RTOL, atol=ATOL)
    grad = jit_grad(lambda z: alpha_kd_jit(
        z, t, where=where, class_where=class_where).sum())(s_pad)
    np.testing.assert_array_equal(grad[~where], 0.0)
    np.testing.assert_array_equal(grad[:, ~class_where], 0.0)
    np.testing.assert_allclose(grad[where][:, kept], want_grad[where],
                               rtol=1e-4, atol=1e-6)

  def test_errors(self):
    with pytest.raises(ValueError, match="alpha_min"):
      dl_kd.alpha_kd(S, T, alpha_min=1.0, alpha_max=-1.0)
    with pytest.raises(ValueError, match="iw_clip"):
      dl_kd.alpha_kd(S, T, iw_clip=0.0)
    with pytest.raises(ValueError, match="teacher_logits"):
      dl_kd.alpha_kd(S, T[:1])


# ----------------------------------------------------------------------------
# Sinkhorn KD
# ----------------------------------------------------------------------------

SB = random_logits(10, (5, 4))
TB = random_logits(11, (5, 4))


class TestSinkhornKd:

  def test_plan_and_loss_match_numpy(self):
    cost, plan = np_sinkhorn(SB, TB, temperature=2.0, epsilon=0.1, num_iters=20)
    np.testing.assert_allclose(sinkhorn_plan_jit(SB, TB), plan,
                               rtol=1e-4, atol=1e-6)
    got = sinkhorn_kd_jit(SB, TB, weight=1e-3)
    np.testing.assert_allclose(got, 1e-3 * np.sum(plan * cost), rtol=1e-4)
    assert got.shape == ()

  @pytest.mark.parametrize("temperature,num_iters,row_atol", [
      (2.0, 20, 1e-4),  # the defaults converge fast on this batch
      (1.0, 100, 1e-3)])  # sharper costs need more rounds
  def test_plan_is_a_transport_plan(self, temperature, num_iters, row_atol):
    plan = np.asarray(sinkhorn_plan_jit(SB, TB, temperature=temperature,
                                        num_iters=num_iters))
    batch = SB.shape[0]
    assert np.all(plan >= 0)
    # The last step normalises columns: exact; rows converge within tolerance.
    np.testing.assert_allclose(plan.sum(0), np.ones(batch), rtol=1e-5)
    np.testing.assert_allclose(plan.sum(1), np.ones(batch), atol=row_atol)
    # P / B couples the two uniform empirical measures.
    np.testing.assert_allclose((plan / batch).sum(), 1.0, rtol=1e-5)

  def test_identical_batches_cost_nothing_and_plan_is_near_diagonal(self):
    z = random_logits(12, (4, 6), scale=4.0)
    plan = sinkhorn_plan_jit(z, z, temperature=1.0, epsilon=0.01, num_iters=50)
    np.testing.assert_allclose(np.diag(plan), np.ones(4), atol=1e-3)
    loss = sinkhorn_kd_jit(z, z, temperature=1.0, epsilon=0.01, num_iters=50)
    np.testing.assert_allclose(loss, 0.0, atol=1e-7)

  def test_gradient_through_plan_finite_differences(self):
    with jax.enable_x64(True):
      s, t = jnp.asarray(SB[:3]), jnp.asarray(TB[:3])
      loss = jax.jit(lambda z: dl_kd.sinkhorn_kd(z, t, num_iters=5, weight=1.0))
      check_grads(loss, (s,), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)

  def test_plan_is_not_detached(self):
    # Gradient of the loss differs from the gradient with the plan held fixed.
    _, plan = np_sinkhorn(SB, TB)
    def loss_with_fixed_plan(z):
      cost = jnp.abs(jax.nn.softmax(z / 2.0)[:, None]
                     - jax.nn.softmax(TB / 2.0)[None]).sum(-1)
      return 1e-3 * jnp.sum(plan * cost)
    detached = jit_grad(loss_with_fixed_plan)(SB)
    full = jit_grad(lambda z: sinkhorn_kd_jit(z, TB))(SB)
    assert np.max(np.abs(full - detached)) > 1e-3 * np.max(np.abs(detached))

  def test_padded_examples(self):
    where = np.array([True, False, True, True, False])
    s = np.where(where[:, None], SB, np.nan)
    plan = np.asarray(sinkhorn_plan_jit(s, TB, where=where))
    cost, want_plan = np_sinkhorn(SB[where], TB[where])
    np.testing.assert_allclose(plan[np.ix_(where, where)], want_plan,
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(plan[~where], 0.0)
    np.testing.assert_array_equal(plan[:, ~where], 0.0)
    got = sinkhorn_kd_jit(s, TB, where=where)
    np.testing.assert_allclose(got, 1e-3 * np.sum(want_plan * cost), rtol=1e-4)
    grad = jit_grad(lambda z: sinkhorn_kd_jit(z, TB, where=where))(s)
    np.testing.assert_array_equal(grad[~where], 0.0)
    expected = central_differences(
        lambda z: 1e-3 * np.sum(np.prod(np_sinkhorn(z, TB[where]), axis=0)), SB[where])
    np.testing.assert_allclose(grad[where], expected, rtol=1e-4, atol=1e-8)
    # A fully padded batch gives 0, not NaN.
    assert sinkhorn_kd_jit(SB, TB, where=np.zeros(5, bool)) == 0.0

  def test_class_where(self):
    class_where = np.array([True, False, True, True])
    kept = np.flatnonzero(class_where)
    cost, plan = np_sinkhorn(SB[:, kept], TB[:, kept])
    got = sinkhorn_kd_jit(SB, TB, class_where=class_where)
    np.testing.assert_allclose(got, 1e-3 * np.sum(plan * cost), rtol=1e-4)
    s = np.where(class_where, SB, -np.inf)  # excluded entries may be -inf
    grad = jit_grad(
        lambda z: sinkhorn_kd_jit(z, TB, class_where=class_where))(s)
    np.testing.assert_array_equal(grad[:, ~class_where], 0.0)
    expected = central_differences(
        lambda z: 1e-3 * np.sum(np.prod(np_sinkhorn(z, TB[:, kept]), axis=0)), SB[:, kept])
    np.testing.assert_allclose(grad[:, kept], expected, rtol=1e-4, atol=1e-8)

  def test_errors(self):
    with pytest.raises(ValueError, match="B, C"):
      dl_kd.sinkhorn_kd(S, T)
    with pytest.raises(ValueError, match="teacher_logits"):
      dl_kd.sinkhorn_kd(SB, TB[:3])
    with pytest.raises(ValueError, match="temperature"):
      dl_kd.sinkhorn_kd(SB, TB, temperature=0.0)
    with pytest.raises(ValueError, match="epsilon"):
      dl_kd.sinkhorn_kd_plan(SB, TB, epsilon=-0.1)
    with pytest.raises(ValueError, match="num_iters"):
      dl_kd.sinkhorn_kd(SB, TB, num_iters=0)


# ----------------------------------------------------------------------------
# Plackett-Luce distillation, ListMLE
# ----------------------------------------------------------------------------


class TestPlackettLuce:

  def test_pld_matches_numpy(self):
    np.testing.assert_allclose(pld_jit(S, T, Y), np_pld(S, T, Y),
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(pld_jit(S, T, Y, temperature=4.0),
                               np_pld(S, T, Y, tau=4.0), rtol=RTOL, atol=ATOL)

  def test_core_matches_numpy_for_arbitrary_weights(self):
    rng = np.random.default_rng(13)
    ranking = np.stack([rng.permutation(5) for _ in range(6)]).reshape(2, 3, 5)
    weights = rng.uniform(size=SHAPE)
    got = plackett_luce_jit(S, ranking, weights)
    np.testing.assert_allclose(got, np_pl_loss(S, ranking, weights),
                               rtol=RTOL, atol=ATOL)

  def test_core_padding_with_garbage_weights_and_ranking(self):
    where = np.array([[True, False, True], [False, True, True]])
    ranking = np.where(where[..., None], np_ranking(T, Y), -7)
    weights = np.where(where[..., None], np.full(SHAPE, 0.5), np.nan)
    loss = lambda z: plackett_luce_jit(z, ranking, weights, where=where)
    got = loss(S)
    want = np_pl_loss(S, np_ranking(T, Y), np.full(SHAPE, 0.5))
    np.testing.assert_array_equal(got[~where], 0.0)
    np.testing.assert_allclose(got[where], want[where], rtol=RTOL, atol=ATOL)
    grad = jit_grad(lambda z: loss(z).sum())(S)
    np.testing.assert_array_equal(grad[~where], 0.0)
    expected = central_differences(lambda z: np_pl_loss(
        z, np_ranking(T, Y), np.full(SHAPE, 0.5))[where].sum(), S)
    np.testing.assert_allclose(grad[where], expected[where], rtol=1e-4, atol=1e-6)

  def test_one_hot_first_weight_is_cross_entropy(self):
    ranking = np_ranking(T, Y)
    weights = np.zeros(SHAPE)
    weights[..., 0] = 1.0
    got = plackett_luce_jit(S, ranking, weights)
    np.testing.assert_allclose(got, np_ce(S, Y), rtol=RTOL, atol=ATOL)

  def test_uniform_weights_is_listmle(self):
    ranking = np_ranking(T, Y)
    core = plackett_luce_jit(S, ranking, np.ones(SHAPE))
    np.testing.assert_allclose(listmle_jit(S, T, Y), core, rtol=RTOL, atol=ATOL)

  def test_normalized_listmle_weights_each_position_by_one_over_included_classes(self):
    # PLD's ablation: alpha_k = 1/C, C counting the row's included classes.
    ranking = np_ranking(T, Y)
    want = np_pl_loss(S, ranking, np.full(SHAPE, 1.0 / SHAPE[-1]))
    np.testing.assert_allclose(dl_kd.listmle(S, T, Y, normalize=True), want,
                               rtol=RTOL, atol=ATOL)
    class_where = np.array([True, True, False, True, False])
    y = np.where(class_where[Y], Y, 0)
    kept = np.flatnonzero(class_where)
    want = np_pl_loss(S[..., kept], np_ranking(T[..., kept], np.searchsorted(kept, y)),
                      np.full(SHAPE[:-1] + (len(kept),), 1.0 / len(kept)))
    got = dl_kd.listmle(S, T, y, normalize=True, class_where=class_where)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)

  def test_listmle_is_plackett_luce_negative_log_likelihood(self):
    # -log prod_k exp(s_{pi_k}) / sum_{l >= k} exp(s_{pi_l}), as a product.
    ranking = np_ranking(T, Y)
    probs = np.ones(SHAPE[:-1])
    for idx in np.ndindex(*SHAPE[:-1]):
      remaining = list(ranking[idx])
      while remaining:
        e = np.exp(S[idx][remaining])
        probs[idx] *= e[0] / e.sum()
        remaining = remaining[1:]
    np.testing.assert_allclose(listmle_jit(S, T, Y), -np.log(probs),
                               rtol=RTOL, atol=ATOL)

  def test_ranking_puts_label_first_then_teacher_order(self):
    # Scores that follow pi* exactly, with huge gaps, give (almost) zero loss.
    t = np.array([[3.0, 1.0, 2.0, 0.0]])
    y = np.array([3])  # pi* = (3, 0, 2, 1)
    s = np.array([[300.0, 0.0, 150.0, 450.0]])
    np.testing.assert_allclose(listmle_jit(s, t, y), 0.0, atol=1e-6)
    s_wrong = np.array([[450.0, 0.0, 150.0, 300.0]])
    assert listmle_jit(s_wrong, t, y)[0] > 100

  def test_gradients_finite_differences(self):
    with jax.enable_x64(True):
      s, t, y = jnp.asarray(S[0]), jnp.asarray(T[0]), jnp.asarray(Y[0])
      loss = jax.jit(lambda z: dl_kd.pld(z, t, y, temperature=2.0).sum())
      check_grads(loss, (s,), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)

  def test_masks(self):
    where = np.array([[True, False, True], [False, True, True]])
    class_where = np.array([True, True, False, True, False])
    y = np.array([[0, 1, 3], [0, 3, 1]])
    s = np.where(where[..., None], S, np.inf)
    got = pld_jit(s, T, y, where=where, class_where=class_where)
    kept = np.flatnonzero(class_where)
    want = np_pld(S[..., kept], T[..., kept], np.searchsorted(kept, y))
    np.testing.assert_array_equal(got[~where], 0.0)
    np.testing.assert_allclose(got[where], want[where], rtol=RTOL, atol=ATOL)
    grad = jit_grad(lambda z: pld_jit(z, T, y, where=where,
                                       class_where=class_where).sum())(s)
    np.testing.assert_array_equal(grad[~where], 0.0)
    np.testing.assert_array_equal(grad[..., ~class_where], 0.0)
    expected = central_differences(lambda z: np_pld(
        z, T[..., kept], np.searchsorted(kept, y))[where].sum(), S[..., kept])
    np.testing.assert_allclose(grad[..., kept][where], expected[where], rtol=1e-4,
                               atol=1e-6)

  def test_errors(self):
    with pytest.raises(ValueError, match="labels"):
      dl_kd.pld(S, T, Y[0])
    with pytest.raises(ValueError, match="temperature"):
      dl_kd.pld(S, T, Y, temperature=0.0)
    with pytest.raises(ValueError, match="teacher_logits"):
      dl_kd.listmle(S, T[0], Y)
    with pytest.raises(ValueError, match="ranking"):
      dl_kd.plackett_luce(S, np.zeros(SHAPE), np.ones(SHAPE))
    with pytest.raises(ValueError, match="weights"):
      dl_kd.plackett_luce(S, np_ranking(T, Y), np.ones((5,)))


# ----------------------------------------------------------------------------
# DIST
# ----------------------------------------------------------------------------


class TestDist:

  def test_matches_numpy(self):
    got = dist_jit(SB, TB, beta=0.7, gamma=1.3, temperature=2.0)
    np.testing.assert_allclose(got, np_dist(SB, TB, 0.7, 1.3, 2.0), rtol=1e-5)
    assert got.shape == ()

  def test_temperature_squared_factor(self):
    # The T^2 factor multiplies the correlation losses of softmax(z / T).
    base = np_dist(SB / 3.0, TB / 3.0, temperature=1.0)
    np.testing.assert_allclose(dist_jit(SB, TB, temperature=3.0), 9.0 * base,
                               rtol=1e-5)

  def test_identical_predictions_give_zero(self):
    # Both correlations are 1 (up to eps) when student and teacher agree.
    np.testing.assert_allclose(dist_jit(SB, SB), 0.0, atol=1e-5)

  def test_gradients_finite_differences(self):
    with jax.enable_x64(True):
      t = jnp.asarray(TB[:4])
      loss = jax.jit(lambda z: dl_kd.dist(z, t, temperature=1.5))
      check_grads(loss, (jnp.asarray(SB[:4]),), order=1, modes=("rev",),
                  atol=1e-5, rtol=1e-5)

  def test_masks(self):
    where = np.array([True, True, False, True, False])
    class_where = np.array([True, False, True, True])
    s = np.where(where[:, None], SB, np.nan)
    got = dist_jit(s, TB, where=where, class_where=class_where)
    kept = np.flatnonzero(class_where)
    want = np_dist(SB[where][:, kept], TB[where][:, kept])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    grad = jit_grad(
        lambda z: dist_jit(z, TB, where=where, class_where=class_where))(s)
    np.testing.assert_array_equal(grad[~where], 0.0)
    np.testing.assert_array_equal(grad[:, ~class_where], 0.0)
    expected = central_differences(lambda z: np_dist(z, TB[where][:, kept]),
                                      SB[where][:, kept])
    np.testing.assert_allclose(grad[where][:, kept], expected, rtol=1e-4, atol=1e-6)

  def test_errors(self):
    with pytest.raises(ValueError, match="B, C"):
      dl_kd.dist(S, T)
    with pytest.raises(ValueError, match="temperature"):
      dl_kd.dist(SB, TB, temperature=0.0)
    with pytest.raises(ValueError, match="teacher_logits"):
      dl_kd.dist(SB, TB[:, :3])


# ----------------------------------------------------------------------------
# Dual-head KD
# ----------------------------------------------------------------------------

S2 = random_logits(20, SHAPE)


def np_logit_term(s_logit, t, loss, temperature):
  if loss == "mse":
    return np.mean((s_logit - t) ** 2, -1)
  if loss == "binary_kl":
    a, b = np_sigmoid(t / temperature), np_sigmoid(s_logit / temperature)
  else:
    a, b = 0.5, np_sigmoid((s_logit - t) / temperature)
  return temperature**2 * np.sum(np_bernoulli_kl(a, b), -1)


class TestDualHeadKd:

  @pytest.mark.parametrize("logit_loss", ["mse", "binary_kl", "binary_kl_norm"])
  def test_matches_numpy(self, logit_loss):
    got = dual_head_jit(S, S2, T, Y, temperature=2.0, alpha=0.6,
                        logit_loss=logit_loss, logit_weight=0.5)
    want = (np_kd(S, T, Y, 2.0, 0.6)
            + 0.5 * np_logit_term(S2, T, logit_loss, 2.0))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)

  def test_binary_kl_norm_closed_form(self):
    # KL(Bern(1/2) || Bern(sigmoid(d))) = log cosh(d / 2).
    gap = np.array([[-3.0, 0.0, 0.5, 4.0]])
    got = dual_head_jit(np.zeros((1, 4)), gap, np.zeros((1, 4)),
                        logit_loss="binary_kl_norm")
    np.testing.assert_allclose(got, np.sum(np.log(np.cosh(gap / 2)), -1),
                               rtol=1e-5)

  def test_each_head_gets_only_its_own_gradient(self):
    def loss(a, b):
      return dual_head_jit(a, b, T, Y, temperature=2.0, alpha=0.6,
                           logit_loss="mse").sum()
    grad_prob, grad_logit = jit_grad(loss, argnums=(0, 1))(S, S2)
    want_prob = jit_grad(
        lambda a: kd_jit(a, T, Y, temperature=2.0, alpha=0.6).sum())(S)
    np.testing.assert_allclose(grad_prob, want_prob, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_logit, 2 * (S2 - T) / SHAPE[-1],
                               rtol=1e-5, atol=1e-7)

  def test_gradients_finite_differences(self):
    with jax.enable_x64(True):
      t, y = jnp.asarray(T[0]), jnp.asarray(Y[0])
      loss = jax.jit(lambda a, b: dl_kd.dual_head_kd(
          a, b, t, y, temperature=2.0, alpha=0.5, logit_loss="binary_kl").sum())
      check_grads(loss, (jnp.asarray(S[0]), jnp.asarray(S2[0])), order=1,
                  modes=("rev",), atol=1e-5, rtol=1e-5)

  def test_masks(self):
    where = np.array([[True, False, True], [True, True, False]])
    class_where = np.array([True, True, False, True, True])
    kept = np.flatnonzero(class_where)
    s2 = np.where(where[..., None], S2, np.nan)
    s2 = np.where(class_where, s2, np.inf)  # excluded classes may hold inf
    got = dual_head_jit(S, s2, T, where=where, class_where=class_where,
                        logit_loss="mse")
    want = (np_kd(S[..., kept], T[..., kept], None, 1.0, 1.0)
            + np_logit_term(S2[..., kept], T[..., kept], "mse", 1.0))
    np.testing.assert_array_equal(got[~where], 0.0)
    np.testing.assert_allclose(got[where], want[where], rtol=RTOL, atol=ATOL)
    for logit_loss in ("mse", "binary_kl_norm"):
      grad = jit_grad(lambda b: dual_head_jit(
          S, b, T, where=where, class_where=class_where,
          logit_loss=logit_loss).sum())(s2)
      np.testing.assert_array_equal(grad[~where], 0.0)
      np.testing.assert_array_equal(grad[..., ~class_where], 0.0)
      expected = central_differences(lambda b, loss=logit_loss: np_logit_term(
          b, T[..., kept], loss, 1.0)[where].sum(), S2[..., kept])
      np.testing.assert_allclose(grad[..., kept][where], expected[where], rtol=1e-4,
                                 atol=1e-6, err_msg=logit_loss)

  def test_errors(self):
    with pytest.raises(ValueError, match="logit_loss"):
      dl_kd.dual_head_kd(S, S2, T, logit_loss="l1")
    with pytest.raises(ValueError, match="prob_head_logits"):
      dl_kd.dual_head_kd(S[0], S2, T)
    with pytest.raises(ValueError, match="logit_head_logits"):
      dl_kd.dual_head_kd(S, S2[0], T)
    with pytest.raises(ValueError, match="temperature"):
      dl_kd.dual_head_kd(S, S2, T, temperature=0.0)


# ----------------------------------------------------------------------------
# OFA-KD
# ----------------------------------------------------------------------------


class TestOfa:

  def test_target_matches_numpy(self):
    got = ofa_target_jit(T, Y, 1.5, temperature=2.0)
    np.testing.assert_allclose(got, np_ofa_target(T, Y, 1.5, 2.0),
                               rtol=RTOL, atol=ATOL)

  def test_target_enhances_true_class_only_relative_to_gamma_one(self):
    base = np.asarray(ofa_target_jit(T, Y, 1.0))
    enhanced = np.asarray(ofa_target_jit(T, Y, 2.0))
    np.testing.assert_allclose(base, np_softmax(T), rtol=RTOL, atol=ATOL)
    true_base = np.take_along_axis(base, Y[..., None], -1)
    true_enh = np.take_along_axis(enhanced, Y[..., None], -1)
    # (1 + p)^2 - 1 = p (2 + p) > p for the true class; p^2 < p elsewhere.
    np.testing.assert_allclose(true_enh, true_base * (2 + true_base), rtol=1e-5)
    others = np.ones(SHAPE, bool)
    np.put_along_axis(others, Y[..., None], False, -1)
    assert np.all(enhanced[others] < base[others])

  def test_loss_matches_numpy(self):
    got = ofa_kd_jit(S, T, Y, gamma=1.5, temperature=2.0)
    w = np_ofa_target(T, Y, 1.5, 2.0)
    want = -np.sum(w * np_log_softmax(S / 2.0), -1)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)

  def test_gamma_one_is_soft_cross_entropy(self):
    got = ofa_kd_jit(S, T, Y, gamma=1.0, temperature=3.0)
    want = -np.sum(np_softmax(T / 3.0) * np_log_softmax(S / 3.0), -1)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)

  def test_gradients_finite_differences(self):
    with jax.enable_x64(True):
      t, y = jnp.asarray(T[0]), jnp.asarray(Y[0])
      loss = jax.jit(lambda z: dl_kd.ofa_kd(z, t, y, gamma=1.5).sum())
      check_grads(loss, (jnp.asarray(S[0]),), order=1, modes=("rev",),
                  atol=1e-5, rtol=1e-5)

  def test_masks(self):
    where = np.array([[False, True, True], [True, True, False]])
    class_where = np.array([False, True, True, True, True])
    y = np.array([[1, 2, 3], [4, 1, 2]])
    s = np.where(where[..., None], S, -np.inf)
    got = ofa_kd_jit(s, T, y, gamma=2.0, where=where, class_where=class_where)
    kept = np.flatnonzero(class_where)
    y_kept = np.searchsorted(kept, y)
    w = np_ofa_target(T[..., kept], y_kept, 2.0)
    want = -np.sum(w * np_log_softmax(S[..., kept]), -1)
    np.testing.assert_array_equal(got[~where], 0.0)
    np.testing.assert_allclose(got[where], want[where], rtol=RTOL, atol=ATOL)
    grad = jit_grad(lambda z: ofa_kd_jit(z, T, y, gamma=2.0, where=where,
                                          class_where=class_where).sum())(s)
    np.testing.assert_array_equal(grad[~where], 0.0)
    np.testing.assert_array_equal(grad[..., ~class_where], 0.0)
    expected = central_differences(
        lambda z: -np.sum(w * np_log_softmax(z), -1)[where].sum(), S[..., kept])
    np.testing.assert_allclose(grad[..., kept][where], expected[where], rtol=1e-4,
                               atol=1e-6)

  def test_errors(self):
    with pytest.raises(ValueError, match="gamma"):
      dl_kd.ofa_target(T, Y, 0.0)
    with pytest.raises(ValueError, match="temperature"):
      dl_kd.ofa_kd(S, T, Y, temperature=-2.0)
    with pytest.raises(ValueError, match="labels"):
      dl_kd.ofa_kd(S, T, Y.astype(np.float32))
    with pytest.raises(ValueError, match="student_logits"):
      dl_kd.ofa_kd(S[..., :3], T, Y)


# ----------------------------------------------------------------------------
# Shared behaviour
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("fn,reference", [
    (functools.partial(dl_kd.kd, temperature=2.0),
     lambda s, t: np_kd(s, t, None, 2.0, 1.0)),
    (dl_kd.alpha_kd, lambda s, t: np_alpha_kd(s, t)[0]),
    (functools.partial(dl_kd.ofa_kd, labels=Y),
     lambda s, t: -np.sum(np_ofa_target(t, Y, 1.0) * np_log_softmax(s), -1)),
    (functools.partial(dl_kd.pld, labels=Y), lambda s, t: np_pld(s, t, Y)),
], ids=["kd", "alpha_kd", "ofa_kd", "pld"])
def test_bfloat16_inputs_are_computed_in_float32(fn, reference):
  s16, t16 = S.astype(jnp.bfloat16), T.astype(jnp.bfloat16)
  got = jax.jit(fn)(s16, t16)
  assert got.dtype == jnp.float32
  # The float64 formula on the bf16-rounded inputs: only float32 arithmetic
  # separates the two.
  want = reference(np.asarray(s16, np.float64), np.asarray(t16, np.float64))
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_sum_reduction_and_vmap():
  per_example = kd_jit(S, T, temperature=2.0)
  np.testing.assert_allclose(kd_jit(S, T, temperature=2.0, reduction="sum"),
                             np.sum(per_example), rtol=1e-6)
  mapped = jax.jit(jax.vmap(lambda a, b: dl_kd.kd(a, b, temperature=2.0)))(S, T)
  np.testing.assert_allclose(mapped, per_example, rtol=1e-6)


def np_alpha_kd_log_space(s, t, a_min=-1.0, a_max=1.0, clip=5.0):
  """np_alpha_kd with every ratio formed as exp(log p - log q).

  For logits of size 1e4 most probabilities underflow to 0 even in float64,
  and p / q is 0 / 0; the docstring's sum over q_c [(p_c/q_c)^a - 1] has
  q_c = 0 terms that vanish (the clipped weight is bounded), and the KL branch
  sum_c p_c log(p_c / q_c) is finite in log space. Returns (value, gradient of
  the surrogate -sum_c sg(q_c rho_c) log q_c).
  """
  log_q, log_p = np_log_softmax(s), np_log_softmax(t)
  q, log_r = np.exp(log_q), log_p - log_q

  def terms(a):
    if abs(a - 1) < 1e-3:  # q r log r = p log r; rho = r, so q rho = p
      return np.sum(np.exp(log_p) * log_r, -1), np.exp(log_p)
    ra = np.exp(np.minimum(a * log_r, np.log(clip)))
    base = 1.0 / (a * (a - 1))
    return np.sum(q * (ra * base - base), -1), q * (ra / a + base)

  v_min, w_min = terms(a_min)
  v_max, w_max = terms(a_max)
  use_min = v_min > v_max
  weights = np.where(use_min[..., None], w_min, w_max)
  return np.where(use_min, v_min, v_max), -weights + q * weights.sum(-1, keepdims=True)


def np_log_cosh(x):
  return np.logaddexp(x, -x) - np.log(2.0)


LARGE_LABELS = Y[0, :2]
# name -> (the loss, its float64 value reference of (s, t)); values near 1e4.
LARGE_LOGIT_LOSSES = {
    "sinkhorn_kd": (lambda s, t: dl_kd.sinkhorn_kd(s, t),
                    lambda s, t: 1e-3 * np.sum(np.prod(np_sinkhorn(s, t), axis=0))),
    "pld": (lambda s, t: dl_kd.pld(s, t, LARGE_LABELS).sum(),
            lambda s, t: np_pld(s, t, LARGE_LABELS).sum()),
    "dist": (lambda s, t: dl_kd.dist(s, t), np_dist),
    # KD term + sum_c log cosh((s - t) / 2) (KL of Bernoulli(1/2) to
    # Bernoulli(sigmoid(s - t)), in the form that cannot overflow).
    "dual_head_kd": (lambda s, t: dl_kd.dual_head_kd(s, s, t,
                                                     logit_loss="binary_kl_norm").sum(),
                     lambda s, t: (np_kd(s, t, None, 1.0, 1.0)
                                   + np_log_cosh((s - t) / 2).sum(-1)).sum()),
    "ofa_kd": (lambda s, t: dl_kd.ofa_kd(s, t, LARGE_LABELS, gamma=1.5).sum(),
               lambda s, t: -np.sum(np_ofa_target(t, LARGE_LABELS, 1.5)
                                    * np_log_softmax(s))),
}


@pytest.mark.parametrize("name", sorted(LARGE_LOGIT_LOSSES) + ["alpha_kd"])
def test_large_logits_match_float64_references(name):
  # Logits of size 1e4 (float32 spacing there is 1e-3, hence the reference on
  # the float32-rounded inputs and a relative tolerance).
  s = np.float64(np.float32(1e4 * S[0, :2]))
  t = np.float64(np.float32(1e4 * T[0, :2]))
  if name == "alpha_kd":
    loss = lambda a, b: dl_kd.alpha_kd(a, b).sum()
    value64, per_row_grad = np_alpha_kd_log_space(s, t)
    expected, expected_grad = value64.sum(), per_row_grad
  else:
    loss, reference = LARGE_LOGIT_LOSSES[name]
    expected = reference(s, t)
    expected_grad = central_differences(lambda x: reference(x, t), s, step=1e-2)
  value, grad = jax.jit(jax.value_and_grad(loss))(np.float32(s), np.float32(t))
  np.testing.assert_allclose(float(value), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(grad, np.float64), expected_grad, rtol=1e-4,
                             atol=1e-4 * max(1.0, np.abs(expected_grad).max()))
