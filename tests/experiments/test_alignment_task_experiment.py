"""The alignment family's language-task setting: smoke config end to end."""
import json

import jax
import numpy as np
import pytest

from configs.alignment import sort as sort_config
from divlab import run as runner
from divlab.data import tasks
from divlab.train import metrics as metrics_lib
from experiments.alignment import task
from experiments.alignment import task_losses


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("alignment_task")
  config = sort_config.get_config("smoke")
  # The SFT model's zero KL and zero margins compare a cached decode with
  # full forwards: full float32 matmuls (not TF32 on GPUs) keep that rounding.
  with jax.default_matmul_precision("float32"):
    rows = runner.run(config, workdir)
  return config, workdir, rows


def test_smoke_writes_table_plot_and_one_row_per_method(smoke_run):
  config, workdir, rows = smoke_run
  saved = json.loads((workdir / "results.json").read_text())["rows"]
  assert [r["method"] for r in saved] == ["sft", *config.methods]
  for row in saved:
    assert row["seeds"] == config.num_seeds
    assert 0.0 <= row["reward"] <= 1.0 and 0.0 <= row["exact"] <= 1.0
    # A mean of whole counts of distinct completions over the test prompts and
    # seeds: a multiple of 1 / (prompts x seeds), which a per-token or
    # probability-weighted count would not be, and never more completions
    # than were sampled per prompt.
    scaled = row["distinct"] * config.task.num_test * config.num_seeds
    assert abs(scaled - round(scaled)) < 1e-6 * scaled
    assert round(scaled) <= (config.eval.samples_per_prompt * config.task.num_test
                             * config.num_seeds)
    assert np.isfinite(row["kl"]) and row["kl_se"] >= 0
  assert (workdir / "reward_vs_kl.png").stat().st_size > 0
  assert rows == saved


def test_sft_learns_the_task(smoke_run):
  config, workdir, rows = smoke_run
  log = [r for r in metrics_lib.read_metrics(workdir / "runs" / "sft") if "train_loss" in r]
  first, last = log[0]["train_loss"], log[-1]["train_loss"]
  # The first logged loss averages the early steps; chance is log 16 = 2.77.
  assert last < 0.5 * first
  sft = rows[0]
  # A uniformly random policy writes a given length-3 answer plus EOS with
  # probability 16^-4; the SFT model's greedy answers are mostly exact.
  assert sft["greedy_exact"] > 0.5
  assert sft["exact"] > 0.3 and sft["reward"] > 0.5
  # The reference's own KL is 0 (up to cached vs full-forward rounding).
  assert abs(sft["kl"]) < 1e-5 and sft["pair_accuracy"] == 0.0


def test_dpo_moves_the_policy_toward_the_chosen_answers(smoke_run):
  config, workdir, rows = smoke_run
  per_member = json.loads((workdir / "runs" / "preference_paired" / "records.json")
                          .read_text())
  dpo = [r for r in per_member if r["method"] == "dpo"]
  assert len(dpo) == config.num_seeds
  for r in dpo:
    # On its training pairs the chosen answer gained log-probability relative
    # to the rejected one (vs the SFT model) on most pairs: h > 0.
    assert r["pair_accuracy"] > 0.7 and r["margin"] > 0
    assert r["kl"] > 0.0
  pairs = json.loads((workdir / "pairs.json").read_text())
  assert min(pairs["pairs_per_seed"]) >= config.data.batch_size
  assert all(c > r for c, r in zip(pairs["chosen_reward"], pairs["rejected_reward"]))


def test_methods_share_each_seeds_data_order(smoke_run):
  # f-DPO with reverse KL is DPO's loss; with the same pairs in the same
  # order from the same SFT model, its members end where DPO's do.
  config, workdir, _ = smoke_run
  per_member = json.loads((workdir / "runs" / "preference_paired" / "records.json")
                          .read_text())
  by_method = {}
  for r in per_member:
    by_method.setdefault(r["method"], []).append(r)
  for dpo, f_dpo in zip(by_method["dpo"], by_method["f_dpo_reverse_kl"]):
    assert dpo["seed"] == f_dpo["seed"]
    np.testing.assert_allclose(f_dpo["margin"], dpo["margin"], rtol=1e-3)
    # Same policy, same sampling keys: (nearly) the same test samples.
    np.testing.assert_allclose(f_dpo["reward"], dpo["reward"], atol=0.05)
  assert not np.isclose(by_method["simpo"][0]["margin"], by_method["dpo"][0]["margin"],
                        rtol=1e-2)


def test_rerun_reads_the_finished_subruns(smoke_run):
  config, workdir, rows = smoke_run
  done = workdir / "runs" / "preference_paired" / "records.json"
  before = done.stat().st_mtime_ns
  with jax.default_matmul_precision("float32"):
    again = runner.run(config, workdir)
  assert done.stat().st_mtime_ns == before
  for a, b in zip(again, rows):
    assert a["method"] == b["method"]
    np.testing.assert_allclose(a["pair_accuracy"], b["pair_accuracy"])


def test_completion_logits_align_with_the_completion_tokens():
  # A fake "model" whose logits at position i are one-hot of the input token
  # i: then the logits predicting completion token t must be the one-hot of
  # the token before it (the last prompt token for t = 0).
  def apply_fn(params, x):
    del params
    return np.eye(tasks.VOCAB_SIZE)[np.asarray(x)]

  prompt = np.array([[tasks.BOS, 3, 1, tasks.SEP]])
  completion = np.array([[1, 3, tasks.EOS]])
  logits = np.asarray(task_losses.completion_logits(apply_fn, None, prompt, completion))
  np.testing.assert_array_equal(logits.argmax(-1), [[tasks.SEP, 1, 3]])


def test_unknown_method_and_bad_groups_raise():
  with pytest.raises(ValueError, match="methods"):
    task_losses.check_methods(["dpo", "rlhf"])
  assert task.method_groups(["dpo", "kto", "ipo"]) == {"paired": ["dpo", "ipo"],
                                                       "mismatched": ["kto"]}
