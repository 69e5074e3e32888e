"""The policy-RL family: exact smoke run end to end, pieces against numpy."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.policy_rl import exact as exact_config
from divlab import run as runner
from experiments.policy_rl import exact


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory):
  config = exact_config.get_config("smoke")
  config.progress = False
  workdir = tmp_path_factory.mktemp("exact")
  return runner.run(config, workdir), workdir, config


def test_exact_smoke_gradient_table(exact_run):
  result, workdir, _ = exact_run
  rows = {(r["policy"], r["placement"]): r for r in result["gradients"]}
  p = exact.PLACEMENTS
  # Bandit: k2 in the loss is the reverse-KL gradient, k3 the forward one.
  assert rows[("bandit", p["k2_loss"])]["relerr_reverse"] < 1e-10
  assert rows[("bandit", p["k3_loss"])]["relerr_forward"] < 1e-10
  assert rows[("bandit", p["k1_loss"])]["relerr_reverse"] == pytest.approx(1.0)
  # Sequences: k1 in the reward with return-to-go is exact, k2 in the loss is not.
  assert rows[("sequence", p["k1_reward_rtg"])]["relerr_reverse"] < 1e-10
  assert rows[("sequence", p["k2_loss"])]["relerr_reverse"] > 0.02
  claims = json.loads((workdir / "claims.json").read_text())
  assert all(claims[name]["reproduced"] for name in list(claims)[:3])
  for name in ("gradients", "dph", "off_policy"):
    assert (workdir / f"{name}.md").exists()
  assert (workdir / "dph_pass_at_k.png").exists() and (workdir / "off_policy.png").exists()


def test_exact_smoke_dph_and_off_policy_behaviour(exact_run):
  result, _, config = exact_run
  rows = result["dph"]
  pi0 = next(r for r in rows if r["method"] == "pi_0")
  no_kl_end = next(r for r in rows if r["method"] == "no KL" and r["point"] == "end")
  # RL raises train pass@1 above pi_0's.
  assert no_kl_end["train_pass@1"] > pi0["train_pass@1"] + 0.2
  off = {r["method"]: r for r in result["off_policy"]}
  naive, topr = off["naive off-policy REINFORCE"], off["TOPR"]
  # Naive off-policy REINFORCE with negative rewards runs away; TOPR does not.
  assert naive["norm_end"] > 2 * topr["norm_end"]
  assert naive["loss_end"] < naive["loss_half"] < 0
  del config


def test_pass_at_k_is_exact():
  q = np.array([0.0, 0.5, 1.0])
  np.testing.assert_allclose(exact.pass_at_k(q, (1, 2)), [0.5, (0 + 0.75 + 1) / 3])


def test_placement_gradients_match_numpy_for_a_bandit():
  """Expected k3-in-loss gradient = pi - ref in the logits (closed form)."""
  rng = np.random.default_rng(1)
  theta, ref = rng.normal(size=(1, 4)), rng.normal(size=(1, 4))
  rows, tokens, _ = exact.enumerate_sequences(4, 1)
  with jax.enable_x64(True):
    out = exact.gradient_table_one(jnp.asarray(theta), jnp.asarray(ref), jnp.asarray(rows),
                                   jnp.asarray(tokens))
  assert float(out["k3_loss/relerr_forward"]) < 1e-12
  assert float(out["k1_reward_rtg/cos_reverse"]) == pytest.approx(1.0, abs=1e-12)


def test_divergence_to_initial_matches_numpy():
  rng = np.random.default_rng(2)
  p, p0 = rng.dirichlet(np.ones(5), 3), rng.dirichlet(np.ones(5), 3)
  lp, lp0 = jnp.log(jnp.asarray(p, jnp.float32)), jnp.log(jnp.asarray(p0, jnp.float32))
  m = 0.5 * (p + p0)
  want = {"reverse_kl": (p * np.log(p / p0)).sum(-1).mean(),
          "forward_kl": (p0 * np.log(p0 / p)).sum(-1).mean(),
          "js": ((p * np.log(p / m)).sum(-1) + (p0 * np.log(p0 / m)).sum(-1)).mean()}
  for method, value in want.items():
    np.testing.assert_allclose(exact.divergence_to_initial(method, lp, lp0), value,
                               rtol=1e-5)


def test_off_policy_losses_match_numpy():
  rng = np.random.default_rng(3)
  pi, mu = rng.dirichlet(np.ones(6), 2), rng.dirichlet(np.ones(6), 2)
  r = np.where(rng.uniform(size=(2, 6)) < 0.5, 1.0, -1.0)
  ratio = np.minimum(pi / mu, 1)
  per = {"naive": -r * np.log(pi),
         "truncated_is": -ratio * r * np.log(pi),
         "topr": -np.where(r < 0, ratio, 1) * r * np.log(pi),
         "sft_positive": -(r > 0).astype(float) * np.log(pi)}
  for method, values in per.items():
    got = exact.off_policy_loss(method, jnp.log(jnp.float32(pi)), jnp.log(jnp.float32(mu)),
                                jnp.float32(r))
    np.testing.assert_allclose(got, (mu * values).sum(-1).mean(), rtol=1e-5)


def test_task_smoke_end_to_end(tmp_path):
  from configs.policy_rl import sort as sort_config  # pylint: disable=g-import-not-at-top
  from experiments.policy_rl import task  # pylint: disable=g-import-not-at-top
  config = sort_config.get_config("smoke")
  config.progress = False
  rows = runner.run(config, tmp_path)
  by_method = {r["method"]: r for r in rows}
  assert list(by_method) == ["sft"] + list(config.methods)
  ks = tuple(config.eval.pass_k)
  for row in rows:  # pass@k is non-decreasing in k and lies in [0, 1]
    values = [row[f"pass@{k}"] for k in ks]
    assert all(0 <= v <= 1 for v in values) and values == sorted(values)
  # GRPO raises the train reward: the online members' last steps against their first.
  first = np.mean([by_method[m]["train_reward_first"] for m in task.ONLINE])
  last = np.mean([by_method[m]["train_reward_last"] for m in task.ONLINE])
  assert last > first
  curves = json.loads((tmp_path / "curves.json").read_text())
  assert len(curves) == len(task.ONLINE) * config.num_seeds
  assert all(len(c) == config.train.num_steps for c in curves.values())
  assert (tmp_path / "pass_at_k.png").exists()
