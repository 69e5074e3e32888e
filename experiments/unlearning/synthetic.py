"""The NPO paper's synthetic experiment: GA collapses, NPO stays bounded.

Setup (Zhang et al., "Negative Preference Optimization: From Catastrophic
Collapse to Effective Unlearning", 2024, and its released ``synthetic/``
code):

* inputs ``x in R^d`` (d = 16); retain ``x ~ N(-alpha 1, I)``, forget
  ``x ~ N(+alpha 1, I)`` (alpha = 1);
* labels drawn from a logistic model around each mode's mean
  ``mu``: retain logits ``(<x - mu, 1>/sqrt(d) + 1, 0)`` (toward class 0),
  forget logits ``(0, <x - mu, 1>/sqrt(d) + 1)`` (toward class 1), i.e.
  ``y ~ softmax(logits)``, so about 70% of each set carries its class;
* a random-features model: fixed ``W ~ N(0, 1/d)`` of shape ``[N, d]``
  (N = 128), features ``z = relu(W x)``, logits ``(<z, a>, 0)`` with only the
  last layer ``a in R^N`` trained (the released code pins the last class's
  logit to 0);
* the *retain-only* model and the *original* model are trained on the
  retain set (n_r = 1000) and on retain + forget (n_f = 200) by full-batch
  gradient descent on the mean cross-entropy from zero, 20000 steps at lr
  0.05, as in the released code;
* unlearning starts from the original model: full-batch gradient descent on
  the last layer, 2000 steps, lr 5e-4, NPO beta = 1;
* metric, every 25 steps: ``KL(p_retain_only || p_model)`` averaged over
  fresh samples (1000 each) from the forget and the retain distributions.

Each seed draws its own ``W`` and data; the seeds train side by side as one
vmapped ensemble (``divlab.train.ensemble``) in the shared fit loop.
"""
from __future__ import annotations

import functools
import json
import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from divlab import eval as dl_eval
from divlab.losses import softmax_cross_entropy
from divlab.losses import unlearning as unlearning_losses
from divlab.train import ensemble
from divlab.train import metrics as metrics_lib
from divlab.train import trainer
from divlab.train import zipped
from experiments.unlearning import plots

METHOD_LABELS = {"ga": "GA", "grad_diff": "GradDiff", "npo": "NPO",
                 "npo_rt": "NPO+RT"}


# ----------------------------------------------------------------------------
# Data and model.
# ----------------------------------------------------------------------------


def sample_mode(rng: np.random.Generator, n: int, *, dim: int, mean_sign: float,
                target_class: int, alpha: float, intercept: float,
                theta_scale: float, num_classes: int) -> dict[str, np.ndarray]:
  """One mode of the released code's data: Gaussian x, logistic labels.

  ``x ~ N(mean_sign * alpha * 1, I)``; the logit of ``target_class`` is
  ``theta_scale <x - mu, 1> / sqrt(d) + intercept`` and every other logit is 0.
  """
  mean = mean_sign * alpha * np.ones(dim)
  x = mean + rng.standard_normal((n, dim))
  logits = np.zeros((n, num_classes))
  logits[:, target_class] = theta_scale * (x - mean).sum(1) / np.sqrt(dim) + intercept
  probs = np.exp(logits - logits.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  y = (rng.random((n, 1)) > np.cumsum(probs, axis=1)).sum(1)
  return {"x": x.astype(np.float32), "y": y.astype(np.int32)}


def logits_fn(params: dict, x: jax.Array) -> jax.Array:
  """Logits ``(<z, a_1>, ..., <z, a_{K-1}>, 0)`` of features ``z = relu(W x)``.

  ``params = {"w": [N, d], "a": [N, K-1]}``. The random features are fixed:
  ``w`` sits in the params only so that each seed carries its own, and a
  ``stop_gradient`` keeps its gradient at exactly 0, so gradient descent
  never moves it. The last class's logit is pinned at 0.
  """
  return _linear_logits(params["a"], random_features(params["w"], x))


def random_features(weights: jax.Array, x: jax.Array) -> jax.Array:
  """``relu(x W^T)``: ``[n, d] -> [n, N]``, with no gradient into ``W``."""
  return jax.nn.relu(x @ jax.lax.stop_gradient(weights).T)


def _linear_logits(a: jax.Array, features: jax.Array) -> jax.Array:
  scores = features @ a
  return jnp.concatenate([scores, jnp.zeros(scores.shape[:-1] + (1,), scores.dtype)],
                         axis=-1)


def make_seed_data(config: ml_collections.ConfigDict, seed: int) -> dict[str, Any]:
  """The random-feature weights ``w`` and all data sets of one seed."""
  cfg = config.synthetic
  rng = np.random.default_rng(seed)
  weights = rng.standard_normal((cfg.num_features, cfg.dim)) / np.sqrt(cfg.dim)
  mode = dict(dim=cfg.dim, alpha=cfg.alpha, intercept=cfg.intercept,
              theta_scale=cfg.theta_scale, num_classes=cfg.num_classes)
  retain_mode = dict(mode, mean_sign=-1.0, target_class=0)
  forget_mode = dict(mode, mean_sign=1.0, target_class=1)
  sets = {"retain": sample_mode(rng, cfg.num_retain, **retain_mode),
          "forget": sample_mode(rng, cfg.num_forget, **forget_mode),
          "eval_retain": sample_mode(rng, cfg.num_eval, **retain_mode),
          "eval_forget": sample_mode(rng, cfg.num_eval, **forget_mode)}
  sets["w"] = weights.astype(np.float32)
  return sets


# ----------------------------------------------------------------------------
# The two reference models, trained as in the released code.
# ----------------------------------------------------------------------------


def _mean_cross_entropy(a: jax.Array, features: jax.Array,
                        labels: jax.Array) -> jax.Array:
  return softmax_cross_entropy(_linear_logits(a, features), labels, reduction="mean")


@functools.partial(jax.jit, static_argnames=("num_classes", "num_steps"))
def fit_last_layer(weights: jax.Array, x: jax.Array, labels: jax.Array, *,
                   num_classes: int, num_steps: int,
                   learning_rate: float) -> tuple[dict, jax.Array]:
  """Full-batch gradient descent on the mean cross-entropy from ``a = 0``.

  This is how the released code trains its retain-only and original models
  (20000 steps at lr 0.05). The iterate, not the exact minimiser, is the
  reference: the problem is badly conditioned (the minimiser's norm is
  hundreds of times the iterate's and its predictions on fresh samples
  differ), so gradient descent's implicit bias is part of the setup. Runs
  as one compiled ``lax.scan`` over an optax SGD update; vmap it over seeds.

  Args:
    weights: ``[N, d]`` random-feature weights (fixed).
    x: ``[n, d]`` inputs.
    labels: ``[n]`` integer labels.
    num_classes: K; ``a`` has shape ``[N, K-1]``.
    num_steps: gradient steps.
    learning_rate: step size.

  Returns:
    ``({"w": [N, d], "a": [N, K-1]}, final gradient norm)``.
  """
  tx = optax.sgd(learning_rate)
  features = random_features(weights, x)  # Fixed: computed once, not per step.
  grad_fn = jax.grad(_mean_cross_entropy)

  def gd_step(carry, _):
    a, opt_state = carry
    updates, opt_state = tx.update(grad_fn(a, features, labels), opt_state)
    return (optax.apply_updates(a, updates), opt_state), None

  a = jnp.zeros((weights.shape[0], num_classes - 1), weights.dtype)
  (a, _), _ = jax.lax.scan(gd_step, (a, tx.init(a)), None, length=num_steps)
  return {"w": weights, "a": a}, jnp.linalg.norm(grad_fn(a, features, labels))


def reference_models(config: ml_collections.ConfigDict,
                     per_seed: Sequence[dict]) -> tuple[dict, dict, float]:
  """Stacked retain-only and original models of every seed, and max grad norm."""
  cfg = config.synthetic
  fit = jax.vmap(functools.partial(
      fit_last_layer, num_classes=cfg.num_classes, num_steps=cfg.pretrain_steps,
      learning_rate=cfg.pretrain_learning_rate))
  weights = np.stack([s["w"] for s in per_seed])
  retain_x = np.stack([s["retain"]["x"] for s in per_seed])
  retain_y = np.stack([s["retain"]["y"] for s in per_seed])
  both_x = np.stack([np.concatenate([s["retain"]["x"], s["forget"]["x"]])
                     for s in per_seed])
  both_y = np.stack([np.concatenate([s["retain"]["y"], s["forget"]["y"]])
                     for s in per_seed])
  retain_params, retain_norms = jax.device_get(fit(weights, retain_x, retain_y))
  original_params, original_norms = jax.device_get(fit(weights, both_x, both_y))
  worst = float(max(np.max(retain_norms), np.max(original_norms)))
  return retain_params, original_params, worst


# ----------------------------------------------------------------------------
# Unlearning objectives on the last layer.
# ----------------------------------------------------------------------------


def _log_likelihood(params: dict, arrays: dict) -> jax.Array:
  return -softmax_cross_entropy(logits_fn(params, arrays["x"]), arrays["y"])


def make_loss_fn(method: str, beta: float):
  """The released code's objectives (batch means), from divlab.losses."""

  def loss_fn(params, batch, rng):
    del rng
    forget, retain = batch["forget"], batch["retain"]
    forget_logp = _log_likelihood(params, forget)
    ref_logp = -softmax_cross_entropy(forget["ref_logits"], forget["y"])
    if method == "ga":
      loss = unlearning_losses.gradient_ascent(forget_logp, reduction="mean")
    elif method == "grad_diff":
      loss = unlearning_losses.grad_diff(forget_logp, _log_likelihood(params, retain),
                                         reduction="mean")
    elif method == "npo":
      loss = unlearning_losses.npo(forget_logp, ref_logp, beta=beta, reduction="mean")
    elif method == "npo_rt":
      loss = unlearning_losses.npo_rt(forget_logp, ref_logp,
                                      _log_likelihood(params, retain), beta=beta,
                                      reduction="mean")
    else:
      raise ValueError(f"unknown synthetic method {method!r}; choose from "
                       f"{sorted(METHOD_LABELS)}.")
    return loss, {"forget_logp": jnp.mean(forget_logp)}

  return loss_fn


def kl_to_retain_model(params: dict, eval_sets: dict) -> dict[str, jax.Array]:
  """Per-member KL(p_retain_only || p_model) on the fresh forget/retain samples."""

  def one_member(member_params, sets):
    return {f"{split}_kl": dl_eval.kl_to_reference(logits_fn(member_params, arrays["x"]),
                                                   arrays["retain_logits"])
            for split, arrays in sets.items()}

  return jax.vmap(one_member)(params, eval_sets)


_kl_to_retain_model = jax.jit(kl_to_retain_model)


# ----------------------------------------------------------------------------
# The experiment.
# ----------------------------------------------------------------------------


def _learning_rate(config: ml_collections.ConfigDict, method: str) -> float:
  """The method's override in ``learning_rates``, else ``optimizer.learning_rate``."""
  return float(config.learning_rates.get(method, config.optimizer.learning_rate))


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[dict]:
  """GA vs NPO (and GradDiff, NPO+RT) on the synthetic task, over seeds."""
  workdir = pathlib.Path(workdir)
  cfg = config.synthetic
  seeds = [config.seed + i for i in range(config.num_seeds)]
  per_seed = [make_seed_data(config, s) for s in seeds]

  # Reference models of every seed, and their logits where they are needed.
  retain_stacked, original_stacked, grad_norm = reference_models(config, per_seed)
  forget_members, retain_members, eval_members = [], [], []
  for k, sets in enumerate(per_seed):
    retain_params = ensemble.member(retain_stacked, k)
    original_params = ensemble.member(original_stacked, k)
    forget_members.append({
        "x": sets["forget"]["x"], "y": sets["forget"]["y"],
        "ref_logits": np.asarray(logits_fn(original_params, sets["forget"]["x"]))})
    retain_members.append({"x": sets["retain"]["x"], "y": sets["retain"]["y"]})
    eval_members.append({
        split: {"x": sets[f"eval_{split}"]["x"],
                "retain_logits": np.asarray(logits_fn(retain_params,
                                                      sets[f"eval_{split}"]["x"]))}
        for split in ("forget", "retain")})
  eval_sets = jax.device_put(ensemble.stack_members(eval_members))
  start = jax.device_get(_kl_to_retain_model(original_stacked, eval_sets))

  trajectories = {}
  records = []
  for method in config.methods:
    run_path = workdir / "runs" / method
    done = run_path / "final_metrics.json"
    if done.exists():
      final = json.loads(done.read_text())
    else:
      # Full batch: each "batch" is the whole forget (and retain) set, in order.
      loader = zipped.ZippedLoader({
          "forget": ensemble.EnsembleLoader(forget_members, cfg.num_forget,
                                            seeds=seeds, shuffle=False),
          "retain": ensemble.EnsembleLoader(retain_members, cfg.num_retain,
                                            seeds=seeds, shuffle=False)})
      optimizer = ml_collections.ConfigDict(dict(config.optimizer))
      optimizer.learning_rate = _learning_rate(config, method)
      tx = trainer.make_optimizer(optimizer, int(config.train.num_steps))

      def eval_fn(state):
        kl = jax.device_get(_kl_to_retain_model(state.params, eval_sets))
        out = {}
        for key, values in kl.items():
          out[key] = float(np.mean(values))
          out[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
          out[f"{key}_seeds"] = [float(v) for v in values]
        return out

      _, final = ensemble.train_ensemble(
          workdir=run_path, train_config=config.train, params=original_stacked,
          tx=tx, loader=loader, seed=config.seed,
          loss_fn=make_loss_fn(method, float(config.beta)), eval_fn=eval_fn,
          progress=bool(config.get("progress", True)),
          desc=f"synthetic {METHOD_LABELS[method]}")
      metrics_lib.write_json(done, final)
    log = [r for r in metrics_lib.read_metrics(run_path) if "forget_kl" in r]
    steps = np.array([0] + [r["step"] for r in log])
    curves = {key: np.array([start[key]] + [r[f"{key}_seeds"] for r in log])
              for key in ("forget_kl", "retain_kl")}  # [T, seeds]
    trajectories[method] = {"steps": steps, **curves}
    for i, seed in enumerate(seeds):
      forget_curve = curves["forget_kl"][:, i]
      records.append({
          "method": METHOD_LABELS[method], "seed": seed,
          "forget_kl_start": float(forget_curve[0]),
          "forget_kl_min": float(forget_curve.min()),
          "forget_kl_final": float(forget_curve[-1]),
          "retain_kl_final": float(curves["retain_kl"][-1, i]),
          "retain_kl_max": float(curves["retain_kl"][:, i].max()),
          "step_of_min": float(steps[int(forget_curve.argmin())])})

  rows = metrics_lib.aggregate_seeds(
      records, keys=("method",),
      metrics=("forget_kl_start", "forget_kl_min", "step_of_min", "forget_kl_final",
               "retain_kl_final", "retain_kl_max"))
  plots.collapse(workdir / "collapse.png", trajectories,
                 {m: METHOD_LABELS[m] for m in config.methods},
                 title=(f"NPO synthetic task (d={cfg.dim}, N={cfg.num_features}; "
                        f"median and range over {len(seeds)} seeds)"))
  metrics_lib.write_npz(workdir / "trajectories.npz",
                        **{f"{m}/{k}": v for m, t in trajectories.items() for k, v in t.items()})
  lrs = ", ".join(f"{METHOD_LABELS[m]} {_learning_rate(config, m):g}"
                  for m in config.methods)
  notes = (
      f"KL(p_retain_only || p_model) on {cfg.num_eval} fresh forget / retain samples "
      f"per seed, mean ± std over {len(seeds)} seeds (seeds {seeds[0]}..{seeds[-1]}). "
      f"Full-batch gradient descent on the last layer for {config.train.num_steps} "
      f"steps, evaluated every {config.train.eval_every}; learning rates: {lrs}; "
      f"NPO beta = {config.beta}. `forget_kl_start` is the original model (step 0), "
      "`forget_kl_min` the lowest forget-KL along the trajectory and `step_of_min` "
      "where it occurs; `retain_kl_max` the largest retain-KL. Reference models: "
      f"{cfg.pretrain_steps} full-batch GD steps at lr {cfg.pretrain_learning_rate:g} "
      f"from zero (final gradient norm <= {grad_norm:.1e}). Plot: collapse.png.")
  text = metrics_lib.write_results(
      workdir, rows, title="NPO synthetic task: KL to the retain-only model",
      columns=("method", "forget_kl_start", "forget_kl_min", "step_of_min",
               "forget_kl_final", "retain_kl_final", "retain_kl_max", "seeds"),
      notes=notes)
  print(text)
  return rows
