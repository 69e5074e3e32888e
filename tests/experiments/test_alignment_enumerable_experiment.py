"""The enumerable alignment experiment: smoke run end to end, pieces against numpy."""
import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.alignment import enumerable as enumerable_config
from divlab import run as runner
from experiments.alignment import enumerable
from experiments.alignment import enumerable_policy


@pytest.fixture(scope="module")
def task():
  return enumerable_policy.make_task(3, 3)


@pytest.fixture(scope="module")
def problem(task):
  config = enumerable_config.get_config("smoke")
  return enumerable_policy.make_problem(7, task, config.task)


def np_sequence_probs_by_chain_rule(table, task):
  """pi(y) = prod_t softmax(table[prefix])[y_t], prefixes looked up by tuple."""
  offsets = np.cumsum([0] + [task.vocab_size ** t for t in range(task.length)])
  probs = []
  for y in itertools.product(range(task.vocab_size), repeat=task.length):
    p = 1.0
    for t in range(task.length):
      code = 0
      for s in range(t):
        code = code * task.vocab_size + y[s]
      row = np.float64(table[offsets[t] + code])
      row = np.exp(row - row.max())
      p *= row[y[t]] / row.sum()
    probs.append(p)
  return np.array(probs)


def test_smoke_end_to_end(tmp_path):
  config = enumerable_config.get_config("smoke")
  config.progress = False
  rows = runner.run(config, tmp_path)
  saved = json.loads((tmp_path / "results.json").read_text())["rows"]
  names = [r["method"] for r in saved]
  assert names == ["reference"] + [enumerable.METHODS[m] for m in config.methods]
  assert [r["method"] for r in rows] == names
  by_name = {r["method"]: r for r in saved}
  reference = by_name["reference"]
  assert reference["kl"] == pytest.approx(0.0, abs=1e-6)
  assert reference["coverage"] == pytest.approx(1.0, abs=1e-5)
  # DPO raises the expected reward above the reference's, at a positive KL.
  dpo = by_name["DPO"]
  assert dpo["reward"] > reference["reward"] + 0.1 and dpo["kl"] > 0.01
  # Trained DPO and forward-KL f-DPO reach their closed-form optima.
  assert dpo["tv_closed_form"] < config.claims.closed_form_tv
  assert by_name["f-DPO forward KL"]["tv_closed_form"] < config.claims.closed_form_tv
  claims = json.loads((tmp_path / "claims.json").read_text())
  assert claims["f_dpo_closed_form"]["reproduced"]
  assert set(claims) >= {"coverage_order_at_matched_reward",
                         "tdpo2_seq_kl_rejected_below_dpo", "simpo_kl_drifts_beyond_dpo"}
  assert (tmp_path / "reward_vs_kl.png").stat().st_size > 0
  curves = np.load(tmp_path / "trajectories.npz")
  evals = config.train.num_steps // config.train.eval_every + 1
  assert curves["dpo/kl"].shape == (evals, config.num_seeds)
  assert curves["dpo/kl"][0] == pytest.approx(0.0, abs=1e-6)


def test_task_enumerates_every_completion_and_its_prefixes(task, problem):
  assert task.tokens.shape == (27, 3) and task.num_prefixes == 1 + 3 + 9
  assert len({tuple(y) for y in task.tokens}) == 27
  # Completions sharing a prefix share its logit row, and only they do.
  for t in range(task.length):
    prefixes = {tuple(y[:t]) for y in task.tokens}
    rows = {tuple(y[:t]): i for y, i in zip(task.tokens, task.prefix_index[:, t])}
    assert len(set(rows.values())) == len(prefixes)
  probs = np_sequence_probs_by_chain_rule(problem["ref_table"], task)
  assert probs.sum() == pytest.approx(1.0)
  np.testing.assert_allclose(
      enumerable_policy.sequence_probs(problem["ref_table"], task), probs, rtol=1e-12)
  logp = enumerable_policy.sequence_log_probs(jnp.asarray(problem["ref_table"]), task)
  np.testing.assert_allclose(np.exp(np.asarray(logp, np.float64)), probs, rtol=1e-5)


def test_pair_weights_are_the_bradley_terry_pair_distribution(task, problem):
  probs = np_sequence_probs_by_chain_rule(problem["ref_table"], task)
  reward = np.float64(problem["reward"])
  expected = np.outer(probs, probs) / (1 + np.exp(-(reward[:, None] - reward[None, :])))
  np.fill_diagonal(expected, 0.0)
  expected /= expected.sum()
  ref_logp = enumerable_policy.sequence_log_probs(jnp.asarray(problem["ref_table"]), task)
  got = enumerable_policy.pair_weights(ref_logp, jnp.asarray(problem["reward"]))
  np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=1e-5, atol=1e-9)


def test_exact_metrics_against_numpy(task, problem):
  rng = np.random.default_rng(3)
  table = np.float32(problem["ref_table"] + rng.normal(0, 0.7, problem["ref_table"].shape))
  got = jax.device_get(enumerable_policy.exact_metrics(
      jnp.asarray(table), jnp.asarray(problem["ref_table"]),
      jnp.asarray(problem["reward"]), task))
  p = np_sequence_probs_by_chain_rule(table, task)
  q = np_sequence_probs_by_chain_rule(problem["ref_table"], task)
  reward = np.float64(problem["reward"])
  np.testing.assert_allclose(got["reward"], np.sum(p * reward), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["entropy"], -np.sum(p * np.log(p)), rtol=1e-5)
  np.testing.assert_allclose(got["kl"], np.sum(p * np.log(p / q)), rtol=1e-4)
  np.testing.assert_allclose(got["coverage"], np.min(p / q), rtol=1e-4)
  # SeqKL(y): sum over y's prefixes of KL(ref row || policy row).
  softmax = lambda z: np.exp(z - z.max()) / np.exp(z - z.max()).sum()
  row_kl = np.array([np.sum(softmax(np.float64(r)) * np.log(softmax(np.float64(r))
                                                            / softmax(np.float64(s))))
                     for r, s in zip(problem["ref_table"], table)])
  seq_kl = row_kl[task.prefix_index].sum(-1)
  weights = np.outer(q, q) / (1 + np.exp(-(reward[:, None] - reward[None, :])))
  np.fill_diagonal(weights, 0.0)
  weights /= weights.sum()
  np.testing.assert_allclose(got["seq_kl_chosen"], weights.sum(1) @ seq_kl, rtol=1e-4)
  np.testing.assert_allclose(got["seq_kl_rejected"], weights.sum(0) @ seq_kl, rtol=1e-4)


@pytest.mark.parametrize("divergence", ["reverse_kl", "forward_kl", "js", "alpha"])
def test_closed_form_optimum_solves_the_stationarity_condition(task, problem, divergence):
  ref_probs = np_sequence_probs_by_chain_rule(problem["ref_table"], task)
  reward, beta, alpha = np.float64(problem["reward"]), 0.3, 0.4
  probs = enumerable_policy.closed_form_optimum(ref_probs, reward, beta, divergence,
                                                alpha)
  assert probs.sum() == pytest.approx(1.0, abs=1e-12) and np.all(probs > 0)
  u = probs / ref_probs
  f_prime = {"reverse_kl": np.log(u), "forward_kl": -1 / u,
             "js": np.log(2 * u / (1 + u)), "alpha": -u ** -alpha / alpha}[divergence]
  shift = f_prime - reward / beta  # f'(u) = r / beta + c: the same c everywhere
  np.testing.assert_allclose(shift, shift.mean(), atol=1e-9 * max(1, abs(shift.mean())))


def test_reverse_kl_closed_form_is_the_gibbs_policy(task, problem):
  ref_probs = np_sequence_probs_by_chain_rule(problem["ref_table"], task)
  reward = np.float64(problem["reward"])
  gibbs = ref_probs * np.exp(reward / 0.5)
  np.testing.assert_allclose(
      enumerable_policy.closed_form_optimum(ref_probs, reward, 0.5, "reverse_kl"),
      gibbs / gibbs.sum(), rtol=1e-12)


def test_dpo_population_loss_against_numpy(task, problem):
  rng = np.random.default_rng(4)
  table = np.float32(problem["ref_table"] + rng.normal(0, 0.5, problem["ref_table"].shape))
  beta = 0.5
  loss_fn = enumerable.make_loss_fn("dpo", {}, task)
  got = loss_fn({"logits": jnp.asarray(table)},
                {"ref_table": jnp.asarray(problem["ref_table"]),
                 "reward": jnp.asarray(problem["reward"]), "beta": beta})
  p = np_sequence_probs_by_chain_rule(table, task)
  q = np_sequence_probs_by_chain_rule(problem["ref_table"], task)
  reward = np.float64(problem["reward"])
  weights = np.outer(q, q) / (1 + np.exp(-(reward[:, None] - reward[None, :])))
  np.fill_diagonal(weights, 0.0)
  weights /= weights.sum()
  log_u = np.log(p / q)
  h = log_u[:, None] - log_u[None, :]
  np.testing.assert_allclose(float(got), np.sum(weights * np.logaddexp(0, -beta * h)),
                             rtol=1e-5)


def test_table_from_sequence_probs_inverts_the_chain_rule(task):
  rng = np.random.default_rng(5)
  probs = rng.dirichlet(np.ones(task.num_sequences))
  probs[3] = 0.0  # A completion of probability 0 stays at 0.
  probs /= probs.sum()
  table = enumerable_policy.table_from_sequence_probs(probs, task)
  np.testing.assert_allclose(np_sequence_probs_by_chain_rule(table, task), probs,
                             rtol=1e-10, atol=1e-290)  # zeros are floored at 1e-300


def test_dpo_optimum_at_reward_hits_the_reward_level(task, problem):
  ref_probs = np_sequence_probs_by_chain_rule(problem["ref_table"], task)
  level = float(np.sum(ref_probs * problem["reward"])) + 0.3
  metrics = enumerable_policy.dpo_optimum_at_reward(problem, level, task)
  assert metrics["reward"] == pytest.approx(level, abs=1e-4)
  assert metrics["kl"] > 0


def test_matched_reward_coverage_interpolates_each_curve():
  curves = {
      "a": {"reward": np.array([0.0, 1.0, 2.0]), "coverage": np.array([1.0, 0.5, 0.1])},
      "b": {"reward": np.array([2.5, 1.5, 0.5]), "coverage": np.array([0.0, 0.2, 0.8])}}
  out = enumerable_policy.matched_reward_coverage(curves, 1)
  # The common range is [0.5, 2.0]; its one interior level is 1.25.
  np.testing.assert_allclose(out["levels"], [1.25])
  np.testing.assert_allclose(out["a"], [0.4])
  np.testing.assert_allclose(out["b"], [0.35])


def test_bad_task_sizes_are_refused():
  with pytest.raises(ValueError, match="vocab_size"):
    enumerable_policy.make_task(7, 2)
  with pytest.raises(ValueError, match="length"):
    enumerable_policy.make_task(3, 5)
