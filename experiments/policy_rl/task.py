"""GRPO variants and offline TOPR on a small TransformerLM, a verifiable task.

Pipeline (sub-runs under ``<workdir>/runs/``; a finished stage is reloaded):

1. ``runs/sft``: ``num_seeds`` TransformerLMs learn the task
   (`divlab.data.tasks`) by supervised fine-tuning on the completion tokens,
   side by side as one vmapped ensemble (`divlab.train.ensemble`), stopped
   short of perfect so that RL has room and samples still differ.
2. Rehearsal data (DPH-RL): each SFT model samples ``dph.samples_per_prompt``
   (8) completions of ``dph.num_prompts`` training prompts; prompts whose
   samples are all correct form the rehearsal set (their samples and the SFT
   token log-probs are stored), the rest are the DPH member's RL prompts.
3. ``runs/grpo``: every (method, seed) member starts from its seed's SFT model;
   each step samples ``rl.prompts_per_step`` prompts x ``rl.group_size``
   completions from the current policy (`divlab.models.sample_groups`), scores
   them with the task's exact reward, and takes one Adam step on
   `divlab.losses.policy.grpo_loss` (group advantages, PPO clip with the
   sampling log-probs as ``old_logp``), with the KL to the SFT model
   (the reference) in the loss (k3), in the reward (k1, return-to-go), or DPH's
   forward-KL rehearsal term on the stored SFT samples. All members share one
   compiled step (the method is data: its coefficients).
4. ``runs/topr``: offline TOPR on a fixed buffer of SFT samples (rewards +1 /
   ``topr.negative_reward``), trained with the shared ensemble trainer.
5. Evaluation on held-out prompts: ``eval.num_samples`` (64) samples each at
   temperature 1; pass@k for k = 1 .. 64 by the unbiased estimator
   (`divlab.eval.pass_at_k`). Table: mean ± std over seeds; ``pass_at_k.png``
   and the train-reward curves (``curves.json``).
"""
from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from divlab import eval as eval_lib
from divlab import models
from divlab.data import tasks
from divlab.losses import policy
from divlab.losses import reduce_loss
from divlab.losses import sequence
from divlab.train import checkpoint
from divlab.train import ensemble
from divlab.train import metrics as metrics_lib
from divlab.train import trainer

METHODS = {
    "grpo": "GRPO, no KL",
    "grpo_k3_loss": "GRPO + k3 in loss",
    "grpo_k1_reward": "GRPO + k1 in reward",
    "grpo_dph_forward": "GRPO + DPH forward-KL rehearsal",
    "topr_offline": "offline TOPR",
}
ONLINE = ("grpo", "grpo_k3_loss", "grpo_k1_reward", "grpo_dph_forward")


# ----------------------------------------------------------------------------
# Model, data, persistence.
# ----------------------------------------------------------------------------


def build_model(config) -> Any:
  return models.build("transformer_lm", num_outputs=tasks.VOCAB_SIZE, **dict(config.model))


def task_options(config) -> dict:
  return {"length": int(config.task.length),
          "reverse_answer": bool(config.task.reverse_answer)}


def exact_reward(config, prompts, tokens, mask) -> np.ndarray:
  return tasks.reward(config.task.name, np.asarray(prompts), np.asarray(tokens),
                      np.asarray(mask),
                      reverse_answer=bool(config.task.reverse_answer))["exact"]


def _stack_for(params, seed_of_member: Sequence[int]):
  return ensemble.stack_members([ensemble.member(params, k) for k in seed_of_member])


# ----------------------------------------------------------------------------
# Stage 1: SFT (shared ensemble trainer).
# ----------------------------------------------------------------------------


def train_sft(config, path: pathlib.Path, model, train, seeds) -> Any:
  params_path = path / "params.msgpack"
  if params_path.exists():
    return checkpoint.load_tree(params_path)
  prompt_len = train["prompt"].shape[1]
  x = np.concatenate([train["prompt"], train["completion"]], axis=1).astype(np.int32)
  target_mask = np.concatenate(
      [np.zeros((len(x), prompt_len - 1), bool), train["completion_mask"]], axis=1)
  arrays = {"x": x, "target_mask": target_mask}
  sft = config.sft
  run_cfg = trainer.run_config(batch_size=int(config.data.batch_size),
                               optimizer=sft.optimizer.to_dict(),
                               num_steps=int(sft.num_steps), log_every=int(sft.log_every),
                               checkpoint_every=int(sft.num_steps))
  tx = trainer.make_optimizer(run_cfg.optimizer, int(sft.num_steps))

  def loss_fn(params, batch, rng):
    del rng
    logits = model.apply({"params": params}, batch["x"][:, :-1])
    logp = sequence.token_log_probs(logits, batch["x"][:, 1:], batch["target_mask"])
    return -reduce_loss(logp, "mean", where=batch["target_mask"]), {}

  loader = ensemble.EnsembleLoader([arrays] * len(seeds), int(config.data.batch_size),
                                   seeds=seeds)
  params = ensemble.init_ensemble_params(model, x, seeds)
  params, _ = ensemble.train_ensemble(
      workdir=path, train_config=run_cfg.train, params=params, tx=tx, loader=loader,
      seed=int(config.seed), loss_fn=loss_fn, progress=bool(config.progress),
      desc=f"SFT ({len(seeds)} seeds)")
  checkpoint.save_tree(params_path, params)
  return params


# ----------------------------------------------------------------------------
# Sampling, scoring, evaluation (vmapped over members).
# ----------------------------------------------------------------------------


def make_sampler(model, completion_length: int, group_size: int, shared_prompts: bool):
  """``sample(stacked_params, keys, prompts) -> (prompts, Generation)`` with a
  leading member axis; prompts ``[P, L]`` shared or ``[M, P, L]`` per member."""
  def one(params, key, prompts):
    return models.sample_groups(model, params, prompts, key, group_size=group_size,
                                max_new_tokens=completion_length, stop_token=tasks.EOS,
                                pad_token=tasks.PAD)
  return jax.jit(jax.vmap(one, in_axes=(0, 0, None if shared_prompts else 0)))


def make_scorer(model):
  """``score(stacked_params, prompts, tokens, mask) -> [M, B, N]`` token log-probs."""
  return jax.jit(jax.vmap(lambda p, x, y, m: models.completion_log_probs(model, p, x, y, m)))


def evaluate(config, stacked_params, test, model, key) -> list[dict]:
  """Per member: held-out pass@k (unbiased, ``eval.num_samples`` samples per
  prompt) and the mean exact reward of the samples."""
  n = int(config.eval.num_samples)
  ks = tuple(int(k) for k in config.eval.pass_k)
  completion_length = tasks.task_lengths(config.task.name, **task_options(config))[1]
  sampler = make_sampler(model, completion_length, n, shared_prompts=True)
  members = ensemble.num_members(stacked_params)
  chunk = int(config.eval.prompts_per_chunk)
  correct = np.zeros((members, len(test["prompt"])), np.int64)
  for start in range(0, len(test["prompt"]), chunk):
    prompts = test["prompt"][start:start + chunk]
    keys = jax.random.split(jax.random.fold_in(key, start), members)
    repeated, out = jax.device_get(sampler(stacked_params, keys, prompts))
    for k in range(members):
      r = exact_reward(config, repeated[k], out.tokens[k], out.mask[k])
      correct[k, start:start + len(prompts)] = r.reshape(len(prompts), n).sum(1)
  records = []
  for k in range(members):
    values = eval_lib.pass_at_k(correct[k], n, ks)
    records.append({f"pass@{kk}": float(v) for kk, v in zip(ks, values)})
  return records


# ----------------------------------------------------------------------------
# Stage 2: DPH-RL's rehearsal set.
# ----------------------------------------------------------------------------


def rehearsal_data(config, model, sft_params, train, key) -> list[dict]:
  """Per seed: the all-correct prompts' stored SFT samples (and their SFT
  token log-probs), and the indices of the remaining (RL) prompts."""
  seeds = ensemble.num_members(sft_params)
  m = int(config.dph.samples_per_prompt)
  num = min(int(config.dph.num_prompts), len(train["prompt"]))
  completion_length = tasks.task_lengths(config.task.name, **task_options(config))[1]
  sampler = make_sampler(model, completion_length, m, shared_prompts=True)
  repeated, out = jax.device_get(sampler(sft_params, jax.random.split(key, seeds),
                                         train["prompt"][:num]))
  per_seed = []
  for k in range(seeds):
    r = exact_reward(config, repeated[k], out.tokens[k], out.mask[k]).reshape(num, m)
    all_correct = r.min(1) == 1
    rows = np.flatnonzero(np.repeat(all_correct, m))
    rl_prompts = np.flatnonzero(~all_correct)
    per_seed.append({"prompt": repeated[k][rows], "tokens": out.tokens[k][rows],
                     "mask": out.mask[k][rows], "ref_logp": out.log_probs[k][rows],
                     "rl_prompts": rl_prompts if len(rl_prompts) else np.arange(num),
                     "fraction": float(all_correct.mean())})
  return per_seed


# ----------------------------------------------------------------------------
# Stage 3: online GRPO variants.
# ----------------------------------------------------------------------------


def method_coefficients(config, method: str) -> dict[str, float]:
  rl = config.rl
  return {"kl_loss": float(rl.kl_coef) if method == "grpo_k3_loss" else 0.0,
          "kl_reward": float(rl.kl_coef) if method == "grpo_k1_reward" else 0.0,
          "dph": float(config.dph.coef) if method == "grpo_dph_forward" else 0.0}


def make_grpo_step(config, model, tx):
  """One jitted update of every member: ``step(params, opt_state, batch, coefs)``."""
  rl = config.rl
  clip = {"clip_low": float(rl.clip_low), "clip_high": float(rl.clip_high)}

  def member_loss(params, batch, coefs):
    logp = models.completion_log_probs(model, params, batch["prompt"], batch["tokens"],
                                       batch["mask"])
    common = dict(ref_logp=batch["ref_logp"], aggregation=str(rl.aggregation), **clip)
    in_loss = policy.grpo_loss(logp, batch["old_logp"], batch["advantages"], batch["mask"],
                               kl_coef=coefs["kl_loss"], kl_in="loss",
                               kl_kind=str(rl.kl_kind), **common)
    in_reward = policy.grpo_loss(logp, batch["old_logp"], batch["advantages"],
                                 batch["mask"], kl_coef=coefs["kl_reward"],
                                 kl_in="reward", **common)
    rl_loss = jnp.where(coefs["kl_reward"] > 0, in_reward, in_loss)
    reh_logp = models.completion_log_probs(model, params, batch["reh_prompt"],
                                           batch["reh_tokens"], batch["reh_mask"])
    rehearsal = reduce_loss(policy.dph_rehearsal(reh_logp, batch["reh_ref_logp"],
                                                 kind="forward"),
                            "mean", where=batch["reh_mask"])
    return rl_loss + coefs["dph"] * rehearsal

  def update(params, opt_state, batch, coefs):
    loss, grads = jax.value_and_grad(member_loss)(params, batch, coefs)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(jax.vmap(update), donate_argnums=(0, 1))


def train_grpo(config, path: pathlib.Path, model, sft_params, train, rehearsal,
               members: Sequence[tuple[str, int]], key) -> tuple[Any, dict]:
  """Trains every (method, seed index) member; returns stacked params and the
  per-step mean train reward of each member."""
  params_path, curves_path = path / "params.msgpack", path / "curves.json"
  if params_path.exists() and curves_path.exists():
    return checkpoint.load_tree(params_path), json.loads(curves_path.read_text())
  rl = config.rl
  p, g = int(rl.prompts_per_step), int(rl.group_size)
  completion_length = tasks.task_lengths(config.task.name, **task_options(config))[1]
  sampler = make_sampler(model, completion_length, g, shared_prompts=False)
  scorer = make_scorer(model)
  seed_of = [k for _, k in members]
  ref_params = _stack_for(sft_params, seed_of)
  params = _stack_for(sft_params, seed_of)
  tx = trainer.make_optimizer(config.optimizer, int(config.train.num_steps))
  opt_state = jax.vmap(tx.init)(params)
  step_fn = make_grpo_step(config, model, tx)
  coefs = {name: jnp.asarray([method_coefficients(config, m)[name] for m, _ in members],
                             jnp.float32) for name in ("kl_loss", "kl_reward", "dph")}
  rng = np.random.default_rng(int(config.seed))
  num_reh = int(config.dph.rehearsal_batch)
  curves = {f"{m}/{k}": [] for m, k in members}
  num_steps = int(config.train.num_steps)
  started = time.time()
  for step in range(num_steps):
    prompt_rows, reh_rows = [], []
    for method, k in members:
      pool = rehearsal[k]["rl_prompts"] if method == "grpo_dph_forward" else np.arange(
          len(train["prompt"]))
      prompt_rows.append(train["prompt"][rng.choice(pool, p, replace=len(pool) < p)])
      size = len(rehearsal[k]["tokens"])
      reh_rows.append(rng.choice(size, num_reh) if size else np.zeros(num_reh, int))
    keys = jax.random.split(jax.random.fold_in(key, step), len(members))
    repeated, out = sampler(params, keys, jnp.asarray(np.stack(prompt_rows)))
    host = jax.device_get((repeated, out))
    rewards = np.stack([exact_reward(config, host[0][i], host[1].tokens[i],
                                     host[1].mask[i]) for i in range(len(members))])
    advantages = policy.group_advantages(rewards.reshape(len(members) * p, g),
                                         std=str(rl.std), eps=float(rl.eps))
    ref_logp = scorer(ref_params, repeated, out.tokens, out.mask)
    reh = {name: np.stack([
        rehearsal[k][src][rows] if len(rehearsal[k]["tokens"]) else
        np.zeros((num_reh,) + rehearsal[k][src].shape[1:], rehearsal[k][src].dtype)
        for (_, k), rows in zip(members, reh_rows)])
        for name, src in (("reh_prompt", "prompt"), ("reh_tokens", "tokens"),
                          ("reh_mask", "mask"), ("reh_ref_logp", "ref_logp"))}
    batch = {"prompt": repeated, "tokens": out.tokens, "mask": out.mask,
             "old_logp": out.log_probs, "ref_logp": ref_logp,
             "advantages": advantages.reshape(len(members), p * g), **reh}
    params, opt_state, losses = step_fn(params, opt_state, batch, coefs)
    for i, (m, k) in enumerate(members):
      curves[f"{m}/{k}"].append(float(rewards[i].mean()))
    if config.progress and (step % int(config.train.log_every) == 0 or
                            step == num_steps - 1):
      means = {m: np.mean([rewards[i].mean() for i, (mm, _) in enumerate(members)
                           if mm == m]) for m in dict.fromkeys(m for m, _ in members)}
      print(f"[policy_rl/task] GRPO step {step + 1}/{num_steps} "
            f"({time.time() - started:.0f}s) train reward "
            + ", ".join(f"{m} {v:.3f}" for m, v in means.items()), flush=True)
  params = jax.device_get(params)
  checkpoint.save_tree(params_path, params)
  metrics_lib.write_json(curves_path, curves)
  return params, curves


# ----------------------------------------------------------------------------
# Stage 4: offline TOPR (shared ensemble trainer).
# ----------------------------------------------------------------------------


def train_topr(config, path: pathlib.Path, model, sft_params, train, key) -> Any:
  params_path = path / "params.msgpack"
  if params_path.exists():
    return checkpoint.load_tree(params_path)
  seeds = ensemble.num_members(sft_params)
  cfg = config.topr
  num = min(int(cfg.num_prompts), len(train["prompt"]))
  completion_length = tasks.task_lengths(config.task.name, **task_options(config))[1]
  sampler = make_sampler(model, completion_length, int(cfg.samples_per_prompt),
                         shared_prompts=True)
  repeated, out = jax.device_get(sampler(sft_params, jax.random.split(key, seeds),
                                         train["prompt"][:num]))
  buffers = []
  for k in range(seeds):
    r = exact_reward(config, repeated[k], out.tokens[k], out.mask[k])
    buffers.append({"prompt": repeated[k], "tokens": out.tokens[k], "mask": out.mask[k],
                    "behaviour_logp": (out.log_probs[k] * out.mask[k]).sum(1),
                    "reward": np.where(r > 0, 1.0, float(cfg.negative_reward)
                                       ).astype(np.float32)})

  def loss_fn(params, batch, rng):
    del rng
    logp = models.completion_log_probs(model, params, batch["prompt"], batch["tokens"],
                                       batch["mask"])
    seq = sequence.sequence_sum(logp, batch["mask"])
    return reduce_loss(policy.topr(seq, batch["behaviour_logp"], batch["reward"]),
                       "mean"), {}

  tx = trainer.make_optimizer(config.optimizer, int(config.train.num_steps))
  loader = ensemble.EnsembleLoader(buffers, int(cfg.batch_size),
                                   seeds=[int(config.seed) + k for k in range(seeds)])
  train_cfg = trainer.run_config(batch_size=int(cfg.batch_size),
                                 optimizer=config.optimizer.to_dict(),
                                 num_steps=int(config.train.num_steps),
                                 log_every=int(config.train.log_every),
                                 checkpoint_every=int(config.train.checkpoint_every)).train
  params, _ = ensemble.train_ensemble(
      workdir=path, train_config=train_cfg, params=sft_params, tx=tx, loader=loader,
      seed=int(config.seed), loss_fn=loss_fn, progress=bool(config.progress),
      desc=f"offline TOPR ({seeds} seeds)")
  checkpoint.save_tree(params_path, params)
  return params


# ----------------------------------------------------------------------------
# The experiment.
# ----------------------------------------------------------------------------


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[dict]:
  """SFT, rehearsal data, GRPO variants, offline TOPR; held-out pass@k table."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  methods = list(config.methods)
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    raise ValueError(f"`methods` {unknown} unknown; choose from {list(METHODS)}.")
  if int(config.num_seeds) < 1:
    raise ValueError(f"`num_seeds` must be >= 1, got {config.num_seeds}.")
  if max(int(k) for k in config.eval.pass_k) > int(config.eval.num_samples):
    raise ValueError("`eval.pass_k` must not exceed `eval.num_samples`.")
  started = time.time()
  seeds = [int(config.seed) + i for i in range(int(config.num_seeds))]
  splits = tasks.make_task(config.task.name, num_train=int(config.task.num_train),
                           num_test=int(config.task.num_test),
                           seed=int(config.task.split_seed), **task_options(config))
  model = build_model(config)
  key = jax.random.key(int(config.seed))
  reh_key, grpo_key, topr_key, eval_key = jax.random.split(key, 4)
  timings = {}

  t0 = time.time()
  sft_params = train_sft(config, workdir / "runs" / "sft", model, splits["train"], seeds)
  timings["sft"] = time.time() - t0
  records = [{"method": "sft", "seed": s, **r} for s, r in zip(
      seeds, evaluate(config, sft_params, splits["test"], model, eval_key))]
  curves = {}
  online = [m for m in methods if m in ONLINE]
  rehearsal = None
  if online:
    t0 = time.time()
    rehearsal = rehearsal_data(config, model, sft_params, splits["train"], reh_key)
    members = [(m, k) for m in online for k in range(len(seeds))]
    params, curves = train_grpo(config, workdir / "runs" / "grpo", model, sft_params,
                                splits["train"], rehearsal, members, grpo_key)
    timings["grpo"] = time.time() - t0
    window = max(1, int(config.train.num_steps) // 5)
    for (m, k), rec in zip(members, evaluate(config, params, splits["test"], model,
                                             eval_key)):
      records.append({"method": m, "seed": seeds[k], "train_reward_first": float(
          np.mean(curves[f"{m}/{k}"][:window])), "train_reward_last": float(
              np.mean(curves[f"{m}/{k}"][-window:])), **rec})
  if "topr_offline" in methods:
    t0 = time.time()
    params = train_topr(config, workdir / "runs" / "topr", model, sft_params,
                        splits["train"], topr_key)
    timings["topr"] = time.time() - t0
    records += [{"method": "topr_offline", "seed": s, **r} for s, r in zip(
        seeds, evaluate(config, params, splits["test"], model, eval_key))]
  ks = tuple(int(k) for k in config.eval.pass_k)
  metric_names = tuple(f"pass@{k}" for k in ks)
  rows = metrics_lib.aggregate_seeds(records, keys=("method",), metrics=metric_names)
  labels = {"sft": "SFT (start)", **METHODS}
  for row in rows:
    row["label"] = labels[row["method"]]
    for name in ("train_reward_first", "train_reward_last"):
      values = [r[name] for r in records if r["method"] == row["method"] and name in r]
      if values:
        row[name] = float(np.mean(values))
  minutes = (time.time() - started) / 60
  metrics_lib.write_json(workdir / "curves.json", curves)
  metrics_lib.write_json(workdir / "timings.json", timings, indent=2)
  notes = _notes(config, rehearsal, minutes)
  text = metrics_lib.write_results(
      workdir, rows, title=f"GRPO variants and offline TOPR on the {config.task.name} task",
      columns=("label",) + metric_names + ("train_reward_first", "train_reward_last",
                                           "seeds"), notes=notes)
  from experiments.policy_rl import plots  # pylint: disable=g-import-not-at-top
  plots.task_figure(workdir / "pass_at_k.png", rows, ks)
  print(text)
  return rows


def _notes(config, rehearsal, minutes: float) -> str:
  rl = config.rl
  fraction = ("" if rehearsal is None else
              f" The DPH rehearsal set (all {config.dph.samples_per_prompt} SFT samples "
              f"correct) holds {np.mean([r['fraction'] for r in rehearsal]):.0%} of "
              f"{config.dph.num_prompts} training prompts (mean over seeds).")
  return (
      f"TransformerLM {dict(config.model)}; SFT {config.sft.num_steps} steps, then "
      f"{config.train.num_steps} RL steps from the SFT model of each seed: "
      f"{rl.prompts_per_step} prompts x group {rl.group_size} per step, GRPO "
      f"({rl.aggregation}, std {rl.std}, clip {rl.clip_low}/{rl.clip_high}), Adam lr "
      f"{config.optimizer.learning_rate}; KL coefficient {rl.kl_coef} (k3 in the loss, "
      f"or k1 in the reward with return-to-go) to the SFT model; DPH forward-KL "
      f"rehearsal weight {config.dph.coef}.{fraction} Offline TOPR: "
      f"{config.topr.samples_per_prompt} SFT samples of {config.topr.num_prompts} "
      f"prompts, rewards +1 / {config.topr.negative_reward}, batch "
      f"{config.topr.batch_size}, {config.train.num_steps} steps. Held-out: "
      f"{config.task.num_test} prompts x {config.eval.num_samples} samples at "
      f"temperature 1, unbiased pass@k; `train_reward_first/last` = mean exact reward "
      f"of the training samples over the first / last fifth of the RL steps. Mean ± std over "
      f"{config.num_seeds} seeds. Wall time {minutes:.1f} min.")
