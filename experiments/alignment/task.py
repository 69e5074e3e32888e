"""Preference optimisation of a small TransformerLM on a verifiable task.

Pipeline (every stage a resumable sub-run under ``<workdir>/runs/``):

1. ``runs/sft``: ``num_seeds`` TransformerLMs (one per seed) learn the task
   (`divlab.data.tasks`: sorting digit lists or 2-digit addition) by
   supervised fine-tuning on the completion tokens, side by side as one
   vmapped ensemble (`divlab.train.ensemble`).
2. Pairs: each SFT model samples ``pairs.samples_per_prompt`` completions of
   every training prompt with `divlab.models.generate`; the task's partial
   credit labels the best one *chosen* and the worst one *rejected* (prompts
   whose samples all score the same give no pair). The SFT model is the
   frozen reference: its logits on both completions are computed once.
3. ``runs/preference_<group>``: every (method, seed) member starts from its
   seed's SFT model and trains on that seed's pairs; all members of a group
   share one compiled step (`task_losses.make_group_loss`).
4. Evaluation on held-out prompts, ``eval.samples_per_prompt`` samples each
   at temperature 1: mean partial-credit reward, exact-match rate, greedy
   exact-match rate, KL(pi || pi_SFT) by Monte Carlo on the policy's own
   samples (``log pi(y|x) - log pi_SFT(y|x)``, averaged per prompt, with the
   standard error over prompts) and the number of distinct completions per
   prompt. Table (``results.md/json``): mean ± std over seeds;
   ``reward_vs_kl.png``.
"""
from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from divlab import models
from divlab.data import tasks
from divlab.losses import reduce_loss
from divlab.losses import sequence
from divlab.train import checkpoint
from divlab.train import ensemble
from divlab.train import metrics as metrics_lib
from divlab.train import parallel
from divlab.train import trainer
from experiments.alignment import task_losses

METRICS = ("reward", "exact", "greedy_exact", "kl", "kl_se", "distinct",
           "pair_accuracy", "margin")
# Training pairs per seed on which the implicit-reward margin is measured, and
# the margin (nats) that counts as positive: the reference's own margins are 0
# up to float rounding between two forward passes.
MARGIN_PAIRS = 512
MARGIN_TOLERANCE = 1e-4


# ----------------------------------------------------------------------------
# Model and data.
# ----------------------------------------------------------------------------


def build_model(config: ml_collections.ConfigDict) -> tuple[Any, dict]:
  spec = {"name": "transformer_lm", "num_outputs": tasks.VOCAB_SIZE,
          **dict(config.model)}
  return models.build(**spec), spec


def task_options(config: ml_collections.ConfigDict) -> dict:
  return {"length": int(config.task.length),
          "reverse_answer": bool(config.task.reverse_answer)}


def load_splits(config: ml_collections.ConfigDict) -> dict:
  return tasks.make_task(config.task.name, num_train=int(config.task.num_train),
                         num_test=int(config.task.num_test),
                         seed=int(config.task.split_seed), **task_options(config))


def score_completions(config, prompts, tokens, mask) -> dict[str, np.ndarray]:
  return tasks.reward(config.task.name, prompts, tokens, mask,
                      reverse_answer=bool(config.task.reverse_answer))


def sft_arrays(split: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """``x``: prompt + completion tokens; ``target_mask``: the scored targets."""
  prompt_len = split["prompt"].shape[1]
  x = np.concatenate([split["prompt"], split["completion"]], axis=1)
  target_mask = np.concatenate(
      [np.zeros((len(x), prompt_len - 1), bool), split["completion_mask"]], axis=1)
  return {"x": x.astype(np.int32), "target_mask": target_mask}


# ----------------------------------------------------------------------------
# Stage 1: SFT.
# ----------------------------------------------------------------------------


def train_sft(config, path: pathlib.Path, model, splits, seeds) -> dict:
  """Trains (or reloads) the stacked SFT models; returns their params."""
  params_path = path / "params.msgpack"
  if params_path.exists():
    return checkpoint.load_tree(params_path)
  arrays = sft_arrays(splits["train"])
  sft = config.sft
  run_cfg = trainer.run_config(batch_size=int(sft.batch_size),
                               optimizer=sft.optimizer.to_dict(),
                               num_steps=int(sft.num_steps), log_every=int(sft.log_every),
                               checkpoint_every=int(sft.num_steps))
  tx = trainer.make_optimizer(run_cfg.optimizer, int(sft.num_steps))
  dropout = float(config.model.get("dropout_rate", 0.0)) > 0

  def loss_fn(params, batch, rng):
    kwargs = {"train": True, "rngs": {"dropout": rng}} if dropout else {}
    logits = model.apply({"params": params}, batch["x"][:, :-1], **kwargs)
    logp = sequence.token_log_probs(logits, batch["x"][:, 1:], batch["target_mask"])
    return -reduce_loss(logp, "mean", where=batch["target_mask"]), {}

  loader = ensemble.EnsembleLoader([arrays] * len(seeds), int(sft.batch_size),
                                   seeds=seeds)
  params = ensemble.init_ensemble_params(model, arrays["x"], seeds)
  params, _ = ensemble.train_ensemble(
      workdir=path, train_config=run_cfg.train, params=params, tx=tx, loader=loader,
      seed=int(config.seed), loss_fn=loss_fn, progress=bool(config.progress),
      desc=f"SFT ({len(seeds)} seeds)")
  checkpoint.save_tree(params_path, params)
  return params


# ----------------------------------------------------------------------------
# Sampling and evaluation (vmapped over members).
# ----------------------------------------------------------------------------


def make_sampler(model, completion_length: int) -> Callable:
  """``sample(stacked_params, keys, prompts, temperature, greedy)`` -> Generation
  with a leading member axis; one compilation per (shape, greedy)."""

  def one(params, key, prompts, temperature, greedy):
    return models.generate(model, params, prompts, key, max_new_tokens=completion_length,
                           temperature=temperature, greedy=greedy,
                           stop_token=tasks.EOS, pad_token=tasks.PAD)

  jitted = {g: jax.jit(jax.vmap(lambda p, k, x, t, g=g: one(p, k, x, t, g),
                                in_axes=(0, 0, None, None)))
            for g in (False, True)}
  return lambda params, keys, prompts, temperature=1.0, greedy=False: jitted[greedy](
      params, keys, prompts, jnp.float32(temperature))


def make_scorer(model) -> Callable:
  """``score(stacked_params, prompts [M, n, P], completions, masks) -> [M, n]``
  summed log-probabilities of the completions."""

  def one(params, prompts, completions, mask):
    logits = task_losses.completion_logits(
        lambda p, x: model.apply({"params": p}, x), params, prompts, completions)
    return sequence.sequence_log_likelihood(logits, completions, mask)

  return jax.jit(jax.vmap(one))


def evaluate(config, stacked_params, sft_params_per_member, seed_of_member: Sequence[int],
             test, sampler, scorer, key) -> list[dict]:
  """Per-member test metrics (see the module docstring).

  Members of one seed sample with the same key (common random numbers): the
  methods' differences are not sampling noise, and identical policies give
  identical rows.
  """
  members = ensemble.num_members(stacked_params)
  m = int(config.eval.samples_per_prompt)
  prompts = np.repeat(test["prompt"], m, axis=0)
  seed_keys = jax.random.split(key, int(config.num_seeds))
  keys = seed_keys[np.asarray(list(seed_of_member))]
  out = jax.device_get(sampler(stacked_params, keys, prompts,
                               float(config.eval.temperature)))
  greedy = jax.device_get(sampler(stacked_params, keys, test["prompt"], greedy=True))
  policy_logp = (out.log_probs * out.mask).sum(-1)  # [M, n*m]
  stacked_prompts = np.broadcast_to(prompts, (members,) + prompts.shape)
  sft_logp = np.asarray(scorer(sft_params_per_member, stacked_prompts, out.tokens,
                               out.mask))
  records = []
  for k in range(members):
    r = score_completions(config, prompts, out.tokens[k], out.mask[k])
    g = score_completions(config, test["prompt"], greedy.tokens[k], greedy.mask[k])
    per_prompt_kl = (policy_logp[k] - sft_logp[k]).reshape(-1, m).mean(1)
    tokens = np.where(out.mask[k], out.tokens[k], -1).reshape(-1, m, out.tokens.shape[-1])
    distinct = np.mean([len({row.tobytes() for row in group}) for group in tokens])
    records.append({"reward": float(r["partial"].mean()), "exact": float(r["exact"].mean()),
                    "greedy_exact": float(g["exact"].mean()),
                    "kl": float(per_prompt_kl.mean()),
                    "kl_se": float(per_prompt_kl.std(ddof=1) / np.sqrt(len(per_prompt_kl))),
                    "distinct": float(distinct)})
  return records


# ----------------------------------------------------------------------------
# Stage 2: pairs from the SFT models.
# ----------------------------------------------------------------------------


def make_pairs(config, sft_params, train, sampler, key) -> list[dict]:
  """Per seed, chosen/rejected completions of the training prompts."""
  seeds = ensemble.num_members(sft_params)
  m = int(config.pairs.samples_per_prompt)
  num_prompts = min(int(config.pairs.num_prompts), len(train["prompt"]))
  prompt_rows = train["prompt"][:num_prompts]
  prompts = np.repeat(prompt_rows, m, axis=0)
  out = jax.device_get(sampler(sft_params, jax.random.split(key, seeds), prompts,
                               float(config.pairs.temperature)))
  per_seed = []
  for k in range(seeds):
    score = score_completions(config, prompts, out.tokens[k],
                              out.mask[k])["partial"].reshape(num_prompts, m)
    best, worst = score.argmax(1), score.argmin(1)
    keep = np.flatnonzero(score.max(1) > score.min(1))
    rows = keep * m
    tokens = out.tokens[k]
    mask = out.mask[k]
    chosen, rejected = rows + best[keep], rows + worst[keep]
    # KTO's mismatched pairs: each prompt with another pair's chosen answer.
    other = np.roll(chosen, 1)
    per_seed.append({
        "prompt": prompt_rows[keep], "chosen": tokens[chosen],
        "chosen_mask": mask[chosen], "rejected": tokens[rejected],
        "rejected_mask": mask[rejected], "mismatched": tokens[other],
        "mismatched_mask": mask[other],
        "chosen_reward": score[keep, best[keep]], "rejected_reward": score[keep, worst[keep]]})
  return per_seed


def add_reference(model, sft_params, pairs: list[dict]) -> list[dict]:
  """Adds the SFT (reference) logits/log-probs each pair's loss needs."""
  def logits_fn(params, x):
    return model.apply({"params": params}, x)

  out = []
  for k, p in enumerate(pairs):
    one = ensemble.stack_members([ensemble.member(sft_params, k)])
    prompt_len = p["prompt"].shape[1]
    full = {}
    for part in ("chosen", "rejected", "mismatched"):
      x = np.concatenate([p["prompt"], p[part]], axis=1)[:, :-1]
      full[part] = ensemble.ensemble_outputs(logits_fn, one, x)[0][:, prompt_len - 1:]
    mis_logp = np.asarray(sequence.sequence_log_likelihood(
        full["mismatched"], p["mismatched"], p["mismatched_mask"]))
    out.append({**p, "ref_chosen_logits": full["chosen"].astype(np.float32),
                "ref_rejected_logits": full["rejected"].astype(np.float32),
                "ref_mismatched_logp": mis_logp.astype(np.float32)})
  return out


def pair_margins(stacked_params, seed_of_member: Sequence[int], pairs: list[dict],
                 scorer) -> list[dict]:
  """Per member, on (up to `MARGIN_PAIRS`) of its seed's training pairs:
  ``margin`` = mean of h = (l_w - l_w^ref) - (l_l - l_l^ref) (DPO's implicit
  reward difference, summed log-probs) and ``pair_accuracy`` = fraction of
  pairs with h > `MARGIN_TOLERANCE`. Both are 0 for the reference itself."""
  n = min(MARGIN_PAIRS, min(len(p["prompt"]) for p in pairs))
  stack = lambda key: np.stack([pairs[k][key][:n] for k in seed_of_member])
  chosen = np.asarray(scorer(stacked_params, stack("prompt"), stack("chosen"),
                             stack("chosen_mask")))
  rejected = np.asarray(scorer(stacked_params, stack("prompt"), stack("rejected"),
                               stack("rejected_mask")))
  ref = {part: np.stack([np.asarray(sequence.sequence_log_likelihood(
      pairs[k][f"ref_{part}_logits"][:n], pairs[k][part][:n], pairs[k][f"{part}_mask"][:n]))
      for k in seed_of_member]) for part in ("chosen", "rejected")}
  h = (chosen - ref["chosen"]) - (rejected - ref["rejected"])
  return [{"margin": float(row.mean()),
           "pair_accuracy": float((row > MARGIN_TOLERANCE).mean())}
          for row in h]


# ----------------------------------------------------------------------------
# Stage 3: preference training.
# ----------------------------------------------------------------------------


TRAIN_KEYS = ("prompt", "chosen", "chosen_mask", "rejected", "rejected_mask", "mismatched",
              "mismatched_mask", "ref_chosen_logits", "ref_rejected_logits",
              "ref_mismatched_logp")


def method_groups(methods: Sequence[str]) -> dict[str, list[str]]:
  """Methods that share a compiled step: KTO's extra forward pass on its own."""
  plain = [m for m in methods if m not in task_losses.NEEDS_MISMATCHED]
  extra = [m for m in methods if m in task_losses.NEEDS_MISMATCHED]
  return {name: group for name, group in (("paired", plain), ("mismatched", extra))
          if group}


def train_group(config, path: pathlib.Path, model, group: list[str], sft_params,
                pairs: list[dict]) -> Any:
  """Trains every (method, seed) member of a group; returns stacked params."""
  params_path = path / "params.msgpack"
  if params_path.exists():
    return checkpoint.load_tree(params_path)
  seeds = len(pairs)
  members, member_params = [], []
  for index, method in enumerate(group):
    for k in range(seeds):
      arrays = {key: pairs[k][key] for key in TRAIN_KEYS}
      arrays["method"] = np.full(len(arrays["prompt"]), index, np.int32)
      members.append(arrays)
      member_params.append(ensemble.member(sft_params, k))
  dropout = float(config.model.get("dropout_rate", 0.0)) > 0
  loss_fn = task_losses.make_group_loss(
      group, lambda p, x, **kw: model.apply({"params": p}, x, **kw),
      {m: dict(config.hparams.get(m, {})) for m in group}, float(config.beta), dropout)
  tx = trainer.make_optimizer(config.optimizer, int(config.train.num_steps))
  # Members of one seed draw their batches in the same order, whatever the
  # method: the methods are compared on identical data (and DPO and f-DPO
  # reverse KL, the same loss, train identically).
  loader = ensemble.EnsembleLoader(members, int(config.data.batch_size),
                                   seeds=[int(config.seed) + k for _ in group
                                          for k in range(seeds)])
  params, _ = ensemble.train_ensemble(
      workdir=path, train_config=config.train,
      params=ensemble.stack_members(member_params), tx=tx, loader=loader,
      seed=int(config.seed), loss_fn=loss_fn, progress=bool(config.progress),
      desc=f"preference {'/'.join(group)} x {seeds} seeds")
  checkpoint.save_tree(params_path, params)
  return params


# ----------------------------------------------------------------------------
# The experiment.
# ----------------------------------------------------------------------------


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[dict]:
  """SFT, pairs, every preference method; writes results.md/json and the plot."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  methods = list(config.methods)
  task_losses.check_methods(methods)
  if int(config.num_seeds) < 1:
    raise ValueError(f"`num_seeds` must be >= 1, got {config.num_seeds}.")
  started = time.time()
  seeds = [int(config.seed) + i for i in range(int(config.num_seeds))]
  parallel.check_batch_size(int(config.data.batch_size), parallel.make_mesh())
  splits = load_splits(config)
  model, _ = build_model(config)
  completion_length = tasks.task_lengths(config.task.name, **task_options(config))[1]
  sampler, scorer = make_sampler(model, completion_length), make_scorer(model)
  key = jax.random.key(int(config.seed))
  pair_key, eval_key = jax.random.split(key)

  sft_params = train_sft(config, workdir / "runs" / "sft", model, splits, seeds)
  pairs = add_reference(model, sft_params,
                        make_pairs(config, sft_params, splits["train"], sampler, pair_key))
  pair_counts = [len(p["prompt"]) for p in pairs]
  records = []
  sft_eval = evaluate(config, sft_params, sft_params, range(len(seeds)), splits["test"],
                      sampler, scorer, eval_key)
  sft_margins = pair_margins(sft_params, range(len(seeds)), pairs, scorer)
  for k, (rec, margin) in enumerate(zip(sft_eval, sft_margins)):
    records.append({"method": "sft", "seed": seeds[k], **rec, **margin})
  if min(pair_counts) < int(config.data.batch_size):
    raise ValueError(f"only {min(pair_counts)} preference pairs for one seed, fewer than "
                     f"`data.batch_size`={config.data.batch_size}; sample more prompts "
                     "(`pairs.num_prompts`) or stop SFT earlier.")
  for name, group in method_groups(methods).items():
    path = workdir / "runs" / f"preference_{name}"
    done = path / "records.json"
    if done.exists():
      records += json.loads(done.read_text())
      continue
    params = train_group(config, path, model, group, sft_params, pairs)
    sft_per_member = ensemble.stack_members(
        [ensemble.member(sft_params, k) for _ in group for k in range(len(seeds))])
    group_records = []
    seed_of_member = [k for _ in group for k in range(len(seeds))]
    evaluated = evaluate(config, params, sft_per_member, seed_of_member, splits["test"],
                         sampler, scorer, eval_key)
    margins = pair_margins(params, seed_of_member, pairs, scorer)
    for i, (rec, margin) in enumerate(zip(evaluated, margins)):
      method, k = group[i // len(seeds)], i % len(seeds)
      group_records.append({"method": method, "seed": seeds[k], **rec, **margin})
    metrics_lib.write_json(done, group_records)
    records += group_records
  rows = metrics_lib.aggregate_seeds(records, keys=("method",), metrics=METRICS)
  labels = {"sft": "SFT (reference)", **task_losses.METHODS}
  for row in rows:
    row["label"] = labels[row["method"]]
  minutes = (time.time() - started) / 60
  notes = _notes(config, pairs, minutes)
  text = metrics_lib.write_results(
      workdir, rows, title=f"Preference optimisation on the {config.task.name} task",
      columns=("label", "reward", "exact", "greedy_exact", "kl", "kl_se", "distinct",
               "pair_accuracy", "seeds"), notes=notes)
  metrics_lib.write_json(workdir / "pairs.json", {
      "pairs_per_seed": pair_counts,
      "chosen_reward": [float(p["chosen_reward"].mean()) for p in pairs],
      "rejected_reward": [float(p["rejected_reward"].mean()) for p in pairs]})
  from experiments.alignment import task_plots  # pylint: disable=g-import-not-at-top
  task_plots.reward_vs_kl(workdir / "reward_vs_kl.png", rows)
  print(text)
  return rows


def _notes(config, pairs, minutes: float) -> str:
  counts = [len(p["prompt"]) for p in pairs]
  chosen = np.mean([p["chosen_reward"].mean() for p in pairs])
  rejected = np.mean([p["rejected_reward"].mean() for p in pairs])
  return (
      f"TransformerLM {dict(config.model)}; SFT {config.sft.num_steps} steps (batch "
      f"{config.sft.batch_size}), then each "
      f"method {config.train.num_steps} steps (batch {config.data.batch_size} pairs, "
      f"lr {config.optimizer.learning_rate}, beta {config.beta}) from the SFT model of "
      f"its seed. Pairs: best vs worst of {config.pairs.samples_per_prompt} SFT samples "
      f"on {config.pairs.num_prompts} training prompts; {min(counts)}-{max(counts)} "
      f"pairs per seed (mean partial reward chosen {chosen:.3f}, rejected "
      f"{rejected:.3f}). Test: {config.task.num_test} held-out prompts x "
      f"{config.eval.samples_per_prompt} samples at temperature "
      f"{config.eval.temperature}. `reward` = mean partial credit, `exact` = exact-match "
      f"rate of the samples, `greedy_exact` = of greedy decoding, `kl` = Monte Carlo "
      f"KL(pi || pi_SFT) (mean over seeds; `kl_se` its standard error over prompts, "
      f"averaged over seeds), `distinct` = distinct completions per prompt, "
      f"`pair_accuracy` = fraction of (up to {MARGIN_PAIRS}) training pairs whose "
      f"implicit reward margin (l_w - l_w^SFT) - (l_l - l_l^SFT) exceeds "
      f"{MARGIN_TOLERANCE} nats. Mean ± std "
      f"over {config.num_seeds} seeds. Wall time {minutes:.1f} min.")
