"""The one-pass GPU kernels of `categorical`, run by the Pallas interpreter on the CPU.

On CUDA, `kl`, `reverse_kl` and `js` take their forward row statistics from the
Pallas kernels in `divlab.divergences._pallas_stats`; everywhere else from two
XLA passes. These tests run the kernels in interpret mode and compare them with
float64 numpy references (the statistics themselves, several blocks per row
with a ragged last block), and the divergences, gradients and Hessians built on
them with the XLA path and with float64 references.
"""
import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from divlab.divergences import _pallas_stats
from divlab.divergences import categorical as dv

INF, NAN = np.inf, np.nan
RNG = np.random.default_rng(7)
WIDTH = 37  # with block 16: two full blocks and a ragged one


def _logits(rows=6, width=WIDTH, scale=3.0):
  return (scale * RNG.normal(size=(rows, width))).astype(np.float32)


@contextlib.contextmanager
def forward(mode):
  saved = dv._FORWARD  # pylint: disable=protected-access
  dv._FORWARD = mode  # pylint: disable=protected-access
  try:
    yield
  finally:
    dv._FORWARD = saved  # pylint: disable=protected-access


def ref_stats(p, q):
  """float64 (top_p, sum_p, top_q, sum_q, cross) per row, finite rows only."""
  p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
  top_p, top_q = p.max(-1, keepdims=True), q.max(-1, keepdims=True)
  w_p = np.exp(p - top_p)
  cross = np.sum(w_p * ((p - top_p) - (q - top_q)), -1)
  return (top_p[:, 0], w_p.sum(-1), top_q[:, 0], np.exp(q - top_q).sum(-1), cross)


def test_row_stats_match_float64_over_ragged_blocks():
  p, q = _logits(), _logits()
  got = _pallas_stats.row_stats(jnp.asarray(p), jnp.asarray(q), with_cross=True,
                                interpret=True, block=16)
  for ours, ref in zip(got, ref_stats(p, q)):
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=2e-6, atol=1e-5)


def test_row_stats_when_the_max_sits_in_the_last_block():
  # The running sums are rescaled when a later block raises the max.
  p = np.tile(np.linspace(-5.0, 5.0, WIDTH, dtype=np.float32), (2, 1))
  q = p[:, ::-1].copy()
  got = _pallas_stats.row_stats(jnp.asarray(p), jnp.asarray(q), with_cross=True,
                                interpret=True, block=8)
  for ours, ref in zip(got, ref_stats(p, q)):
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=2e-6, atol=1e-5)


def test_mixture_sums_match_float64():
  p, q = _logits(), _logits()
  beta = 0.3
  top_p, sum_p, top_q, sum_q, _ = ref_stats(p, q)
  got = _pallas_stats.mixture_sums(
      jnp.asarray(p), jnp.asarray(q), jnp.asarray(top_p, jnp.float32),
      jnp.log(jnp.asarray(sum_p, jnp.float32)), jnp.asarray(top_q, jnp.float32),
      jnp.log(jnp.asarray(sum_q, jnp.float32)), beta, interpret=True, block=16)
  pp = scipy.special.softmax(p.astype(np.float64), -1)
  qq = scipy.special.softmax(q.astype(np.float64), -1)
  m = beta * pp + (1 - beta) * qq
  np.testing.assert_allclose(np.asarray(got[0]), scipy.special.rel_entr(pp, m).sum(-1),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(got[1]), scipy.special.rel_entr(qq, m).sum(-1),
                             rtol=1e-5, atol=1e-6)


SPECIAL_P = np.array([
    [1.0, 2.0, 3.0, 0.5, -1.0],
    [INF, 0.0, 1.0, 2.0, 0.0],       # point mass
    [INF, INF, 0.0, 1.0, 0.0],       # point mass on two entries
    [-INF, -INF, -INF, -INF, -INF],  # no mass
    [1.0, NAN, 0.0, 0.0, 0.0],       # NaN row
    [1e4, -1e4, 3e3, 0.0, 1e4 - 2],  # huge logits
    [0.0, 1.0, 2.0, 3.0, 4.0],
], np.float32)
SPECIAL_Q = np.array([
    [0.0, 1.0, -1.0, 0.0, 2.0],
    [0.0, 1.0, 2.0, 3.0, 0.0],
    [1.0, 2.0, 3.0, INF, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0],
    [-1e4, 1e4, 0.0, 2.0, 1e4],
    [-INF, -INF, 0.0, 1.0, 2.0],     # Q without mass where P has some: KL = inf
], np.float32)


@pytest.mark.parametrize("name", ["kl", "reverse_kl", "js", "js0.2"])
def test_kernel_path_equals_xla_path_on_special_values(name):
  fn = {"kl": dv.kl, "reverse_kl": dv.reverse_kl, "js": dv.js,
        "js0.2": lambda p, q: dv.js(p, q, beta=0.2)}[name]

  def value_and_grads(mode):
    with forward(mode):
      values = jax.jit(fn)(SPECIAL_P, SPECIAL_Q)
      # Gradients on the rows whose value is finite (row by row, as a loss would).
      finite = np.isfinite(np.asarray(values))
      weights = jnp.asarray(np.where(finite, 1.0, 0.0), jnp.float32)
      grads = jax.jit(jax.grad(lambda p, q: jnp.sum(
          jnp.where(finite, fn(p, q), 0.0) * weights), argnums=(0, 1)))(
              jnp.where(np.isfinite(SPECIAL_P), SPECIAL_P, 0.0),
              jnp.where(np.isfinite(SPECIAL_Q), SPECIAL_Q, 0.0))
    return values, grads

  kernel_values, kernel_grads = value_and_grads("pallas_interpret")
  xla_values, xla_grads = value_and_grads("two_pass")
  np.testing.assert_allclose(kernel_values, xla_values, rtol=2e-6, atol=2e-6)
  assert np.isnan(kernel_values[4])  # NaN row
  for ours, ref in zip(kernel_grads, xla_grads):
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=2e-6)


def test_kernel_path_limits_against_float64():
  with forward("pallas_interpret"):
    values = np.asarray(jax.jit(dv.kl)(SPECIAL_P, SPECIAL_Q))
  # Point mass on entry 0: KL = -log q_0.
  assert values[1] == pytest.approx(-scipy.special.log_softmax(SPECIAL_Q[1].astype(float))[0],
                                    rel=1e-6)
  # P uniform on two entries, Q a point mass on another one: infinite.
  assert values[2] == INF
  assert values[3] == 0.0       # no mass
  assert values[6] == INF       # Q has no mass where P has


def test_bfloat16_inputs_accumulate_in_float32_and_return_input_dtype_gradients():
  p = jnp.asarray(_logits(4, 300), jnp.bfloat16)
  q = jnp.asarray(_logits(4, 300), jnp.bfloat16)
  ref = scipy.special.rel_entr(scipy.special.softmax(np.asarray(p, np.float64), -1),
                               scipy.special.softmax(np.asarray(q, np.float64), -1)).sum(-1)
  with forward("pallas_interpret"):
    value, grads = jax.jit(jax.value_and_grad(lambda a, b: dv.kl(a, b).sum(),
                                              argnums=(0, 1)))(p, q)
    rows = jax.jit(dv.kl)(p, q)
  assert rows.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(rows), ref, rtol=1e-5)
  assert grads[0].dtype == jnp.bfloat16 and grads[1].dtype == jnp.bfloat16
  assert float(value) == pytest.approx(ref.sum(), rel=1e-5)
  # Closed forms, rounded once to bf16: dKL/dp = P (log P - log Q - KL),
  # dKL/dq = Q - P (8 significant bits, relative to each gradient's scale).
  log_pp = scipy.special.log_softmax(np.asarray(p, np.float64), -1)
  log_qq = scipy.special.log_softmax(np.asarray(q, np.float64), -1)
  pp, qq = np.exp(log_pp), np.exp(log_qq)
  expected = [pp * (log_pp - log_qq - ref[:, None]), qq - pp]
  for grad, want in zip(grads, expected):
    np.testing.assert_allclose(np.asarray(grad, np.float64), want, rtol=2.0 ** -7,
                               atol=2.0 ** -8 * np.abs(want).max())


def test_hessian_through_the_kernel_path_is_the_fisher_metric():
  # d^2 KL(P||Q) / d q^2 = diag(q) - q q^T, independent of P.
  p = jnp.asarray(_logits(1, 7)[0])
  q = jnp.asarray(_logits(1, 7)[0])
  with forward("pallas_interpret"):
    hess = jax.jit(jax.hessian(lambda b: dv.kl(p, b)))(q)
  qq = scipy.special.softmax(np.asarray(q, np.float64))
  np.testing.assert_allclose(np.asarray(hess), np.diag(qq) - np.outer(qq, qq), atol=2e-6)


def test_kernel_path_under_vmap_matches_batched_call():
  p, q = _logits(3, 20), _logits(3, 20)
  with forward("pallas_interpret"):
    batched = jax.jit(dv.js)(p, q)
    mapped = jax.jit(jax.vmap(dv.js))(p, q)
  np.testing.assert_allclose(np.asarray(mapped), np.asarray(batched), rtol=1e-6)
