"""Information-bottleneck losses against float64 numpy references.

The references below are written from the formulas in the papers, as explicit
double sums / matrix products at float64, independently of divlab's kernel
module.
"""
import functools

import jax
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np
import pytest
from scipy import stats

from divlab.losses import bottleneck
from finite_differences import central_differences

RTOL = 2e-5
ATOL = 2e-6


def _gram(a, sigma):
  """exp(-||a_i - a_j||^2 / (2 sigma^2)) by an explicit double loop."""
  n = a.shape[0]
  out = np.empty((n, n))
  for i in range(n):
    for j in range(n):
      out[i, j] = np.exp(-np.sum((a[i] - a[j]) ** 2) / (2.0 * sigma ** 2))
  return out


def _cross_gram(a, b, sigma):
  out = np.empty((a.shape[0], b.shape[0]))
  for i in range(a.shape[0]):
    for j in range(b.shape[0]):
      out[i, j] = np.exp(-np.sum((a[i] - b[j]) ** 2) / (2.0 * sigma ** 2))
  return out


def _conditional_cs_reference(x, y, yhat, sigma_x, sigma_y, released_denominator=False):
  """Yu et al. (ICLR 2024), Prop. 1, with d_j = (sum_i K_ji)^2.

  ``released_denominator``: d_j = sum_i K_ji^2, as in the authors' code.
  """
  k = _gram(x, sigma_x)
  l1 = _gram(y, sigma_y)
  l2 = _gram(yhat, sigma_y)
  l21 = _cross_gram(yhat, y, sigma_y)  # row j: yhat_j, column i: y_i
  n = x.shape[0]
  terms = np.zeros(3)
  for j in range(n):
    if released_denominator:
      d_j = sum(k[j, i] ** 2 for i in range(n))
    else:
      d_j = sum(k[j, i] for i in range(n)) ** 2
    terms[0] += sum(k[j, i] * l1[j, i] for i in range(n)) / d_j
    terms[1] += sum(k[j, i] * l2[j, i] for i in range(n)) / d_j
    terms[2] += sum(k[j, i] * l21[j, i] for i in range(n)) / d_j
  return np.log(terms[0]) + np.log(terms[1]) - 2.0 * np.log(terms[2])


def _cs_qmi_reference(a, b, sigma_a, sigma_b):
  """Prop. 2: log(tr(KQ)/N^2) + log(1'K1 1'Q1/N^4) - 2 log(1'KQ1/N^3)."""
  k = _gram(a, sigma_a)
  q = _gram(b, sigma_b)
  n = a.shape[0]
  ones = np.ones(n)
  return (np.log(np.trace(k @ q) / n ** 2)
          + np.log(ones @ k @ ones * (ones @ q @ ones) / n ** 4)
          - 2.0 * np.log(ones @ k @ q @ ones / n ** 3))


def _normalised_qmi_reference(a, b, sigma_a, sigma_b):
  return (_cs_qmi_reference(a, b, sigma_a, sigma_b)
          / np.sqrt(_cs_qmi_reference(a, a, sigma_a, sigma_a)
                    * _cs_qmi_reference(b, b, sigma_b, sigma_b)))


def _median_distance(*samples):
  z = np.concatenate(samples, axis=0)
  distances = [np.sqrt(np.sum((z[i] - z[j]) ** 2))
               for i in range(len(z)) for j in range(i + 1, len(z))]
  return float(np.median(distances))


def _hsic_reference(a, b, sigma_a, sigma_b):
  """Gretton et al. (2005): tr(K H L H) / (n-1)^2."""
  n = a.shape[0]
  h = np.eye(n) - np.ones((n, n)) / n
  return np.trace(_gram(a, sigma_a) @ h @ _gram(b, sigma_b) @ h) / (n - 1) ** 2


def _kde_mi_reference(mean, variance):
  """Kolchinsky & Tracey: -(1/N) sum_i log (1/N) sum_j exp(-d_ij / (2 var))."""
  n = mean.shape[0]
  total = 0.0
  for i in range(n):
    inner = sum(np.exp(-np.sum((mean[i] - mean[j]) ** 2) / (2.0 * variance))
                for j in range(n)) / n
    total += np.log(inner)
  return -total / n


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  n = 12
  x = rng.normal(size=(n, 3))
  y = x[:, :1] - 0.5 * x[:, 1:2] ** 2 + 0.3 * rng.normal(size=(n, 1))
  yhat = y + 0.4 * rng.normal(size=(n, 1))
  t = np.tanh(x @ rng.normal(size=(3, 4))) + 0.1 * rng.normal(size=(n, 4))
  return {"x": x, "y": y, "yhat": yhat, "t": t}


def _f32(*arrays):
  return [jnp.asarray(a, jnp.float32) for a in arrays]


class TestCsIb:

  @pytest.mark.parametrize("sigma", [1.0, 0.7])
  def test_matches_double_sums(self, batch, sigma):
    x, y, yhat, t = batch["x"], batch["y"], batch["yhat"], batch["t"]
    beta = 0.3
    loss, terms = jax.jit(functools.partial(
        bottleneck.cs_ib, beta=beta, bandwidth=sigma, return_terms=True))(
            *_f32(yhat, y, x, t))
    expected_d = _conditional_cs_reference(x, y, yhat, sigma, sigma)
    expected_i = _normalised_qmi_reference(x, t, sigma, sigma)
    np.testing.assert_allclose(terms["prediction"], expected_d, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(terms["compression"], expected_i, rtol=RTOL)
    np.testing.assert_allclose(loss, expected_d + beta * expected_i, rtol=1e-4,
                               atol=1e-5)

  def test_released_denominator_matches_double_sums(self, batch):
    x, y, yhat, t = batch["x"], batch["y"], batch["yhat"], batch["t"]
    _, terms = jax.jit(functools.partial(
        bottleneck.cs_ib, beta=0.3, bandwidth=0.7, prediction="cs_sum_of_squares",
        return_terms=True))(*_f32(yhat, y, x, t))
    expected = _conditional_cs_reference(x, y, yhat, 0.7, 0.7, released_denominator=True)
    paper = _conditional_cs_reference(x, y, yhat, 0.7, 0.7)
    np.testing.assert_allclose(terms["prediction"], expected, rtol=1e-4, atol=1e-5)
    # The two denominators give different values on this batch.
    assert abs(expected - paper) > 1e-3

  def test_unknown_denominator_raises(self, batch):
    from divlab.divergences import kernel
    with pytest.raises(ValueError, match="denominator"):
      kernel.conditional_cauchy_schwarz(batch["x"], batch["y"], batch["yhat"],
                                        denominator="sum")

  def test_median_bandwidth_per_variable(self, batch):
    x, y, yhat, t = batch["x"], batch["y"], batch["yhat"], batch["t"]
    loss, terms = jax.jit(functools.partial(
        bottleneck.cs_ib, beta=0.5, bandwidth="median", return_terms=True))(
            *_f32(yhat, y, x, t))
    sigma_x = _median_distance(x)
    sigma_y = _median_distance(y, yhat)  # targets and predictions pooled
    sigma_t = _median_distance(t)
    expected_d = _conditional_cs_reference(x, y, yhat, sigma_x, sigma_y)
    expected_i = _normalised_qmi_reference(x, t, sigma_x, sigma_t)
    np.testing.assert_allclose(terms["prediction"], expected_d, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(terms["compression"], expected_i, rtol=RTOL)
    np.testing.assert_allclose(loss, expected_d + 0.5 * expected_i, rtol=1e-4)

  def test_median_bandwidth_receives_no_gradient(self, batch):
    # With the widths frozen at their medians, the gradient is that of the
    # fixed-width formula: central differences of the float64 double sums.
    x, y, yhat, t = _f32(batch["x"], batch["y"], batch["yhat"], batch["t"])
    sigma = bottleneck.resolve_bandwidth("median", y, yhat)
    assert np.isclose(float(sigma), _median_distance(batch["y"], batch["yhat"]),
                      rtol=1e-5)

    def pred(p, bandwidth):
      return bottleneck.cs_ib(p, y, x, t, beta=0.0, bandwidth=bandwidth)

    grad_median = jax.jit(jax.grad(pred), static_argnums=1)(yhat, "median")
    # The float32-rounded inputs the gradient was taken at.
    x64, y64, yhat64 = (np.asarray(a, np.float64) for a in (x, y, yhat))
    sigma_x, sigma_y = _median_distance(x64), _median_distance(y64, yhat64)
    expected = central_differences(
        lambda p: _conditional_cs_reference(x64, y64, p, sigma_x, sigma_y), yhat64)
    np.testing.assert_allclose(grad_median, expected, rtol=1e-4,
                               atol=1e-5 * np.abs(expected).max())

  def test_zero_prediction_term_when_predictions_equal_targets(self, batch):
    x, y, t = _f32(batch["x"], batch["y"], batch["t"])
    for bandwidth in (1.0, "median"):
      loss, terms = bottleneck.cs_ib(y, y, x, t, beta=0.0, bandwidth=bandwidth,
                                     return_terms=True)
      assert abs(float(terms["prediction"])) < 1e-6
      assert abs(float(loss)) < 1e-6

  def test_prediction_term_is_positive_when_predictions_differ(self, batch):
    x, y, yhat, t = _f32(batch["x"], batch["y"], batch["yhat"], batch["t"])
    _, terms = bottleneck.cs_ib(yhat, y, x, t, beta=1.0, return_terms=True)
    assert float(terms["prediction"]) > 1e-3

  def test_sse_ablation_equals_released_collapsed_estimator(self, batch):
    """Replays the released kernel code on [B] vectors (natural log)."""
    x, y, yhat, t = batch["x"], batch["y"][:, 0], batch["yhat"][:, 0], batch["t"]
    sigma = 1.0

    def released_gaussian_matrix(a, b):
      # The released helper: |a|^2 + |b|^2 - 2 a.b with sums over the LAST
      # axis, which for [B] vectors is the whole batch: a single number.
      g = np.sum(a * a, axis=-1)
      h = np.sum(b * b, axis=-1)
      return np.exp(-(g + h - 2.0 * a @ b) / (2.0 * sigma ** 2))

    k = _gram(x, sigma)
    l1 = released_gaussian_matrix(y, y)
    l2 = released_gaussian_matrix(yhat, yhat)
    l21 = released_gaussian_matrix(yhat, y)
    denominator = (k ** 2).sum(-1)  # the released code's d_j

    def term(l):
      return ((k * l).sum(-1) / denominator).sum(0)

    collapsed = -2.0 * np.log(term(l21)) + np.log(term(l1)) + np.log(term(l2))
    np.testing.assert_allclose(collapsed, np.sum((yhat - y) ** 2), rtol=1e-10)
    _, terms = bottleneck.cs_ib(*_f32(yhat[:, None], y[:, None], x, t),
                                beta=0.1, prediction="sse", return_terms=True)
    np.testing.assert_allclose(terms["prediction"], collapsed, rtol=1e-5)

  def test_sse_ablation_scales_with_bandwidth(self, batch):
    x, y, yhat, t = _f32(batch["x"], batch["y"], batch["yhat"], batch["t"])
    _, terms = bottleneck.cs_ib(yhat, y, x, t, beta=0.1, prediction="sse",
                                bandwidth=2.0, return_terms=True)
    expected = np.sum((batch["yhat"] - batch["y"]) ** 2) / 4.0
    np.testing.assert_allclose(terms["prediction"], expected, rtol=1e-5)

  def test_gradients_match_finite_differences(self, batch):
    with jax.enable_x64(True):
      x, y, yhat, t = (jnp.asarray(batch[k], jnp.float64)
                       for k in ("x", "y", "yhat", "t"))

      def loss(p, rep):
        return bottleneck.cs_ib(p, y, x, rep, beta=0.7)

      jtu.check_grads(jax.jit(loss), (yhat, t), order=1, modes=["rev"], eps=1e-5,
                      atol=1e-6, rtol=1e-6)

  def test_one_dimensional_targets_raise(self, batch):
    x, y, yhat, t = _f32(batch["x"], batch["y"], batch["yhat"], batch["t"])
    with pytest.raises(ValueError, match="targets"):
      bottleneck.cs_ib(yhat[:, 0], y[:, 0], x, t, beta=0.1)
    with pytest.raises(ValueError, match="targets"):
      bottleneck.cs_ib(yhat, y[:, 0], x, t, beta=0.1)
    with pytest.raises(ValueError, match="predictions"):
      bottleneck.cs_ib(yhat[:, 0], y, x, t, beta=0.1)

  def test_bad_arguments_raise(self, batch):
    x, y, yhat, t = _f32(batch["x"], batch["y"], batch["yhat"], batch["t"])
    with pytest.raises(ValueError, match="prediction"):
      bottleneck.cs_ib(yhat, y, x, t, beta=0.1, prediction="kl")
    with pytest.raises(ValueError, match="bandwidth"):
      bottleneck.cs_ib(yhat, y, x, t, beta=0.1, bandwidth="silverman")
    with pytest.raises(ValueError, match="bandwidth"):
      bottleneck.cs_ib(yhat, y, x, t, beta=0.1, bandwidth=-1.0)
    with pytest.raises(ValueError, match="beta"):
      bottleneck.cs_ib(yhat, y, x, t, beta=-0.1)
    with pytest.raises(ValueError, match="`t`"):
      bottleneck.cs_ib(yhat, y, x, t[:5], beta=0.1)
    with pytest.raises(ValueError, match="`x`"):
      bottleneck.cs_ib(yhat, y, x[:, 0], t, beta=0.1)
    with pytest.raises(ValueError, match="same shape"):
      bottleneck.cs_ib(jnp.concatenate([yhat, yhat], 1), y, x, t, beta=0.1)


class TestVib:

  def test_kl_matches_covariance_closed_form(self):
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(5, 3))
    log_variance = rng.normal(scale=0.5, size=(5, 3))
    got = jax.jit(bottleneck.gaussian_kl_to_standard_normal)(
        *_f32(mean, log_variance))
    expected = []
    for m, lv in zip(mean, log_variance):
      cov = np.diag(np.exp(lv))  # KL(N(m, C) || N(0, I)), general formula
      expected.append(0.5 * (np.trace(cov) + m @ m - len(m)
                             - np.log(np.linalg.det(cov))))
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)

  def test_kl_matches_monte_carlo(self):
    rng = np.random.default_rng(2)
    mean, log_variance = np.array([0.5, -1.0]), np.array([-0.3, 0.4])
    std = np.exp(0.5 * log_variance)
    samples = mean + std * rng.normal(size=(400_000, 2))
    log_ratio = (stats.norm.logpdf(samples, mean, std).sum(-1)
                 - stats.norm.logpdf(samples).sum(-1))
    got = bottleneck.gaussian_kl_to_standard_normal(*_f32(mean, log_variance))
    np.testing.assert_allclose(got, log_ratio.mean(), atol=5e-3)

  def test_loss_is_gaussian_nll_plus_beta_kl(self, batch):
    rng = np.random.default_rng(3)
    y, yhat = batch["y"], batch["yhat"]
    mean = rng.normal(size=(12, 4))
    log_variance = rng.normal(scale=0.3, size=(12, 4))
    variance = 0.6
    loss, terms = bottleneck.vib(*_f32(yhat, y, mean, log_variance), beta=0.2,
                                 decoder_variance=variance, return_terms=True)
    nll = -np.mean(stats.norm.logpdf(y[:, 0], yhat[:, 0], np.sqrt(variance)))
    kl = np.mean(0.5 * np.sum(mean ** 2 + np.exp(log_variance) - 1 - log_variance,
                              axis=-1))
    np.testing.assert_allclose(terms["prediction"], nll, rtol=RTOL)
    np.testing.assert_allclose(terms["compression"], kl, rtol=RTOL)
    np.testing.assert_allclose(loss, nll + 0.2 * kl, rtol=RTOL)

  def test_reparameterize_moments_and_gradient(self):
    mean = jnp.array([[1.0, -2.0]])
    log_variance = jnp.array([[0.0, np.log(4.0)]])
    keys = jax.random.split(jax.random.key(0), 20_000)
    samples = jax.jit(jax.vmap(
        lambda k: bottleneck.reparameterize(k, mean, log_variance)))(keys)
    np.testing.assert_allclose(samples.mean(0)[0], [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(samples.var(0)[0], [1.0, 4.0], rtol=0.05)
    key = jax.random.key(7)
    eps = (bottleneck.reparameterize(key, mean, log_variance) - mean) / 2 ** np.array([0, 1])
    grad_lv = jax.grad(lambda lv: bottleneck.reparameterize(key, mean, lv).sum())(
        log_variance)
    # d/d(lv) [m + exp(lv/2) eps] = 0.5 exp(lv/2) eps
    np.testing.assert_allclose(grad_lv, 0.5 * jnp.exp(0.5 * log_variance) * eps,
                               rtol=1e-5)
    grad_mean = jax.grad(lambda m: bottleneck.reparameterize(key, m, log_variance).sum())(mean)
    np.testing.assert_allclose(grad_mean, np.ones((1, 2)))

  def test_gradients_match_finite_differences(self, batch):
    with jax.enable_x64(True):
      y, yhat = jnp.asarray(batch["y"]), jnp.asarray(batch["yhat"])
      mean = jnp.asarray(batch["t"])
      log_variance = 0.2 * mean

      def loss(p, m, lv):
        return bottleneck.vib(p, y, m, lv, beta=0.3)

      jtu.check_grads(jax.jit(loss), (yhat, mean, log_variance), order=1, modes=["rev"],
                      eps=1e-5, atol=1e-7, rtol=1e-6)

  def test_bad_arguments_raise(self, batch):
    y, yhat, t = _f32(batch["y"], batch["yhat"], batch["t"])
    with pytest.raises(ValueError, match="targets"):
      bottleneck.vib(yhat[:, 0], y[:, 0], t, t, beta=0.1)
    with pytest.raises(ValueError, match="decoder_variance"):
      bottleneck.vib(yhat, y, t, t, beta=0.1, decoder_variance=0.0)
    with pytest.raises(ValueError, match="log_variance"):
      bottleneck.gaussian_kl_to_standard_normal(t, t[:, :2])


class TestNib:

  def test_kde_bound_matches_double_sums(self, batch):
    mean = batch["t"]
    for log_variance in (-1.0, 0.5):
      got = jax.jit(functools.partial(bottleneck.kde_mutual_information,
                                      noise_log_variance=log_variance))(*_f32(mean))
      np.testing.assert_allclose(got, _kde_mi_reference(mean, np.exp(log_variance)),
                                 rtol=RTOL, atol=ATOL)

  def test_kde_bound_limits(self):
    assert abs(float(bottleneck.kde_mutual_information(jnp.ones((6, 2))))) < 1e-6
    spread = 100.0 * jnp.arange(6.0)[:, None]
    np.testing.assert_allclose(bottleneck.kde_mutual_information(spread),
                               np.log(6.0), rtol=1e-6)

  @pytest.mark.parametrize("fn,power", [(bottleneck.nib, 1),
                                        (bottleneck.squared_nib, 2)])
  def test_loss_is_mse_plus_weighted_bound(self, batch, fn, power):
    y, yhat, mean = batch["y"], batch["yhat"], batch["t"]
    loss, terms = fn(*_f32(yhat, y, mean), beta=0.25, noise_log_variance=-0.5,
                     return_terms=True)
    mse = np.mean(np.sum((yhat - y) ** 2, axis=-1))
    bound = _kde_mi_reference(mean, np.exp(-0.5))
    np.testing.assert_allclose(terms["prediction"], mse, rtol=RTOL)
    np.testing.assert_allclose(terms["compression"], bound, rtol=RTOL)
    np.testing.assert_allclose(loss, mse + 0.25 * bound ** power, rtol=RTOL)

  def test_gradients_match_finite_differences(self, batch):
    with jax.enable_x64(True):
      y, yhat = jnp.asarray(batch["y"]), jnp.asarray(batch["yhat"])
      mean = jnp.asarray(batch["t"])
      for fn in (bottleneck.nib, bottleneck.squared_nib):
        jtu.check_grads(jax.jit(lambda p, m, lv: fn(p, y, m, beta=0.4,
                                                    noise_log_variance=lv)),
                        (yhat, mean, jnp.asarray(-1.0)), order=1, modes=["rev"],
                        eps=1e-5, atol=1e-7, rtol=1e-6)


class TestHsicBottleneck:

  @pytest.mark.parametrize("bandwidth", [1.0, "median"])
  def test_matches_trace_formula(self, batch, bandwidth):
    x, y, yhat, t = batch["x"], batch["y"], batch["yhat"], batch["t"]
    loss, terms = bottleneck.hsic_bottleneck(
        *_f32(yhat, y, x, t), beta=0.5, lambda_y=3.0, bandwidth=bandwidth,
        return_terms=True)
    if bandwidth == "median":
      sx, sy, st = _median_distance(x), _median_distance(y), _median_distance(t)
    else:
      sx = sy = st = bandwidth
    hsic_xt = _hsic_reference(x, t, sx, st)
    hsic_yt = _hsic_reference(y, t, sy, st)
    mse = np.mean(np.sum((yhat - y) ** 2, axis=-1))
    np.testing.assert_allclose(terms["compression"], hsic_xt, rtol=1e-4)
    np.testing.assert_allclose(terms["relevance"], hsic_yt, rtol=1e-4)
    np.testing.assert_allclose(loss, mse + 0.5 * (hsic_xt - 3.0 * hsic_yt),
                               rtol=1e-4)

  def test_relevance_rewards_dependence_on_targets(self, batch):
    # t = y makes HSIC(y, t) large; an independent t makes it small.
    y = batch["y"]
    rng = np.random.default_rng(4)
    dependent = bottleneck.hsic_bottleneck(*_f32(y, y, batch["x"], y), beta=1.0,
                                           return_terms=True)[1]["relevance"]
    independent = bottleneck.hsic_bottleneck(
        *_f32(y, y, batch["x"], rng.normal(size=y.shape)), beta=1.0,
        return_terms=True)[1]["relevance"]
    assert float(dependent) > 3 * float(independent)

  def test_gradients_match_finite_differences(self, batch):
    with jax.enable_x64(True):
      x, y, yhat, t = (jnp.asarray(batch[k]) for k in ("x", "y", "yhat", "t"))
      jtu.check_grads(
          jax.jit(lambda p, rep: bottleneck.hsic_bottleneck(p, y, x, rep, beta=2.0)),
          (yhat, t), order=1, modes=["rev"], eps=1e-5, atol=1e-7, rtol=1e-6)


class TestMse:

  def test_matches_numpy(self, batch):
    y = np.concatenate([batch["y"], batch["yhat"]], axis=1)
    yhat = y + 0.1
    np.testing.assert_allclose(bottleneck.mse(*_f32(yhat, y)),
                               np.mean(np.sum((yhat - y) ** 2, -1)), rtol=RTOL)

  def test_one_dimensional_targets_raise(self):
    with pytest.raises(ValueError, match="targets"):
      bottleneck.mse(jnp.zeros(4), jnp.zeros(4))
