"""Teacher, students, table: the distillation comparison end to end.

1. The teacher (a CNN) is trained with the shared layer into
   ``<workdir>/teacher`` (or loaded by path) and its logits on the training
   set are computed once.
2. For every regime (the whole training set, a fixed random fraction of it)
   and every method, ``num_seeds`` MLP students train side by side as one
   vmapped ensemble (`divlab.train.ensemble`): one compilation per method,
   each member with its own initialisation and data order.
3. Test accuracy per student -> mean ± std per (regime, method), the gap to
   CE-only, ``results.md/json`` and ``results.png``.

Each ensemble is a resumable sub-run under ``<workdir>/runs/``; a finished one
leaves ``summary.json`` and is only read back on a re-run.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import ml_collections
import numpy as np
import tqdm

from divlab import data
from divlab import models
from divlab.losses import distillation as kd_losses
from divlab.losses import softmax_cross_entropy
from divlab.train import ensemble
from divlab.train import metrics as metrics_lib
from divlab.train import parallel
from divlab.train import trainer
from experiments.distillation import methods as methods_lib
from experiments.distillation import plots


def get_teacher(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                splits: dict, num_classes: int) -> tuple[Any, Any, str]:
  """``(model, params, where_from)``: loaded from ``teacher_path`` or trained."""
  if config.teacher_path:
    model, params = trainer.load_model(config.teacher_path)
    return model, params, str(config.teacher_path)
  spec = {"name": config.teacher.model["arch"], "num_outputs": num_classes,
          **{k: v for k, v in dict(config.teacher.model).items() if k != "arch"}}
  model = models.build(**spec)

  def loss_fn(params, batch, rng):
    del rng
    logits = model.apply({"params": params}, batch["x"])
    return softmax_cross_entropy(logits, batch["y"], reduction="mean"), {}

  params, _ = trainer.train_model(
      workdir=workdir / "teacher", config=trainer.run_config(
          batch_size=config.data.batch_size, optimizer=config.teacher.optimizer,
          num_steps=config.teacher.num_steps, progress=config.progress), model=model,
      model_spec=spec, loss_fn=loss_fn, train_arrays=splits["train"],
      eval_sets={"test": splits["test"]},
      per_example_metrics=trainer.classification_metrics(model.apply),
      seed=int(config.teacher.seed), desc="teacher")
  return model, params, str(workdir / "teacher")


def regime_subset(num_examples: int, fraction: float, seed: int) -> np.ndarray:
  """The sorted indices a regime keeps: all, or a fixed random fraction."""
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"`regimes` fractions must lie in (0, 1], got {fraction}.")
  if fraction == 1.0:
    return np.arange(num_examples)
  count = max(1, int(round(fraction * num_examples)))
  return np.sort(np.random.default_rng(seed).permutation(num_examples)[:count])


def run_dir(workdir: pathlib.Path, regime: str, method: str) -> pathlib.Path:
  return pathlib.Path(workdir) / "runs" / regime / method


def _train_students(config, method, regime_arrays, seeds, path, steps, num_classes,
                    test) -> dict:
  """Trains one (regime, method) ensemble; returns per-seed test accuracies."""
  model = steps["model"]
  params = ensemble.init_ensemble_params(model, regime_arrays["x"], seeds)
  loader = ensemble.EnsembleLoader([regime_arrays] * len(seeds),
                                   int(config.data.batch_size), seeds=seeds)
  params, _ = ensemble.train_ensemble(
      workdir=path, train_config=config.train, params=params, tx=steps["tx"],
      loader=loader, seed=int(config.seed), train_step=steps["train_step"],
      progress=bool(config.progress), desc=f"{path.parent.name} {method}")
  outputs = ensemble.ensemble_outputs(steps["apply"], params, test["x"])
  logits = methods_lib.prediction_logits(method, outputs, num_classes)
  accuracy = (np.argmax(logits, -1) == test["y"][None]).mean(axis=1)
  return {"seeds": [int(s) for s in seeds], "test_acc": [float(a) for a in accuracy]}


def _plan_marginal_error(config, teacher_logits: np.ndarray, num_classes: int) -> float:
  """Largest |row/column sum - 1| of SinKD's plan on one batch of random students."""
  batch = teacher_logits[:int(config.data.batch_size)]
  student = np.random.default_rng(0).normal(size=(len(batch), num_classes))
  plan = np.asarray(kd_losses.sinkhorn_kd_plan(
      student, batch, temperature=float(config.kd.sinkhorn_temperature),
      epsilon=float(config.kd.sinkhorn_epsilon), num_iters=int(config.kd.sinkhorn_iters)))
  return float(max(np.abs(plan.sum(0) - 1).max(), np.abs(plan.sum(1) - 1).max()))


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[dict]:
  """Runs the comparison and writes results.md / results.json / results.png."""
  workdir = pathlib.Path(workdir)
  methods = list(config.methods)
  methods_lib.check_methods(methods)
  regimes = dict(config.regimes)
  if not regimes:
    raise ValueError("`regimes` must name at least one training-set fraction.")
  if int(config.num_seeds) < 1:
    raise ValueError(f"`num_seeds` must be >= 1, got {config.num_seeds}.")
  num_classes = data.info(config.data.name)["num_classes"]
  splits = {"train": data.load(config.data.name, config.data.train_split),
            "test": data.load(config.data.name, config.data.eval_split)}
  teacher, teacher_params, teacher_from = get_teacher(config, workdir, splits,
                                                      num_classes)
  train = dict(splits["train"])
  # The teacher as a one-member ensemble: the shared chunked, cached forward.
  teacher_apply = lambda p, x: teacher.apply({"params": p}, x)
  stacked = ensemble.stack_members([teacher_params])
  train["teacher_logits"] = ensemble.ensemble_outputs(teacher_apply, stacked, train["x"])[0]
  teacher_test = ensemble.ensemble_outputs(teacher_apply, stacked, splits["test"]["x"])[0]
  teacher_acc = float((teacher_test.argmax(-1) == splits["test"]["y"]).mean())
  print(f"teacher ({teacher_from}): test accuracy {teacher_acc:.4f}")

  seeds = list(range(int(config.seed), int(config.seed) + int(config.num_seeds)))
  mesh = parallel.make_mesh()
  tx = trainer.make_optimizer(config.optimizer, int(config.train.num_steps))
  records, compiled = [], {}
  bar = tqdm.tqdm(total=len(regimes) * len(methods), desc="distillation sub-runs",
                  unit="run", dynamic_ncols=True, disable=not config.progress)
  for regime, fraction in regimes.items():
    keep = regime_subset(len(train["y"]), float(fraction), int(config.subset_seed))
    regime_arrays = {k: v[keep] for k, v in train.items()}
    for method in methods:
      if method not in compiled:  # one step per method, shared by the regimes
        compiled[method] = _compile_method(config, method, num_classes, mesh, tx)
      path = run_dir(workdir, regime, method)
      done = path / "summary.json"
      if done.exists():
        summary = json.loads(done.read_text())
      else:
        summary = _train_students(config, method, regime_arrays, seeds, path,
                                  compiled[method], num_classes, splits["test"])
        metrics_lib.write_json(done, summary)
      for seed, acc in zip(summary["seeds"], summary["test_acc"]):
        records.append({"regime": regime, "method": method, "seed": seed,
                        "train_examples": int(len(keep)), "test_acc": acc})
      bar.update(1)
  bar.close()
  rows = _rows_with_gap(records)
  marginal_error = _plan_marginal_error(config, train["teacher_logits"], num_classes)
  notes = (f"Student: MLP {tuple(config.student['hidden'])}, {config.train.num_steps} "
           f"steps of batch {config.data.batch_size}; mean ± std over "
           f"{config.num_seeds} seeds. `gap_to_ce` is the method's accuracy minus "
           f"CE-only's, per seed (same seed = same initialisation and data order), "
           f"then averaged. Teacher ({teacher.__class__.__name__}) test accuracy: "
           f"{teacher_acc:.4f}. SinKD plan: largest marginal error "
           f"{marginal_error:.1e} after {config.kd.sinkhorn_iters} rounds.")
  text = metrics_lib.write_results(
      workdir, rows, title=f"Distillation on {config.data.name}",
      columns=("regime", "method", "label", "train_examples", "test_acc", "gap_to_ce",
               "seeds"), notes=notes,
      nan_allowed=("gap_to_ce",))  # nan when the config runs no CE baseline
  metrics_lib.write_json(
      workdir / "teacher.json",
      {"test_acc": teacher_acc, "from": teacher_from,
       "sinkhorn_plan_marginal_error": marginal_error})
  plots.accuracy_bars(rows, workdir / "results.png", teacher_acc=teacher_acc)
  print(text)
  return rows


def _compile_method(config, method, num_classes, mesh, tx) -> dict:
  student_spec = dict(config.student)
  arch = student_spec.pop("arch")
  model = models.build(arch, methods_lib.num_student_outputs(method, num_classes),
                       **student_spec)
  batch_loss = methods_lib.make_batch_loss(method, config, num_classes)

  def loss_fn(params, batch, rng):
    del rng
    outputs = model.apply({"params": params}, batch["x"])
    return batch_loss(outputs, batch["teacher_logits"], batch["y"]), {}

  return {"model": model, "tx": tx,
          "apply": lambda p, x: model.apply({"params": p}, x),
          "train_step": ensemble.make_ensemble_train_step(loss_fn, mesh)}


def _rows_with_gap(records: list[dict]) -> list[dict]:
  """Per-(regime, method) rows with the paired per-seed gap to CE-only."""
  ce = {(r["regime"], r["seed"]): r["test_acc"] for r in records if r["method"] == "ce"}
  for r in records:
    base = ce.get((r["regime"], r["seed"]))
    r["gap_to_ce"] = float("nan") if base is None else r["test_acc"] - base
  rows = metrics_lib.aggregate_seeds(records, keys=("regime", "method"),
                                     metrics=("test_acc", "gap_to_ce", "train_examples"))
  for row in rows:
    row["label"] = methods_lib.LABELS[row["method"]]
    row["train_examples"] = int(row["train_examples"])
    row.pop("train_examples_std", None)
  return rows
