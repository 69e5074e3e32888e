"""Noised Gaussian-mixture densities, scores, eps and guidance against float64 references.

References: scipy.stats.multivariate_normal for the density, jax.grad of the
log-density for the score, and an explicit numpy responsibility-weighted sum
with matrix inverses for the (class-conditional) eps.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from divlab.diffusion import gmm

RNG = np.random.default_rng(3)
WEIGHTS = np.array([0.2, 0.5, 0.3])
MEANS = np.array([[2.0, -1.0, 0.5], [-1.5, 0.5, 1.0], [0.0, 2.0, -2.0]])
_A = RNG.normal(size=(3, 3, 3))
FULL_COVS = np.einsum("kij,klj->kil", _A, _A) * 0.3 + 0.2 * np.eye(3)
DIAG_VARS = np.array([[0.3, 0.8, 0.2], [1.5, 0.4, 0.6], [0.5, 0.5, 2.0]])
LABELS = np.array([0, 1, 0])
POINTS = RNG.normal(size=(7, 3)) * 1.5
ALPHA, SIGMA = 0.8, 0.6


def numpy_mixture(covs_full, weights, alpha, sigma):
  return [(w, alpha * m, alpha ** 2 * c + sigma ** 2 * np.eye(3))
          for w, m, c in zip(weights, MEANS, covs_full)]


def numpy_log_prob(x, comps):
  return scipy.special.logsumexp(
      [np.log(w) + scipy.stats.multivariate_normal(m, c).logpdf(x) for w, m, c in comps], axis=0)


def numpy_eps(x, comps, sigma):
  logs = np.stack([np.log(w) + scipy.stats.multivariate_normal(m, c).logpdf(x)
                   for w, m, c in comps], axis=-1)
  resp = np.exp(logs - scipy.special.logsumexp(logs, axis=-1, keepdims=True))
  scores = np.stack([(m - x) @ np.linalg.inv(c).T for _, m, c in comps], axis=-2)
  return -sigma * np.einsum("nk,nkd->nd", resp, scores)


def class_weights(label):
  w = np.where(LABELS == label, WEIGHTS, 0.0)
  return w / w.sum()


def make(kind):
  covs = FULL_COVS if kind == "full" else DIAG_VARS
  return gmm.gaussian_mixture(WEIGHTS, MEANS, covs, labels=LABELS)


def full_covs(kind):
  return FULL_COVS if kind == "full" else np.stack([np.diag(v) for v in DIAG_VARS])


BATCH_LABELS = np.array([0, 1, 1, 0, 0, 1, 0])
GUIDANCE = np.array([0.0, 1.0, 7.5])


@jax.jit
def _everything(mixture, x, alpha, sigma):
  """All quantities under test in one compiled program per mixture structure."""
  out = {"log_prob": gmm.noised_log_prob(mixture, x, alpha, sigma),
         "eps": gmm.noised_eps(mixture, x, alpha, sigma),
         "eps_batch_labels": gmm.noised_eps(mixture, x, alpha, sigma, BATCH_LABELS)}
  for label in (None, 0, 1):
    log_p = lambda y, label=label: gmm.noised_log_prob(mixture, y, alpha, sigma, label)
    out[f"grad_{label}"] = jax.vmap(jax.grad(log_p))(x)
    out[f"score_{label}"] = gmm.noised_score(mixture, x, alpha, sigma, label)
    out[f"eps_{label}"] = gmm.noised_eps(mixture, x, alpha, sigma, label)
  out["guided"] = jax.vmap(lambda w: gmm.guided_eps(mixture, x, alpha, sigma, 0, w))(GUIDANCE)
  return out


_CACHE = {}


def outputs(kind, alpha=ALPHA, sigma=SIGMA):
  key = (kind, alpha, sigma)
  if key not in _CACHE:
    with jax.enable_x64(True):
      result = _everything(make(kind), jnp.asarray(POINTS), alpha, sigma)
      _CACHE[key] = jax.tree_util.tree_map(np.asarray, result)
  return _CACHE[key]


@pytest.mark.parametrize("kind", ["full", "diag"])
def test_log_prob_matches_scipy(kind):
  comps = numpy_mixture(full_covs(kind), WEIGHTS, ALPHA, SIGMA)
  np.testing.assert_allclose(outputs(kind)["log_prob"], numpy_log_prob(POINTS, comps), rtol=1e-12)
  clean = numpy_mixture(full_covs(kind), WEIGHTS, 1.0, 0.0)
  np.testing.assert_allclose(outputs(kind, 1.0, 0.0)["log_prob"], numpy_log_prob(POINTS, clean),
                             rtol=1e-12)


@pytest.mark.parametrize("kind", ["full", "diag"])
@pytest.mark.parametrize("label", [None, 0, 1])
def test_score_is_grad_of_log_prob(kind, label):
  out = outputs(kind)
  np.testing.assert_allclose(out[f"score_{label}"], out[f"grad_{label}"], rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(out[f"eps_{label}"], -SIGMA * out[f"grad_{label}"], rtol=1e-10,
                             atol=1e-12)


@pytest.mark.parametrize("kind", ["full", "diag"])
def test_eps_matches_numpy_responsibilities(kind):
  out = outputs(kind)
  comps = numpy_mixture(full_covs(kind), WEIGHTS, ALPHA, SIGMA)
  np.testing.assert_allclose(out["eps"], numpy_eps(POINTS, comps, SIGMA), rtol=1e-10)
  comps1 = [c for c in numpy_mixture(full_covs(kind), class_weights(1), ALPHA, SIGMA) if c[0] > 0]
  np.testing.assert_allclose(out["eps_1"], numpy_eps(POINTS, comps1, SIGMA), rtol=1e-10)


def test_single_gaussian_eps_is_linear():
  # One component: eps = sigma C^{-1} (x - alpha mu), C = alpha^2 S + sigma^2 I.
  with jax.enable_x64(True):
    mixture = gmm.gaussian_mixture([1.0], MEANS[:1], FULL_COVS[:1])
    got = jax.jit(gmm.noised_eps)(mixture, POINTS, ALPHA, SIGMA)
  cov = ALPHA ** 2 * FULL_COVS[0] + SIGMA ** 2 * np.eye(3)
  expected = SIGMA * np.linalg.solve(cov, (POINTS - ALPHA * MEANS[0]).T).T
  np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_class_log_weights():
  mixture = make("diag")
  class_log_weights = jax.jit(gmm.class_log_weights)
  np.testing.assert_allclose(np.exp(class_log_weights(mixture, 0)), class_weights(0), rtol=1e-6)
  batch = np.exp(class_log_weights(mixture, jnp.array([1, 0])))
  np.testing.assert_allclose(batch, np.stack([class_weights(1), class_weights(0)]), rtol=1e-6)


def test_per_example_labels_equal_scalar_labels():
  out = outputs("full")
  for label in (0, 1):
    rows = BATCH_LABELS == label
    np.testing.assert_allclose(out["eps_batch_labels"][rows], out[f"eps_{label}"][rows],
                               rtol=1e-13)


@pytest.mark.parametrize("kind", ["full", "diag"])
def test_classifier_free_guidance_formula(kind):
  comps = numpy_mixture(full_covs(kind), WEIGHTS, ALPHA, SIGMA)
  comps0 = [c for c in numpy_mixture(full_covs(kind), class_weights(0), ALPHA, SIGMA) if c[0] > 0]
  uncond, cond = numpy_eps(POINTS, comps, SIGMA), numpy_eps(POINTS, comps0, SIGMA)
  for w, got in zip(GUIDANCE, outputs(kind)["guided"]):
    np.testing.assert_allclose(got, uncond + w * (cond - uncond), rtol=1e-10, atol=1e-12)
  # w = 1 is exactly the conditional model, w = 0 the unconditional one.
  np.testing.assert_allclose(outputs(kind)["guided"][1], cond, rtol=1e-10)
  np.testing.assert_allclose(outputs(kind)["guided"][0], uncond, rtol=1e-10)


def test_eps_functions_of_a_schedule_match_numpy_at_its_alpha_and_sigma():
  # mixture_eps_fn / guided_mixture_eps_fn at time t use the linear schedule's
  # alpha_t and sigma_t: log alpha = -t^2 (20 - 0.1) / 4 - 0.1 t / 2.
  from divlab.diffusion import schedules  # pylint: disable=import-outside-toplevel
  t = 0.37
  alpha = np.exp(-0.25 * t ** 2 * (20.0 - 0.1) - 0.5 * t * 0.1)
  sigma = np.sqrt(1.0 - alpha ** 2)
  schedule = schedules.linear_schedule(0.1, 20.0)
  comps = numpy_mixture(FULL_COVS, WEIGHTS, alpha, sigma)
  comps0 = [c for c in numpy_mixture(FULL_COVS, class_weights(0), alpha, sigma) if c[0] > 0]
  uncond, cond = numpy_eps(POINTS, comps, sigma), numpy_eps(POINTS, comps0, sigma)
  with jax.enable_x64(True):
    mixture = make("full")  # float64 parameters
    x, time = jnp.asarray(POINTS), jnp.float64(t)
    plain = gmm.mixture_eps_fn(mixture, schedule)(x, time)
    conditional = gmm.mixture_eps_fn(mixture, schedule, 0)(x, time)
    guided = gmm.guided_mixture_eps_fn(mixture, schedule, 0, 3.0)(x, time)
  np.testing.assert_allclose(plain, uncond, rtol=1e-10)
  np.testing.assert_allclose(conditional, cond, rtol=1e-10)
  np.testing.assert_allclose(guided, uncond + 3.0 * (cond - uncond), rtol=1e-10, atol=1e-12)


_sample = jax.jit(gmm.sample_mixture, static_argnames="num_samples")


def mixture_moments(weights, covs_full):
  mean = weights @ MEANS
  second = sum(w * (c + np.outer(m, m)) for w, m, c in zip(weights, MEANS, covs_full))
  return mean, second - np.outer(mean, mean)


@pytest.mark.parametrize("kind", ["full", "diag"])
def test_exact_samples_have_mixture_moments(kind):
  n = 40000
  samples = np.asarray(_sample(make(kind), jax.random.key(0), n), np.float64)
  mean, cov = mixture_moments(WEIGHTS, full_covs(kind))
  # Five standard errors: of the mean from the exact covariance, of each
  # covariance entry from the sample variance of the centred products.
  np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 5 * np.sqrt(np.diag(cov) / n))
  centred = samples - mean
  products = centred[:, :, None] * centred[:, None, :]
  cov_se = products.std(axis=0) / np.sqrt(n)
  np.testing.assert_array_less(np.abs(products.mean(0) - cov), 5 * cov_se)


def test_class_samples_stay_in_their_class():
  mixture = make("full")
  samples = np.asarray(_sample(mixture, jax.random.key(1), 20000, label=1), np.float64)
  # Class 1 is the single component 1.
  np.testing.assert_allclose(samples.mean(0), MEANS[1], atol=5 * np.sqrt(FULL_COVS[1].max() / 20000))
  labels = jnp.array([0, 1] * 5000)
  batch = np.asarray(_sample(mixture, jax.random.key(2), 10000, label=labels), np.float64)
  # Odd rows are class 1 (component 1), even rows class 0 (components 0 and 2).
  np.testing.assert_allclose(batch[1::2].mean(0), MEANS[1], atol=5 * np.sqrt(FULL_COVS[1].max() / 5000))
  mean0, cov0 = mixture_moments(class_weights(0), FULL_COVS)
  np.testing.assert_array_less(np.abs(batch[0::2].mean(0) - mean0), 5 * np.sqrt(np.diag(cov0) / 5000))


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="weights"):
    gmm.gaussian_mixture([0.5, -0.1, 0.6], MEANS, DIAG_VARS)
  with pytest.raises(ValueError, match="covs"):
    gmm.gaussian_mixture(WEIGHTS, MEANS, DIAG_VARS[:, :2])
  with pytest.raises(ValueError, match="positive-definite"):
    gmm.gaussian_mixture(WEIGHTS, MEANS, -FULL_COVS)
  with pytest.raises(ValueError, match="labels"):
    gmm.gaussian_mixture(WEIGHTS, MEANS, DIAG_VARS, labels=[0.0, 1.0, 0.0])
  mixture = gmm.gaussian_mixture(WEIGHTS, MEANS, DIAG_VARS)
  with pytest.raises(ValueError, match="label"):
    gmm.noised_eps(mixture, POINTS, ALPHA, SIGMA, 0)
  with pytest.raises(ValueError, match="x"):
    gmm.noised_eps(mixture, POINTS[:, :2], ALPHA, SIGMA)
  with pytest.raises(ValueError, match="alpha"):
    gmm.noised_eps(mixture, POINTS, jnp.ones(3), SIGMA)


def test_classifier_free_guidance_matches_numpy_and_its_end_points():
  rng = np.random.default_rng(7)
  uncond, cond = rng.normal(size=(2, 5, 3))
  for w in (0.0, 1.0, 7.5):
    np.testing.assert_allclose(
        gmm.classifier_free_guidance(uncond, cond, w), uncond + w * (cond - uncond),
        rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(gmm.classifier_free_guidance(uncond, cond, 1.0), cond,
                             rtol=1e-6, atol=1e-6)
