"""KLoM of datamodel matching (DMM) against the number of subset models.

The classification experiment fits its datamodels on 128 subset models, where
the DMM paper uses 1,000-20,000, and DMM falls short of the oracles there.
This runner asks how the gap closes with more subset models:

1. ``runs/base``: one vmapped ensemble with the N original models, N + N
   oracles per forget set (KLoM's reference and an independent set, the noise
   floor) and ``max(datamodels.sizes)`` subset models on random 50% subsets
   (`experiment.base_members`, `experiment.train_base`).
2. For every size M: ridge datamodels on the first M subset models
   (``runs/datamodels_M<M>``, penalty picked on held-out subset models), and
   per forget set DMM unlearning of the N originals toward the predicted
   oracle margins (``runs/<forget set>/dmm_M<M>``).
3. Scores: KLoM (95th percentile and mean over points) of the DMM-unlearned
   models against the oracles on forget, retain and validation points; the
   KLoM of the datamodel targets themselves on the forget points (what a
   perfect fit to the targets would reach); the datamodels' held-out error
   and the predicted vs actual mean margin drop on the forget set. The
   original models (no-op) and the independent oracles give the two
   reference levels.

Outputs: ``results.md/json`` (one row per forget set and M, plus the two
references), ``dmm_scaling.png``.
"""
from __future__ import annotations

import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from divlab import data
from divlab import eval as dl_eval
from divlab import models
from divlab.train import ensemble
from divlab.train import metrics as metrics_lib
from experiments.unlearning import experiment as base_lib
from experiments.unlearning import methods as methods_lib
from experiments.unlearning import plots


def check_sizes(sizes, minimum: int = 2) -> list[int]:
  """The sorted distinct subset-model counts; each must be >= ``minimum``."""
  sizes = sorted({int(s) for s in sizes})
  if not sizes or sizes[0] < minimum:
    raise ValueError(f"`datamodels.sizes` must hold counts >= {minimum}, got {sizes}.")
  return sizes


def _klom_summary(unlearned: np.ndarray, oracle: np.ndarray,
                  config: ml_collections.ConfigDict) -> tuple[float, float]:
  values = dl_eval.klom(unlearned, oracle, num_bins=int(config.klom.num_bins),
                        clip=float(config.klom.clip), floor=float(config.klom.floor))
  return float(np.percentile(values, float(config.klom.percentile))), float(values.mean())


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[dict]:
  """Trains the base ensemble once, then DMM at every size; writes the table."""
  workdir = pathlib.Path(workdir)
  sizes = check_sizes(config.datamodels.sizes)
  start = time.perf_counter()
  splits = {"train": data.load(config.data.name, config.data.train_split),
            "test": data.load(config.data.name, config.data.eval_split)}
  train, test = splits["train"], splits["test"]
  num_classes = data.info(config.data.name)["num_classes"]
  model_kwargs = dict(config.model)
  model = models.build(model_kwargs.pop("arch"), num_classes, **model_kwargs)

  def apply_fn(params, x):
    return model.apply({"params": params}, x)

  sets = base_lib.forget_sets(config, train["y"])
  sized = ml_collections.ConfigDict(config.to_dict())
  sized.datamodels.num_models = sizes[-1]
  members = base_lib.base_members(sized, len(train["y"]), sets)
  first_subset = int(base_lib.select(members, "subset")[0])
  base = base_lib.train_base(config, workdir / "runs" / "base", model, apply_fn,
                             splits, members)
  base_seconds = time.perf_counter() - start
  clip = float(config.klom.clip)
  train_margins = base_lib._margins(base["train_logits"], train["y"])  # pylint: disable=protected-access
  test_margins = base_lib._margins(base["test_logits"], test["y"])  # pylint: disable=protected-access
  originals = base_lib.select(members, "original")
  original_params = jax.tree.map(lambda leaf: np.asarray(leaf)[originals],
                                 base["params"])
  original_logits = base["train_logits"][originals]
  dmm = methods_lib.make_method("dmm", apply_fn, config.unlearn)
  step = ensemble.make_ensemble_train_step(dmm.loss_fn)

  rows, curves = [], {}
  for name, forget in sets.items():
    retain = np.setdiff1d(np.arange(len(train["y"])), forget)
    oracle = base_lib.select(members, "oracle", name)
    oracle_margins = {"forget": train_margins[oracle][:, forget],
                      "retain": train_margins[oracle][:, retain],
                      "val": test_margins[oracle]}
    references = {
        "original (no-op)": (train_margins[originals], test_margins[originals]),
        "retrain (oracle)": (train_margins[base_lib.select(members, "oracle_om", name)],
                             test_margins[base_lib.select(members, "oracle_om", name)])}
    for label, (train_m, test_m) in references.items():
      row = {"forget_set": name, "method": label, "num_subset_models": 0}
      for split, margins in (("forget", train_m[:, forget]),
                             ("retain", train_m[:, retain]), ("val", test_m)):
        row[f"klom_{split}"], row[f"klom_{split}_mean"] = _klom_summary(
            margins, oracle_margins[split], config)
      rows.append(row)
    trajectory_sets = {
        "forget": {k: v[forget] for k, v in train.items()},
        "retain": {k: v[retain[:int(config.unlearn.trajectory_retain_points)]]
                   for k, v in train.items()},
        "test": {k: v[:int(config.unlearn.trajectory_test_points)]
                 for k, v in test.items()}}
    probe = {"forget": {k: jnp.asarray(v[forget[:2]]) for k, v in train.items()},
             "retain": {k: jnp.asarray(v[retain[:2]]) for k, v in train.items()},
             "ref_logp": jnp.zeros((len(originals), 2))}
    actual = (np.clip(train_margins[originals], -clip, clip).mean(0)
              - np.clip(train_margins[oracle], -clip, clip).mean(0))
    curves[name] = {"sizes": [], "klom_forget": [], "klom_target_forget": []}
    for size in sizes:
      kept = members[:first_subset + size]
      dm = base_lib.fit_removal_effects(
          config, workdir / "runs" / f"datamodels_M{size}", kept,
          train_margins[:len(kept)], sets)
      predicted = dm["effects"][name]
      targets = np.clip(train_margins[originals], -clip, clip) - predicted[None, :]
      streams = base_lib.unlearning_streams("dmm", train, forget, retain,
                                            original_logits, targets)
      train_logits, test_logits = base_lib.run_method(
          config, workdir / "runs" / name / f"dmm_M{size}", "dmm", dmm, step, None,
          apply_fn, original_params, streams, probe, trajectory_sets, splits)
      unlearned_train = base_lib._margins(train_logits, train["y"])  # pylint: disable=protected-access
      row = {"forget_set": name, "method": "DMM (datamodel matching)",
             "num_subset_models": size, "ridge": dm["ridge"],
             "heldout_mse": min(dm["holdout_mse"].values()),
             "margin_variance": dm["output_variance"],
             "predicted_drop": float(predicted[forget].mean()),
             "actual_drop": float(actual[forget].mean()),
             "drop_correlation": float(np.corrcoef(predicted[forget],
                                                   actual[forget])[0, 1])}
      for split, margins in (("forget", unlearned_train[:, forget]),
                             ("retain", unlearned_train[:, retain]),
                             ("val", base_lib._margins(test_logits, test["y"]))):  # pylint: disable=protected-access
        row[f"klom_{split}"], row[f"klom_{split}_mean"] = _klom_summary(
            margins, oracle_margins[split], config)
      row["klom_target_forget"], row["klom_target_forget_mean"] = _klom_summary(
          targets[:, forget], oracle_margins["forget"], config)
      rows.append(row)
      curves[name]["sizes"].append(size)
      curves[name]["klom_forget"].append(row["klom_forget"])
      curves[name]["klom_target_forget"].append(row["klom_target_forget"])
    curves[name]["references"] = {
        r["method"]: r["klom_forget"] for r in rows
        if r["forget_set"] == name and r["num_subset_models"] == 0}
  total = time.perf_counter() - start
  notes = (
      f"Dataset `{config.data.name}`, model {dict(config.model)}, N = "
      f"{config.num_models} unlearned models against N oracles. KLoM (nats): "
      f"{config.klom.percentile}th percentile over points (`klom_*_mean`: the mean). "
      "`klom_target_forget`: KLoM of the DMM targets themselves (the datamodels' "
      "predicted oracle margins) on the forget points. `heldout_mse` vs "
      "`margin_variance`: the datamodels' held-out error at the chosen ridge against "
      "the variance of the margins they predict (equal = no signal). "
      "`predicted_drop` / `actual_drop`: mean margin change on the forget set, "
      "datamodels vs original-minus-oracle. Base ensemble of "
      f"{len(members)} models: {base_seconds:.0f} s; total {total:.0f} s.")
  columns = ("forget_set", "method", "num_subset_models", "klom_forget",
             "klom_target_forget", "klom_retain", "klom_val", "klom_forget_mean",
             "heldout_mse", "margin_variance", "predicted_drop", "actual_drop",
             "drop_correlation")
  text = metrics_lib.write_results(
      workdir, rows, title=f"DMM against the number of subset models on {config.data.name}",
      columns=columns, notes=notes)
  print(text, flush=True)
  plots.klom_scaling(workdir / "dmm_scaling.png", curves,
                     title=f"DMM on {config.data.name} (N = {config.num_models})")
  metrics_lib.write_json(workdir / "timings.json",
                         {"base_ensemble": base_seconds, "total": total}, indent=2)
  return rows
