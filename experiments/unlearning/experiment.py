"""Unlearning a random 10% or a whole class of an embedded classification set.

Pipeline (every stage a resumable sub-run under ``<workdir>/runs/``):

1. ``runs/base``: ONE vmapped ensemble (`divlab.train.ensemble`) trains, with
   identical hyperparameters and distinct seeds,
   * N *original* models on the whole training split,
   * per forget set, N *oracle* models on the retain set (the reference
     distribution of KLoM) and N more, independent ones (the targets of oracle
     matching, and the "retrain" row, whose KLoM is therefore the metric's
     noise floor at this N),
   * M *subset* models on random 50% subsets (the datamodels' training data).
2. ``runs/datamodels``: ridge datamodels of the subset models' margins on the
   inclusion indicators (`divlab.eval.datamodels`), penalty picked on held-out
   subset models; for each forget set F the predicted oracle margin of
   original model k is ``margin_k(x) - sum_{i in F} beta_i(x)``.
3. ``runs/<forget_set>/<method>``: every method unlearns all N original models
   at once from zipped forget/retain batches (`divlab.train.zipped`), logging
   forget/retain/test accuracy along the way (the trade-off plot).
4. Scores per method: forget / retain / test accuracy and loss-threshold MIA
   AUC (forget losses vs held-out test losses of the same classes), mean ± std
   over the N models; KLoM (`divlab.eval.klom`) of the N unlearned models
   against the N oracles on forget, retain and validation (test) points,
   reported as the 95th percentile over points with a bootstrap std over
   models.
"""
from __future__ import annotations

import functools
import json
import pathlib
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from divlab import data
from divlab import eval as dl_eval
from divlab import models
from divlab.eval import datamodels as datamodels_lib
from divlab.losses import softmax_cross_entropy
from divlab.train import checkpoint
from divlab.train import ensemble
from divlab.train import metrics as metrics_lib
from divlab.train import trainer
from divlab.train import zipped
from experiments.unlearning import methods as methods_lib
from experiments.unlearning import plots

ROLES = ("original", "oracle", "oracle_om", "subset")
# The methods drawn in the KLoM histograms (all of them would be unreadable).
HISTOGRAM_METHODS = ("noop", "ga", "npo", "npo_gu", "om", "dmm", "retrain")


# ----------------------------------------------------------------------------
# Forget sets and the members of the base ensemble.
# ----------------------------------------------------------------------------


def forget_sets(config: ml_collections.ConfigDict,
                labels: np.ndarray) -> dict[str, np.ndarray]:
  """``{name: sorted train indices}`` of every configured forget set.

  ``random``: a uniformly random ``forget.fraction`` of the training set
  (seeded by ``forget.seed``); ``class``: every training example of class
  ``forget.class_label``.
  """
  sets = {}
  for kind in config.forget.kinds:
    if kind == "random":
      count = int(round(config.forget.fraction * len(labels)))
      rng = np.random.default_rng(config.forget.seed)
      indices = np.sort(rng.choice(len(labels), count, replace=False))
      sets[f"random{int(round(100 * config.forget.fraction))}"] = indices
    elif kind == "class":
      label = int(config.forget.class_label)
      sets[f"class{label}"] = np.flatnonzero(labels == label)
    else:
      raise ValueError(f"unknown forget set kind {kind!r}: use 'random' or 'class'.")
  return sets


def base_members(config: ml_collections.ConfigDict, num_train: int,
                 sets: Mapping[str, np.ndarray]) -> list[dict]:
  """The base ensemble: role, forget set, seed and training indices per member."""
  members = []
  n = int(config.num_models)
  seed = int(config.seed)
  everything = np.arange(num_train)
  for _ in range(n):
    members.append({"role": "original", "forget_set": "", "seed": seed,
                    "indices": everything})
    seed += 1
  for name, forget in sets.items():
    retain = np.setdiff1d(everything, forget)
    for role in ("oracle", "oracle_om"):
      for _ in range(n):
        members.append({"role": role, "forget_set": name, "seed": seed,
                        "indices": retain})
        seed += 1
  rng = np.random.default_rng(config.datamodels.subset_seed)
  subset_size = int(round(config.datamodels.subset_fraction * num_train))
  for _ in range(int(config.datamodels.num_models)):
    members.append({"role": "subset", "forget_set": "", "seed": seed,
                    "indices": np.sort(rng.choice(num_train, subset_size,
                                                  replace=False))})
    seed += 1
  return members


def select(members: Sequence[dict], role: str,
           forget_set: str | None = None) -> np.ndarray:
  """Positions of the members with this role (and forget set, if given)."""
  return np.array([i for i, m in enumerate(members) if m["role"] == role and
                   (forget_set is None or m["forget_set"] == forget_set)], dtype=int)


# ----------------------------------------------------------------------------
# Stage 1: the base ensemble.
# ----------------------------------------------------------------------------


def train_base(config: ml_collections.ConfigDict, path: pathlib.Path, model,
               apply_fn: Callable, splits: dict, members: Sequence[dict]) -> dict:
  """Trains (or reloads) the base ensemble; returns its params and logits."""
  outputs_path = path / "outputs.npz"
  params_path = path / "params.msgpack"
  done = path / "final_metrics.json"
  if done.exists():
    outputs = dict(np.load(outputs_path))
    params = checkpoint.load_tree(params_path)
    return {"params": params, **outputs}
  train = splits["train"]
  shared: dict[int, dict] = {}  # One copy of the arrays per distinct index set.
  member_arrays = []
  for m in members:
    key = id(m["indices"])
    if key not in shared:
      shared[key] = {k: v[m["indices"]] for k, v in train.items()}
    member_arrays.append(shared[key])
  seeds = [m["seed"] for m in members]
  loader = ensemble.EnsembleLoader(member_arrays, int(config.data.batch_size),
                                   seeds=seeds)
  tx = trainer.make_optimizer(config.optimizer, int(config.train.num_steps))

  def loss_fn(params, batch, rng):
    del rng
    logits = apply_fn(params, batch["x"])
    return softmax_cross_entropy(logits, batch["y"], reduction="mean"), {}

  params = ensemble.init_ensemble_params(model, train["x"], seeds)
  params, _ = ensemble.train_ensemble(
      workdir=path, train_config=config.train, params=params, tx=tx, loader=loader,
      seed=int(config.seed), loss_fn=loss_fn, progress=bool(config.get("progress", True)),
      desc=f"base ensemble ({len(members)} models)")
  outputs = {"train_logits": ensemble.ensemble_outputs(apply_fn, params, train["x"]),
             "test_logits": ensemble.ensemble_outputs(apply_fn, params,
                                                      splits["test"]["x"])}
  metrics_lib.write_npz(outputs_path, **outputs)
  checkpoint.save_tree(params_path, params)
  summary = {role: float(_accuracy(outputs["test_logits"][select(members, role)],
                                   splits["test"]["y"]).mean())
             for role in ROLES if len(select(members, role))}
  metrics_lib.write_json(done, {"test_accuracy_by_role": summary})
  return {"params": params, **outputs}


# ----------------------------------------------------------------------------
# Stage 2: datamodels.
# ----------------------------------------------------------------------------


def fit_removal_effects(config: ml_collections.ConfigDict, path: pathlib.Path,
                        members: Sequence[dict], train_margins: np.ndarray,
                        sets: Mapping[str, np.ndarray]) -> dict:
  """Per forget set, the datamodels' predicted margin change ``sum_F beta``."""
  done = path / "final_metrics.json"
  effects_path = path / "removal_effects.npz"
  if done.exists():
    return {"effects": dict(np.load(effects_path)), **json.loads(done.read_text())}
  path.mkdir(parents=True, exist_ok=True)
  subset = select(members, "subset")
  num_train = train_margins.shape[1]
  masks = np.zeros((len(subset), num_train), bool)
  for row, index in enumerate(subset):
    masks[row, members[index]["indices"]] = True
  outputs = np.clip(train_margins[subset], -config.klom.clip, config.klom.clip)
  ridge, errors = datamodels_lib.select_ridge(
      masks, outputs, config.datamodels.ridges,
      holdout_fraction=config.datamodels.holdout_fraction, seed=int(config.seed))
  fitted = datamodels_lib.fit_datamodels(masks, outputs, ridge=ridge)
  effects = {}
  for name, forget in sets.items():
    indicator = np.zeros(num_train)
    indicator[forget] = 1.0
    effects[name] = indicator @ fitted.weights
  metrics_lib.write_npz(effects_path, **effects)
  info = {"ridge": ridge, "holdout_mse": {str(k): v for k, v in errors.items()},
          "output_variance": float(outputs.var(0).mean())}
  metrics_lib.write_json(done, info)
  return {"effects": effects, **info}


# ----------------------------------------------------------------------------
# Stage 3: unlearning runs.
# ----------------------------------------------------------------------------


def _log_likelihoods(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  return np.take_along_axis(log_probs, labels[None, :, None], -1)[..., 0]


_jit_margins = jax.jit(dl_eval.margins)


def _margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Margins ``[K, n]`` of every member's logits ``[K, n, C]``."""
  return np.asarray(_jit_margins(logits, np.broadcast_to(labels, logits.shape[:-1])))


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Per-member accuracy ``[K]`` of logits ``[K, n, C]``."""
  return (logits.argmax(-1) == labels).mean(-1)


def unlearning_streams(name: str, train: dict, forget: np.ndarray,
                       retain: np.ndarray, original_logits: np.ndarray,
                       targets: np.ndarray | None) -> tuple[list, list]:
  """Per-member forget and retain arrays of one method (targets if it matches)."""
  ref_logp = _log_likelihoods(original_logits, train["y"])  # [N, n]
  forget_members, retain_members = [], []
  for k in range(original_logits.shape[0]):
    forget_arrays = {"x": train["x"][forget], "y": train["y"][forget],
                     "ref_logp": ref_logp[k, forget].astype(np.float32)}
    retain_arrays = {"x": train["x"][retain], "y": train["y"][retain]}
    if name in methods_lib.TARGETS:
      forget_arrays["target"] = targets[k, forget].astype(np.float32)
      retain_arrays["target"] = targets[k, retain].astype(np.float32)
    forget_members.append(forget_arrays)
    retain_members.append(retain_arrays)
  return forget_members, retain_members


def run_method(config: ml_collections.ConfigDict, path: pathlib.Path, name: str,
               method: methods_lib.Method, train_step: Callable,
               alignment_fn: Callable | None, apply_fn: Callable, original_params: Any,
               streams: tuple[list, list], probe: dict, trajectory_sets: dict,
               splits: dict) -> np.ndarray:
  """Unlearns the N original models with one method; returns train/test logits."""
  logits_path = path / "logits.npz"
  done = path / "final_metrics.json"
  if done.exists():
    saved = np.load(logits_path)
    return saved["train_logits"], saved["test_logits"]
  cfg = config.unlearn
  forget_members, retain_members = streams
  seeds = [int(config.seed) + k for k in range(len(forget_members))]
  loader = zipped.ZippedLoader({
      "forget": ensemble.EnsembleLoader(forget_members, int(cfg.forget_batch_size),
                                        seeds=seeds, drop_remainder=False),
      "retain": ensemble.EnsembleLoader(retain_members, int(cfg.retain_batch_size),
                                        seeds=seeds, drop_remainder=False)})

  def eval_fn(state):
    out = {}
    for split, arrays in trajectory_sets.items():
      logits = ensemble.ensemble_outputs(apply_fn, state.params, arrays["x"])
      out[f"{split}_acc"] = float(_accuracy(logits, arrays["y"]).mean())
    if alignment_fn is not None:
      alignment = jax.device_get(alignment_fn(state.params, state.opt_state, probe))
      out.update({f"gu_{k}": float(np.mean(v)) for k, v in alignment.items()})
    return out

  params, final = ensemble.train_ensemble(
      workdir=path, train_config=cfg, params=original_params, tx=method.tx,
      loader=loader, seed=int(config.seed), train_step=train_step, eval_fn=eval_fn,
      progress=bool(config.get("progress", True)), desc=f"{path.parent.name} {name}")
  train_logits = ensemble.ensemble_outputs(apply_fn, params, splits["train"]["x"])
  test_logits = ensemble.ensemble_outputs(apply_fn, params, splits["test"]["x"])
  metrics_lib.write_npz(logits_path, train_logits=train_logits, test_logits=test_logits)
  metrics_lib.write_json(done, final)
  return train_logits, test_logits


# ----------------------------------------------------------------------------
# Stage 4: scores.
# ----------------------------------------------------------------------------


def klom_with_bootstrap(unlearned: np.ndarray, oracle: np.ndarray,
                        config: ml_collections.ConfigDict,
                        rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
  """Per-point KLoM, its summary percentile, and a bootstrap std over models."""
  kwargs = dict(num_bins=int(config.klom.num_bins), clip=float(config.klom.clip),
                floor=float(config.klom.floor))
  percentile = float(config.klom.percentile)
  values = dl_eval.klom(unlearned, oracle, **kwargs)
  summary = float(np.percentile(values, percentile))
  resampled = []
  for _ in range(int(config.klom.bootstrap)):
    u = unlearned[rng.integers(len(unlearned), size=len(unlearned))]
    o = oracle[rng.integers(len(oracle), size=len(oracle))]
    resampled.append(np.percentile(dl_eval.klom(u, o, **kwargs), percentile))
  std = float(np.std(resampled, ddof=1)) if len(resampled) > 1 else 0.0
  return values, summary, std


def score(config: ml_collections.ConfigDict, forget_set: str, method: str,
          train_logits: np.ndarray, test_logits: np.ndarray, splits: dict,
          forget: np.ndarray, retain: np.ndarray, oracle_margins: dict,
          rng: np.random.Generator) -> tuple[list[dict], dict, dict]:
  """Per-member records, the method's KLoM entries, and per-point KLoM values."""
  train, test = splits["train"], splits["test"]
  forget_labels = train["y"][forget]
  nonmembers = np.isin(test["y"], np.unique(forget_labels))
  train_losses = -_log_likelihoods(train_logits, train["y"])
  test_losses = -_log_likelihoods(test_logits, test["y"])
  records = []
  forget_acc = _accuracy(train_logits[:, forget], forget_labels)
  retain_acc = _accuracy(train_logits[:, retain], train["y"][retain])
  test_acc = _accuracy(test_logits, test["y"])
  for k in range(train_logits.shape[0]):
    records.append({
        "forget_set": forget_set, "method": methods_lib.LABELS[method], "seed": k,
        "forget_acc": float(forget_acc[k]), "retain_acc": float(retain_acc[k]),
        "test_acc": float(test_acc[k]),
        "mia_auc": dl_eval.mia_auc(train_losses[k, forget],
                                   test_losses[k, nonmembers])})
  train_margins = _margins(train_logits, train["y"])
  margins = {"forget": train_margins[:, forget], "retain": train_margins[:, retain],
             "val": _margins(test_logits, test["y"])}
  entries, values = {}, {}
  for split, unlearned in margins.items():
    values[split], entries[f"klom_{split}"], entries[f"klom_{split}_std"] = (
        klom_with_bootstrap(unlearned, oracle_margins[split], config, rng))
    entries[f"klom_{split}_mean"] = float(values[split].mean())
  return records, entries, values


def tradeoff_point(forget_curve: np.ndarray, retain_curve: np.ndarray,
                   target: float) -> float:
  """Retain accuracy where the trajectory first reaches ``forget_acc <= target``.

  Linear interpolation between the two evaluations around the crossing; NaN
  when the trajectory never gets there.
  """
  below = np.flatnonzero(forget_curve <= target)
  if not below.size:
    return float("nan")
  t = int(below[0])
  if t == 0:
    return float(retain_curve[0])
  f0, f1 = forget_curve[t - 1], forget_curve[t]
  weight = (f0 - target) / (f0 - f1) if f0 != f1 else 1.0
  return float(retain_curve[t - 1] + weight * (retain_curve[t] - retain_curve[t - 1]))


# ----------------------------------------------------------------------------
# The experiment.
# ----------------------------------------------------------------------------


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[dict]:
  """All stages; writes results.md/json, tradeoff.md/json and the figures."""
  workdir = pathlib.Path(workdir)
  timings: dict[str, float] = {}
  start = time.perf_counter()
  splits = {"train": data.load(config.data.name, config.data.train_split),
            "test": data.load(config.data.name, config.data.eval_split)}
  train, test = splits["train"], splits["test"]
  num_classes = data.info(config.data.name)["num_classes"]
  model_kwargs = dict(config.model)
  model = models.build(model_kwargs.pop("arch"), num_classes, **model_kwargs)

  def apply_fn(params, x):
    return model.apply({"params": params}, x)

  sets = forget_sets(config, train["y"])
  members = base_members(config, len(train["y"]), sets)

  clock = time.perf_counter()
  base = train_base(config, workdir / "runs" / "base", model, apply_fn, splits, members)
  timings["base_ensemble"] = time.perf_counter() - clock
  train_margins = _margins(base["train_logits"], train["y"])

  clock = time.perf_counter()
  dm = fit_removal_effects(config, workdir / "runs" / "datamodels", members,
                           train_margins, sets)
  timings["datamodels"] = time.perf_counter() - clock

  originals = select(members, "original")
  original_params = jax.tree.map(lambda leaf: np.asarray(leaf)[originals],
                                 base["params"])
  original_logits = base["train_logits"][originals]
  trainable = [m for m in config.methods if m not in methods_lib.UNTRAINED]
  built = {m: methods_lib.make_method(m, apply_fn, config.unlearn) for m in trainable}
  # Built once per method: both forget sets reuse the compilations.
  steps = {m: ensemble.make_ensemble_train_step(b.loss_fn, gradient_fn=b.gradient_fn)
           for m, b in built.items()}
  alignments = {m: jax.jit(functools.partial(methods_lib.gu_alignment, m, apply_fn,
                                             config=config.unlearn))
                for m in trainable if m in ("ga_gu", "npo_gu")}
  rng = np.random.default_rng(int(config.seed))
  trajectory_rng = np.random.default_rng(int(config.seed) + 1)

  records, rows_extra, tradeoffs, klom_values, panels, references = [], {}, [], {}, {}, {}
  dm_checks = {}
  for name, forget in sets.items():
    retain = np.setdiff1d(np.arange(len(train["y"])), forget)
    oracle = select(members, "oracle", name)
    oracle_om = select(members, "oracle_om", name)
    oracle_margins = {
        "forget": train_margins[oracle][:, forget],
        "retain": train_margins[oracle][:, retain],
        "val": _margins(base["test_logits"][oracle], test["y"])}
    targets = {
        "om": train_margins[oracle_om],
        "dmm": np.clip(train_margins[originals], -config.klom.clip, config.klom.clip)
               - dm["effects"][name][None, :]}
    # How well the datamodels predict the true removal effect on the forget set
    # (original minus oracle margins, averaged over models).
    actual = (np.clip(train_margins[originals], -config.klom.clip, config.klom.clip).mean(0)
              - np.clip(train_margins[oracle], -config.klom.clip, config.klom.clip).mean(0))
    predicted = dm["effects"][name]
    dm_checks[name] = {"predicted_mean": float(predicted[forget].mean()),
                       "actual_mean": float(actual[forget].mean()),
                       "correlation": float(np.corrcoef(predicted[forget],
                                                        actual[forget])[0, 1])}
    # Trajectories are evaluated on fixed subsamples (the final scores on all).
    retain_sample = np.sort(trajectory_rng.choice(
        retain, min(len(retain), int(config.unlearn.trajectory_retain_points)),
        replace=False))
    test_sample = np.sort(trajectory_rng.choice(
        len(test["y"]), min(len(test["y"]), int(config.unlearn.trajectory_test_points)),
        replace=False))
    trajectory_sets = {
        "forget": {k: v[forget] for k, v in train.items()},
        "retain": {k: v[retain_sample] for k, v in train.items()},
        "test": {k: v[test_sample] for k, v in test.items()}}
    probe_size = int(config.unlearn.forget_batch_size)
    probe = {"forget": {k: jnp.asarray(v[forget[:probe_size]]) for k, v in train.items()},
             "retain": {k: jnp.asarray(v[retain_sample[:probe_size]])
                        for k, v in train.items()},
             "ref_logp": jnp.asarray(_log_likelihoods(
                 original_logits, train["y"])[:, forget[:probe_size]])}

    oracle_forget_acc = float(_accuracy(base["train_logits"][oracle][:, forget],
                                        train["y"][forget]).mean())
    references[name] = {
        "original": (float(_accuracy(original_logits[:, forget], train["y"][forget]).mean()),
                     float(_accuracy(original_logits[:, retain_sample],
                                     train["y"][retain_sample]).mean())),
        "retrained oracle": (oracle_forget_acc, float(_accuracy(
            base["train_logits"][oracle][:, retain_sample],
            train["y"][retain_sample]).mean()))}
    panels[name] = {}
    for method in config.methods:
      clock = time.perf_counter()
      if method == "noop":
        train_logits, test_logits = original_logits, base["test_logits"][originals]
      elif method == "retrain":
        train_logits = base["train_logits"][oracle_om]
        test_logits = base["test_logits"][oracle_om]
      else:
        streams = unlearning_streams(method, train, forget, retain, original_logits,
                                     targets.get(method))
        run_path = workdir / "runs" / name / method
        train_logits, test_logits = run_method(
            config, run_path, method, built[method], steps[method],
            alignments.get(method), apply_fn,
            original_params, streams, probe, trajectory_sets, splits)
        log = [r for r in metrics_lib.read_metrics(run_path) if "forget_acc" in r]
        start_point = references[name]["original"]
        curve = {"forget_acc": np.array([start_point[0]] + [r["forget_acc"] for r in log]),
                 "retain_acc": np.array([start_point[1]] + [r["retain_acc"] for r in log])}
        panels[name][method] = curve
        entry = {"forget_set": name, "method": methods_lib.LABELS[method],
                 "oracle_forget_acc": oracle_forget_acc,
                 "final_forget_acc": float(curve["forget_acc"][-1]),
                 "final_retain_acc": float(curve["retain_acc"][-1]),
                 "retain_acc_at_oracle_forget_acc": tradeoff_point(
                     curve["forget_acc"], curve["retain_acc"], oracle_forget_acc)}
        if method in ("ga_gu", "npo_gu") and log:
          entry["gu_cos_before"] = float(np.mean([r["gu_cos_before"] for r in log]))
          entry["gu_cos_after"] = float(np.mean([r["gu_cos_after"] for r in log]))
        tradeoffs.append(entry)
      method_records, entries, values = score(
          config, name, method, train_logits, test_logits, splits, forget, retain,
          oracle_margins, rng)
      records += method_records
      rows_extra[(name, methods_lib.LABELS[method])] = entries
      klom_values[f"{name}/{method}"] = values
      timings[f"{name}/{method}"] = time.perf_counter() - clock

  rows = metrics_lib.aggregate_seeds(
      records, keys=("forget_set", "method"),
      metrics=("forget_acc", "retain_acc", "test_acc", "mia_auc"))
  for row in rows:
    row.update(rows_extra[(row["forget_set"], row["method"])])
  timings["total"] = time.perf_counter() - start
  dm = dict(dm, checks=dm_checks)
  _write_outputs(config, workdir, rows, tradeoffs, klom_values, panels, references,
                 sets, dm, base, members, timings)
  return rows


def _fmt(values: Mapping[str, float]) -> str:
  return "{" + ", ".join(f"{k}: {v:.3g}" for k, v in values.items()) + "}"


def _write_outputs(config, workdir, rows, tradeoffs, klom_values, panels, references,
                   sets, dm, base, members, timings) -> None:
  """Tables, figures and the per-point KLoM values."""
  n = int(config.num_models)
  percentile = int(config.klom.percentile)
  sizes = ", ".join(f"{name}: {len(idx)} points" for name, idx in sets.items())
  test_acc = json.loads((workdir / "runs" / "base" / "final_metrics.json").read_text())
  notes = (
      f"Dataset `{config.data.name}`, model {dict(config.model)}; forget sets {sizes}. "
      f"Accuracies and MIA AUC: mean ± std over the N = {n} unlearned models (one "
      "per original model). MIA: loss-threshold attack, forget-set losses vs held-out "
      "test losses of the forget set's classes (0.5 = indistinguishable). KLoM "
      f"(nats): KL between the margins of the {n} unlearned models and of {n} "
      f"retrained oracles, per point ({config.klom.num_bins} bins, clip "
      f"{config.klom.clip:g}, floor {config.klom.floor:g}), {percentile}th percentile "
      "over the forget / retain / validation (test) points; ± a bootstrap std over "
      f"models ({config.klom.bootstrap} resamples); `klom_*_mean`: the mean over "
      f"points. `retrain (oracle)` is {n} more "
      "oracles trained independently of the KLoM reference ones: its KLoM is the "
      f"metric's noise floor at N = {n}. Base ensemble: {len(members)} models "
      f"({config.train.num_steps} steps, batch {config.data.batch_size}); test "
      f"accuracy by role {_fmt(test_acc['test_accuracy_by_role'])}. Datamodels: "
      f"{config.datamodels.num_models} models on random "
      f"{config.datamodels.subset_fraction:.0%} subsets, ridge {dm['ridge']:g} "
      f"(held-out MSE {_fmt(dm['holdout_mse'])} vs margin variance "
      f"{dm['output_variance']:.3g}); predicted vs actual mean margin drop on the "
      "forget set (correlation over its points): " + "; ".join(
          f"{k} {v['predicted_mean']:.2f} vs {v['actual_mean']:.2f} "
          f"(r = {v['correlation']:.2f})" for k, v in dm["checks"].items()) + ". "
      f"Unlearning: {config.unlearn.num_steps} steps, forget/retain batches "
      f"{config.unlearn.forget_batch_size}/{config.unlearn.retain_batch_size}. "
      f"Wall time {timings['total']:.0f} s.")
  columns = ("forget_set", "method", "forget_acc", "retain_acc", "test_acc", "mia_auc",
             "klom_forget", "klom_retain", "klom_val", "klom_forget_mean",
             "klom_retain_mean", "klom_val_mean", "seeds")
  text = metrics_lib.write_results(
      workdir, rows, title=f"Unlearning on {config.data.name}", columns=columns,
      notes=notes)
  print(text)
  if tradeoffs:
    trade_columns = ["forget_set", "method", "oracle_forget_acc", "final_forget_acc",
                     "final_retain_acc", "retain_acc_at_oracle_forget_acc"]
    if any("gu_cos_before" in t for t in tradeoffs):
      trade_columns += ["gu_cos_before", "gu_cos_after"]
    trade_text = metrics_lib.write_results(
        workdir, tradeoffs, title=f"Forget/retain trade-off on {config.data.name}",
        columns=trade_columns, filename="tradeoff",
        nan_allowed=("retain_acc_at_oracle_forget_acc",),  # nan = never reached
        notes=("Member-mean accuracies along each trajectory (retain accuracy on "
               f"{config.unlearn.trajectory_retain_points} fixed retain points), "
               f"evaluated every {config.unlearn.eval_every} steps. "
               "`retain_acc_at_oracle_forget_acc`: retain accuracy where the "
               "trajectory first brings forget accuracy down to the oracles' "
               "(linear interpolation; nan = never). `gu_cos_before/after`: cosine, "
               "in GU's metric, between the forget and the retain gradient on a "
               "fixed probe batch, before and after GU's projection (mean over "
               "evaluations and models). Plot: tradeoff.png."))
    print(trade_text)
    plots.tradeoff(workdir / "tradeoff.png", panels, methods_lib.LABELS, references)
  for name in sets:
    shown = {methods_lib.LABELS[m]: klom_values[f"{name}/{m}"]["forget"]
             for m in HISTOGRAM_METHODS if f"{name}/{m}" in klom_values}
    plots.klom_histograms(workdir / f"klom_{name}.png", shown,
                          title=f"KLoM on the forget set {name} (N = {n})")
  metrics_lib.write_npz(workdir / "klom_values.npz",
                        **{f"{key}/{split}": v for key, splits in klom_values.items()
                           for split, v in splits.items()})
  metrics_lib.write_json(workdir / "timings.json", timings, indent=2)
