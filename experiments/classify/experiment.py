"""Cross-entropy training of the configured models, over seeds."""
from __future__ import annotations

import json
import pathlib

import ml_collections

from divlab import data
from divlab import models
from divlab.losses import softmax_cross_entropy
from divlab.train import figures
from divlab.train import metrics as metrics_lib
from divlab.train import trainer


def run_dir(workdir: str | pathlib.Path, model_name: str, seed: int) -> pathlib.Path:
  """Where the (model, seed) sub-run lives; pass it to ``trainer.load_model``."""
  return pathlib.Path(workdir) / "runs" / f"{model_name}_seed{seed}"


def train_classifier(config: ml_collections.ConfigDict, model_name: str, seed: int,
                     run_path: pathlib.Path, splits: dict) -> dict:
  """Trains one classifier with cross-entropy; returns its final metrics."""
  info = data.info(config.data.name)
  model_kwargs = dict(config.models[model_name])
  arch = model_kwargs.pop("arch", model_name)
  spec = {"name": arch, "num_outputs": info["num_classes"], **model_kwargs}
  model = models.build(**spec)

  def loss_fn(params, batch, rng):
    del rng
    logits = model.apply({"params": params}, batch["x"])
    loss = softmax_cross_entropy(logits, batch["y"], reduction="mean")
    return loss, {}

  _, final = trainer.train_model(
      workdir=run_path, config=config, model=model, model_spec=spec, loss_fn=loss_fn,
      train_arrays=splits["train"], eval_sets={"test": splits["test"]},
      per_example_metrics=trainer.classification_metrics(model.apply), seed=seed,
      desc=f"{model_name} seed {seed}")
  return final


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[dict]:
  """Trains every model for every seed and writes the results table."""
  workdir = pathlib.Path(workdir)
  # data.loader picks how the training split is read (in memory or streamed).
  train = data.open_split(
      config.data.name, config.data.train_split, loader=config.data.get("loader", "auto"),
      memory_budget_bytes=int(config.data.get("memory_budget_mb", 1024)) << 20)
  splits = {"train": train,
            "test": data.load(config.data.name, config.data.eval_split)}
  records, histories = [], {}
  for model_name in config.models:
    for seed in range(config.seed, config.seed + config.num_seeds):
      path = run_dir(workdir, model_name, seed)
      done = path / "final_metrics.json"
      if done.exists():  # finished earlier: a re-run only rebuilds the table
        final = json.loads(done.read_text())
      else:
        final = train_classifier(config, model_name, seed, path, splits)
        metrics_lib.write_json(done, final)  # process 0 only
      records.append({"model": model_name, "seed": seed,
                      "test_acc": final["test_accuracy"],
                      "test_loss": final["test_loss"]})
      histories.setdefault(model_name, []).append(metrics_lib.read_metrics(path))
  rows = metrics_lib.aggregate_seeds(records, keys=("model",),
                                     metrics=("test_acc", "test_loss"))
  text = metrics_lib.write_results(
      workdir, rows, title=f"Classification on {config.data.name}",
      columns=("model", "test_acc", "test_loss", "seeds"))
  print(text)
  figures.learning_curves(workdir / "training_curves.png", histories,
                          ("train_loss", "test_loss", "test_accuracy"))
  return rows
