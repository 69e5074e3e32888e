"""Tests for divlab.losses.unlearning against float64 numpy references."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from divlab.losses import unlearning as ul

RTOL = 1e-5
ATOL = 1e-5


# ----------------------------------------------------------------------------
# Plain numpy references (float64).
# ----------------------------------------------------------------------------


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(axis=-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def np_log_sigmoid(x):
  return -np.logaddexp(0.0, -np.asarray(x, np.float64))


def np_npo(logp, ref_logp, beta):
  return -(2.0 / beta) * np_log_sigmoid(beta * (np.float64(ref_logp) - logp))


def np_kl(p_logits, q_logits):
  log_p, log_q = np_log_softmax(p_logits), np_log_softmax(q_logits)
  return (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)


def tree_vector(tree):
  return np.concatenate([np.asarray(x, np.float64).ravel()
                         for x in jax.tree.leaves(tree)])


def np_h_projection(g, directions, weights=None):
  """(I - U (U^T H U)^{-1} U^T H) g with H = diag(weights)."""
  u = np.stack(directions, axis=1)
  h = np.ones_like(g) if weights is None else weights
  gram = u.T @ (h[:, None] * u)
  return g - u @ np.linalg.solve(gram, u.T @ (h * g))


@pytest.fixture
def rng():
  return np.random.default_rng(0)


# ----------------------------------------------------------------------------
# Log-likelihoods and losses.
# ----------------------------------------------------------------------------


class TestSequenceLogLikelihood:

  def test_matches_numpy_with_mask(self, rng):
    logits = rng.normal(size=(2, 4, 5)) * 3
    targets = rng.integers(0, 5, size=(2, 4))
    where = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)
    targets_with_ignore = np.where(where, targets, -100)
    got = jax.jit(ul.sequence_log_likelihood)(
        jnp.asarray(logits, jnp.float32), targets_with_ignore, where)
    token_logp = np.take_along_axis(np_log_softmax(logits), targets[..., None],
                                    axis=-1)[..., 0]
    expected = (token_logp * where).sum(-1)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)

  def test_padding_with_nonfinite_logits_has_zero_gradient(self):
    logits = jnp.array([[[0.0, 1.0, 2.0], [jnp.nan, -jnp.inf, jnp.inf]]])
    where = jnp.array([[True, False]])
    value, grad = jax.value_and_grad(
        lambda z: ul.sequence_log_likelihood(z, jnp.array([[2, -100]]), where).sum()
    )(logits)
    np.testing.assert_allclose(value, np_log_softmax([0.0, 1.0, 2.0])[2], rtol=RTOL)
    # d log softmax(z)_2 / dz = onehot(2) - softmax(z) at the valid position.
    np.testing.assert_allclose(grad[0, 0], np.eye(3)[2] - np.exp(np_log_softmax(
        [0.0, 1.0, 2.0])), rtol=RTOL, atol=1e-6)
    np.testing.assert_array_equal(grad[0, 1], 0.0)

  def test_bad_targets_raise(self):
    with pytest.raises(ValueError, match="targets"):
      ul.sequence_log_likelihood(jnp.zeros((2, 3, 4)), jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="targets"):
      ul.sequence_log_likelihood(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3)))


class TestGradientAscentAndGradDiff:

  def test_gradient_ascent_is_the_log_likelihood(self):
    logp = jnp.array([-1.0, -2.0, -jnp.inf])
    where = jnp.array([True, True, False])
    np.testing.assert_allclose(ul.gradient_ascent(logp, where=where), [-1, -2, 0])
    np.testing.assert_allclose(
        ul.gradient_ascent(logp, where=where, reduction="mean"), -1.5)
    grad = jax.grad(lambda x: ul.gradient_ascent(x, where=where, reduction="sum"))(logp)
    np.testing.assert_array_equal(grad, [1.0, 1.0, 0.0])

  def test_grad_diff_per_pair_and_reduced(self, rng):
    forget, retain = rng.normal(size=4) - 2, rng.normal(size=4) - 1
    got = ul.grad_diff(jnp.asarray(forget, jnp.float32),
                       jnp.asarray(retain, jnp.float32), retain_weight=0.5)
    np.testing.assert_allclose(got, forget - 0.5 * retain, rtol=RTOL, atol=ATOL)

  def test_grad_diff_batches_of_different_size(self, rng):
    forget, retain = rng.normal(size=3) - 2, rng.normal(size=5) - 1
    retain_where = np.array([1, 1, 1, 0, 0], bool)
    got = ul.grad_diff(jnp.asarray(forget, jnp.float32),
                       jnp.asarray(retain, jnp.float32), retain_weight=2.0,
                       retain_where=retain_where, reduction="mean")
    np.testing.assert_allclose(got, forget.mean() - 2.0 * retain[:3].mean(),
                               rtol=RTOL, atol=ATOL)
    with pytest.raises(ValueError, match="same shape"):
      ul.grad_diff(forget, retain)

  def test_negative_weight_raises(self):
    with pytest.raises(ValueError, match="retain_weight"):
      ul.grad_diff(jnp.zeros(2), jnp.zeros(2), retain_weight=-1.0)


class TestNPO:

  def test_matches_numpy(self, rng):
    logp = -rng.gamma(2.0, 3.0, size=6)
    ref = -rng.gamma(2.0, 3.0, size=6)
    for beta in (0.1, 1.0, 5.0):
      got = ul.npo(jnp.asarray(logp, jnp.float32), jnp.asarray(ref, jnp.float32),
                   beta=beta)
      np.testing.assert_allclose(got, np_npo(logp, ref, beta), rtol=RTOL, atol=ATOL)

  def test_large_log_ratio_is_finite(self):
    # softplus form: no overflow where log sigmoid would underflow to -inf.
    got = ul.npo(jnp.array([0.0, -1e4]), jnp.array([-1e4, 0.0]), beta=1.0)
    np.testing.assert_allclose(got, [2e4, np_npo(-1e4, 0.0, 1.0)], rtol=RTOL)

  def test_gradient_is_two_sigmoid_and_reference_is_constant(self, rng):
    logp = jnp.asarray(-rng.gamma(2.0, 1.0, size=5), jnp.float32)
    ref = jnp.asarray(-rng.gamma(2.0, 1.0, size=5), jnp.float32)
    beta = 0.7
    g_logp, g_ref = jax.grad(lambda a, b: ul.npo(a, b, beta=beta).sum(),
                             argnums=(0, 1))(logp, ref)
    diff = np.float64(logp) - np.float64(ref)
    np.testing.assert_allclose(g_logp, 2.0 / (1.0 + np.exp(-beta * diff)),
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(g_ref, 0.0)

  def test_small_beta_recovers_gradient_ascent_on_a_model(self, rng):
    # A linear softmax classifier: d NPO / d params -> d GA / d params.
    x = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 4, size=6))
    params = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    ref_params = params + 0.5 * jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)

    def logp_fn(w):
      log_probs = jax.nn.log_softmax(x @ w)
      return jnp.take_along_axis(log_probs, y[:, None], axis=1)[:, 0]

    ref_logp = logp_fn(ref_params)
    ga_grad = jax.grad(lambda w: ul.gradient_ascent(logp_fn(w), reduction="mean"))(
        params)
    for beta, tol in ((1e-2, 2e-2), (1e-4, 2e-4)):
      npo_grad = jax.grad(
          lambda w: ul.npo(logp_fn(w), ref_logp, beta=beta, reduction="mean"))(params)
      scale = np.abs(np.asarray(ga_grad)).max()
      np.testing.assert_allclose(npo_grad, ga_grad, atol=tol * scale)
    far_grad = jax.grad(
        lambda w: ul.npo(logp_fn(w), ref_logp, beta=5.0, reduction="mean"))(params)
    assert np.abs(np.asarray(far_grad - ga_grad)).max() > 0.05 * scale

  def test_npo_rt_matches_numpy(self, rng):
    logp, ref, retain = -rng.gamma(2, 2, 4), -rng.gamma(2, 2, 4), -rng.gamma(2, 1, 4)
    got = ul.npo_rt(*(jnp.asarray(a, jnp.float32) for a in (logp, ref, retain)),
                    beta=0.3, retain_weight=0.25)
    np.testing.assert_allclose(got, np_npo(logp, ref, 0.3) - 0.25 * retain,
                               rtol=RTOL, atol=ATOL)

  def test_npo_rt_mean_over_masks(self, rng):
    logp, ref, retain = -rng.gamma(2, 2, 4), -rng.gamma(2, 2, 4), -rng.gamma(2, 1, 6)
    forget_where = np.array([1, 0, 1, 1], bool)
    got = ul.npo_rt(*(jnp.asarray(a, jnp.float32) for a in (logp, ref, retain)),
                    beta=0.3, forget_where=forget_where, reduction="mean")
    expected = np_npo(logp, ref, 0.3)[forget_where].mean() - retain.mean()
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)

  def test_bad_arguments_raise(self):
    with pytest.raises(ValueError, match="beta"):
      ul.npo(jnp.zeros(2), jnp.zeros(2), beta=0.0)
    with pytest.raises(ValueError, match="forget_ref_logp"):
      ul.npo(jnp.zeros(2), jnp.zeros(3))
    with pytest.raises(ValueError, match="reduction"):
      ul.npo(jnp.zeros(2), jnp.zeros(2), reduction="avg")
    with pytest.raises(ValueError, match="where"):
      ul.npo(jnp.zeros(2), jnp.zeros(2), where=jnp.ones(3, bool))
    with pytest.raises(ValueError, match="forget_logp"):
      ul.npo(jnp.zeros(2, jnp.int32), jnp.zeros(2))


class TestNPOKL:

  def test_classifier_kl_term_matches_numpy(self, rng):
    logp, ref = -rng.gamma(2, 2, 3), -rng.gamma(2, 2, 3)
    retain_logits = rng.normal(size=(3, 5)) * 2
    retain_ref_logits = rng.normal(size=(3, 5)) * 2
    got = ul.npo_kl(*(jnp.asarray(a, jnp.float32) for a in
                      (logp, ref, retain_logits, retain_ref_logits)),
                    beta=0.5, kl_weight=0.7)
    # KL(pi_ref || pi_theta): the reference is the first argument.
    expected = np_npo(logp, ref, 0.5) + 0.7 * np_kl(retain_ref_logits, retain_logits)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)

  def test_sequence_kl_sums_valid_positions(self, rng):
    logp, ref = -rng.gamma(2, 2, 2), -rng.gamma(2, 2, 2)
    retain_logits = rng.normal(size=(3, 4, 6))
    retain_ref_logits = rng.normal(size=(3, 4, 6))
    where = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], bool)
    padded = retain_logits.copy()
    padded[~where] = np.nan  # Padding may hold anything.
    got = ul.npo_kl(*(jnp.asarray(a, jnp.float32) for a in
                      (logp, ref, padded, retain_ref_logits)),
                    beta=0.5, retain_where=where, reduction="mean")
    per_sequence = (np_kl(retain_ref_logits, retain_logits) * where).sum(-1)
    expected = np_npo(logp, ref, 0.5).mean() + per_sequence[:2].mean()
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    grad = jax.grad(lambda z: ul.npo_kl(logp, ref, z, retain_ref_logits,
                                        retain_where=where, reduction="mean"))(
                                            jnp.asarray(padded, jnp.float32))
    np.testing.assert_array_equal(np.asarray(grad)[~where], 0.0)
    # The mean over the two non-empty sequences of sum_t KL(p_ref || softmax(z_t)):
    # (softmax(z) - p_ref) / 2 at each valid position.
    expected_grad = (np.exp(np_log_softmax(retain_logits))
                     - np.exp(np_log_softmax(retain_ref_logits))) / 2
    np.testing.assert_allclose(np.asarray(grad)[where], expected_grad[where], rtol=RTOL,
                               atol=1e-6)

  def test_kl_gradient_reaches_model_only(self, rng):
    z = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    z_ref = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    zeros = jnp.zeros(2)
    g_model, g_ref = jax.grad(
        lambda a, b: ul.npo_kl(zeros, zeros, a, b, reduction="sum"),
        argnums=(0, 1))(z, z_ref)
    np.testing.assert_array_equal(g_ref, 0.0)
    # d KL(p_ref || softmax(z)) / dz = softmax(z) - p_ref.
    expected = np.exp(np_log_softmax(z)) - np.exp(np_log_softmax(z_ref))
    np.testing.assert_allclose(g_model, expected, rtol=RTOL, atol=ATOL)

  def test_bad_retain_logits_raise(self):
    with pytest.raises(ValueError, match="retain_logits"):
      ul.npo_kl(jnp.zeros(2), jnp.zeros(2), jnp.zeros(4), jnp.zeros(4))
    with pytest.raises(ValueError, match="retain_ref_logits"):
      ul.npo_kl(jnp.zeros(2), jnp.zeros(2), jnp.zeros((2, 4)), jnp.zeros((2, 5)))


class TestSimNPO:

  def test_matches_numpy_paper_form(self, rng):
    logp = -rng.gamma(3, 4, size=5)
    lengths = rng.integers(1, 20, size=5)
    beta, gamma = 2.5, 0.4
    got = ul.simnpo(jnp.asarray(logp, jnp.float32), lengths, beta=beta, gamma=gamma)
    expected = -(2 / beta) * np_log_sigmoid(-beta / lengths * logp - gamma)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)

  def test_released_code_gamma_is_paper_gamma_over_beta(self, rng):
    logp = -rng.gamma(3, 4, size=5)
    lengths = rng.integers(1, 20, size=5)
    beta, gamma_code = 4.5, 0.2
    nll_per_token = -logp / lengths
    released = -np_log_sigmoid(beta * (nll_per_token - gamma_code)) * 2 / beta
    got = ul.simnpo(jnp.asarray(logp, jnp.float32), lengths, beta=beta,
                    gamma=beta * gamma_code)
    np.testing.assert_allclose(got, released, rtol=RTOL, atol=ATOL)

  def test_zero_length_and_masking(self):
    got = ul.simnpo(jnp.array([0.0, -3.0, -jnp.inf]), jnp.array([0, 3, 0]),
                    beta=1.0, where=jnp.array([True, True, False]))
    np.testing.assert_allclose(got, [2 * np.log(2), -2 * np_log_sigmoid(1.0), 0.0],
                               rtol=RTOL)

  def test_bad_lengths_raise(self):
    with pytest.raises(ValueError, match="lengths"):
      ul.simnpo(jnp.zeros(2), jnp.array([1, -1]))
    with pytest.raises(ValueError, match="lengths"):
      ul.simnpo(jnp.zeros(2), jnp.array([1, 2, 3]))

  def test_jit(self):
    fn = jax.jit(lambda a, n: ul.simnpo(a, n, reduction="mean"))
    np.testing.assert_allclose(fn(jnp.array([-2.0, -4.0]), jnp.array([2, 2])),
                               ul.simnpo(jnp.array([-2.0, -4.0]), jnp.array([2, 2]),
                                         reduction="mean"), rtol=RTOL)


# ----------------------------------------------------------------------------
# GU projection.
# ----------------------------------------------------------------------------


def random_tree(rng, lead=()):
  return {"a": jnp.asarray(rng.normal(size=lead + (3,)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=lead + (2, 2)), jnp.float32)}


def split_stack(tree):
  stacked = tree_vector_rows(tree)
  return [stacked[k] for k in range(stacked.shape[0])]


def tree_vector_rows(stacked_tree):
  leaves = jax.tree.leaves(stacked_tree)
  k = leaves[0].shape[0]
  return np.concatenate([np.asarray(x, np.float64).reshape(k, -1) for x in leaves],
                        axis=1)


def h_inner(a, b, w):
  return float(np.sum(w * a * b))


project = jax.jit(ul.project_forget_gradient,
                  static_argnames=("only_if_conflicting", "rank_tolerance"))


class TestProjectForgetGradient:

  @pytest.mark.parametrize("num_directions", [1, 3])
  @pytest.mark.parametrize("weighted", [False, True])
  def test_matches_closed_form_and_is_orthogonal(self, rng, num_directions,
                                                 weighted):
    forget = random_tree(rng)
    retain = random_tree(rng, (num_directions,))
    weights = (jax.tree.map(lambda x: jnp.abs(x) + 0.1, random_tree(rng))
               if weighted else None)
    got = tree_vector(project(forget, retain, metric_weights=weights))
    w = np.ones(7) if weights is None else tree_vector(weights)
    directions = split_stack(retain)
    np.testing.assert_allclose(
        got, np_h_projection(tree_vector(forget), directions, w), rtol=1e-4,
        atol=1e-5)
    for u in directions:
      cosine = h_inner(got, u, w) / np.sqrt(h_inner(got, got, w) * h_inner(u, u, w))
      assert abs(cosine) < 1e-5

  def test_idempotent(self, rng):
    forget, retain = random_tree(rng), random_tree(rng, (3,))
    weights = jax.tree.map(lambda x: jnp.abs(x) + 0.1, random_tree(rng))
    once = project(forget, retain, metric_weights=weights)
    twice = project(once, retain, metric_weights=weights)
    np.testing.assert_allclose(tree_vector(twice), tree_vector(once), atol=1e-5)

  def test_dependent_directions_are_dropped_without_nan(self, rng):
    forget = random_tree(rng)
    single = random_tree(rng, (1,))
    # Second direction = 2 x the first: rank 1, same projection as K = 1.
    doubled = jax.tree.map(lambda r: jnp.concatenate([r, 2 * r, jnp.zeros_like(r)]),
                           single)
    got = project(forget, doubled)
    assert np.all(np.isfinite(tree_vector(got)))
    np.testing.assert_allclose(tree_vector(got),
                               tree_vector(project(forget, single)), atol=1e-5)

  def test_pcgrad_leaves_non_conflicting_unchanged(self):
    forget = {"w": jnp.array([1.0, 1.0])}
    retain = {"w": jnp.array([[1.0, 0.0], [1.0, 1.0]])}  # <g, u_k> > 0 for both.
    got = project(forget, retain, only_if_conflicting=True)
    np.testing.assert_array_equal(got["w"], [1.0, 1.0])
    # GU projects regardless of the sign.
    np.testing.assert_allclose(project(forget, retain)["w"], [0.0, 0.0], atol=1e-6)

  def test_pcgrad_projects_conflicting_like_gu(self):
    forget = {"w": jnp.array([-1.0, 2.0])}
    retain = {"w": jnp.array([[2.0, 0.5]])}  # inner product -2 + 1 = -1 < 0.
    pc = project(forget, retain, only_if_conflicting=True)
    # g - (<g, u> / <u, u>) u = g + u / 4.25.
    np.testing.assert_allclose(pc["w"], np.array([-1.0, 2.0]) + np.array(
        [2.0, 0.5]) / 4.25, rtol=1e-6)
    np.testing.assert_allclose(pc["w"], project(forget, retain)["w"], rtol=1e-6)
    again = project(pc, retain, only_if_conflicting=True)
    np.testing.assert_allclose(again["w"], pc["w"], atol=1e-6)

  def test_bad_inputs_raise(self, rng):
    forget = random_tree(rng)
    with pytest.raises(ValueError, match="leading axis"):
      ul.project_forget_gradient(forget, random_tree(rng))
    with pytest.raises(ValueError, match="tree structure"):
      ul.project_forget_gradient(forget, {"a": jnp.zeros((1, 3))})
    with pytest.raises(ValueError, match="rank_tolerance"):
      ul.project_forget_gradient(forget, random_tree(rng, (1,)), rank_tolerance=0.0)


class TestGUProject:

  def test_chained_with_sgd_gives_documented_update(self):
    tx = optax.chain(ul.gu_project(), optax.sgd(0.1))
    params = {"w": jnp.zeros(2)}
    grads = ul.gu_inputs({"w": jnp.array([1.0, 1.0])}, {"w": jnp.array([1.0, 0.0])})
    updates, _ = tx.update(grads, tx.init(params), params)
    # g_f_perp = [0, 1]; update = -lr (g_r + g_f_perp).
    np.testing.assert_allclose(updates["w"], [-0.1, -0.1], rtol=1e-6)
    pc = optax.chain(ul.gu_project(only_if_conflicting=True), optax.sgd(0.1))
    updates, _ = pc.update(grads, pc.init(params), params)
    np.testing.assert_allclose(updates["w"], [-0.2, -0.1], rtol=1e-6)

  def test_several_retain_grads_use_their_mean(self, rng):
    forget = random_tree(rng)
    retain_list = [random_tree(rng) for _ in range(3)]
    tx = ul.gu_project()
    state = tx.init(forget)
    updates, _ = jax.jit(tx.update)(ul.gu_inputs(forget, *retain_list), state)
    directions = [tree_vector(r) for r in retain_list]
    expected = np.mean(directions, axis=0) + np_h_projection(tree_vector(forget),
                                                             directions)
    np.testing.assert_allclose(tree_vector(updates), expected, rtol=1e-4, atol=1e-5)

  def test_adam_metric_tracks_its_own_second_moment(self, rng):
    b2, eps = 0.9, 1e-3
    tx = ul.gu_project(metric="adam", b2=b2, eps=eps)
    params = random_tree(rng)
    state = tx.init(params)
    update = jax.jit(tx.update)
    nu = np.zeros(7)
    for step in range(1, 4):
      forget, retain = random_tree(rng), random_tree(rng, (2,))
      updates, state = update({"forget": forget, "retain": retain}, state)
      directions = split_stack(retain)
      raw = tree_vector(forget) + np.mean(directions, axis=0)
      nu = b2 * nu + (1 - b2) * raw**2
      weights = 1.0 / (np.sqrt(nu / (1 - b2**step)) + eps)
      projected = np_h_projection(tree_vector(forget), directions, weights)
      np.testing.assert_allclose(tree_vector(updates),
                                 np.mean(directions, axis=0) + projected,
                                 rtol=1e-4, atol=1e-5)
      np.testing.assert_allclose(tree_vector(state.nu), nu, rtol=1e-5)
      assert int(state.count) == step
      # Adam's preconditioned forget step is Euclidean-orthogonal to g_r.
      for u in directions:
        assert abs(np.dot(weights * projected, u)) < 1e-4 * np.linalg.norm(
            weights * projected) * np.linalg.norm(u)

  def test_chains_with_adam(self, rng):
    tx = optax.chain(ul.gu_project(metric="adam"), optax.adam(1e-2))
    params = random_tree(rng)
    state = tx.init(params)
    forget, retain = random_tree(rng), random_tree(rng)
    updates, state = jax.jit(tx.update)(ul.gu_inputs(forget, retain), state, params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    # Step 1 in float64: the projection's bias-corrected second moment is the
    # squared raw gradient, so H = 1 / (|g_f + g_r| + eps); Adam's first step
    # is -lr g / (|g| + eps) on the projected g = g_r + g_f_perp.
    direction = tree_vector(retain)
    raw = tree_vector(forget) + direction
    g = direction + np_h_projection(tree_vector(forget), [direction],
                                    1.0 / (np.abs(raw) + 1e-8))
    np.testing.assert_allclose(tree_vector(updates), -1e-2 * g / (np.abs(g) + 1e-8),
                               rtol=1e-5, atol=1e-7)
    # That first step keeps only signs; Adam's first moment, (1 - b1) g, keeps g.
    adam_state = state[1][0]
    np.testing.assert_allclose(tree_vector(adam_state.mu) / (1 - 0.9), g, rtol=1e-5,
                               atol=1e-6)

  def test_bad_arguments_raise(self, rng):
    with pytest.raises(ValueError, match="metric"):
      ul.gu_project(metric="fisher")
    with pytest.raises(ValueError, match="b2"):
      ul.gu_project(b2=1.0)
    with pytest.raises(ValueError, match="eps"):
      ul.gu_project(eps=0.0)
    tx = ul.gu_project()
    params = random_tree(rng)
    with pytest.raises(ValueError, match="gu_inputs"):
      tx.update(params, tx.init(params))
    with pytest.raises(ValueError, match="gu_inputs"):
      ul.gu_inputs(params)
