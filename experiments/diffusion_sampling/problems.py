"""The models samplers are run on: exact Gaussian mixtures and learned eps-networks.

A *problem* bundles what the sweep needs about one model:

* ``guided_eps(params, x, t, labels, w)``: classifier-free-guided noise
  prediction, ``eps_u + w (eps_c - eps_u)`` (w = 1 is the plain conditional
  model);
* ``params``: the network's parameters (an empty dict for exact mixtures);
* ``shape`` of one sample, ``num_classes``, ``diverged_norm`` (a sample whose
  norm exceeds it, or is not finite, counts as diverged) and
  ``reference_scale`` (the bound is raised to this multiple of the 99th
  percentile of the reference samples' norms when that is larger);
* ``images``: whether samples are 8x8 images (for the picture grid).

Exact problems use `divlab.diffusion.gmm`; learned ones train a
`divlab.models.ScoreMLP` with `divlab.losses.diffusion` through the shared
training layer (checkpointed into ``<workdir>/models/<name>``, reused).
"""
from __future__ import annotations

import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from divlab import data
from divlab import diffusion
from divlab import models
from divlab.losses import diffusion as dsm
from divlab.train import trainer

KINDS = ("gmm", "learned_gmm", "learned_digits")


def ring_mixture(dim: int, num_components: int, radius: float, scale: float,
                 seed: int) -> diffusion.GaussianMixture:
  """A labelled mixture, one class per component, means on a ring (2-D) or
  at random directions of norm ``radius`` (higher dimensions)."""
  if dim == 2:
    angles = 2 * np.pi * np.arange(num_components) / num_components
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
  else:
    directions = np.random.default_rng(seed).normal(size=(num_components, dim))
    means = radius * directions / np.linalg.norm(directions, axis=1, keepdims=True)
  return diffusion.gaussian_mixture(
      np.full(num_components, 1.0 / num_components), means,
      np.full((num_components, dim), scale ** 2), labels=np.arange(num_components))


def _mixture_from(spec: ml_collections.ConfigDict) -> diffusion.GaussianMixture:
  return ring_mixture(int(spec.dim), int(spec.num_components), float(spec.radius),
                      float(spec.scale), int(spec.get("seed", 0)))


def build(name: str, spec: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
          workdir: pathlib.Path) -> dict[str, Any]:
  """The problem ``name`` described by ``spec`` (one entry of ``config.models``)."""
  kind = spec.kind
  schedule = diffusion.linear_schedule()
  if kind == "gmm":
    mixture = _mixture_from(spec)

    def guided_eps(params, x, t, labels, w):
      del params
      return diffusion.guided_eps(mixture, x, schedule.alpha(t), schedule.sigma(t),
                                  labels, w)

    return {"name": name, "guided_eps": guided_eps, "params": {},
            "shape": (int(spec.dim),), "num_classes": int(spec.num_components),
            "diverged_norm": float(spec.diverged_norm),
            "reference_scale": float(spec.get("reference_scale", 0.0)), "images": False}
  if kind == "learned_gmm":
    mixture = _mixture_from(spec)
    keys = jax.random.split(jax.random.key(int(spec.get("seed", 0)) + 7), 2)
    labels = np.arange(int(spec.train_examples)) % int(spec.num_components)
    x = np.asarray(diffusion.sample_mixture(mixture, keys[0], int(spec.train_examples),
                                            jnp.asarray(labels)))
    arrays = {"x": x.astype(np.float32), "y": labels.astype(np.int32)}
    return _learned(name, spec, config, workdir, arrays, schedule, images=False)
  if kind == "learned_digits":
    train = data.load("divlab_digits", "train")
    # Pixels in [0, 1] -> [-1, 1], flattened: the usual diffusion data range.
    arrays = {"x": (2.0 * train["x"].reshape(len(train["y"]), -1) - 1.0).astype(np.float32),
              "y": train["y"].astype(np.int32)}
    return _learned(name, spec, config, workdir, arrays, schedule, images=True)
  raise ValueError(f"`models.{name}.kind`={kind!r}: use one of {KINDS}.")


def _learned(name, spec, config, workdir, arrays, schedule, *, images) -> dict[str, Any]:
  """Trains (or resumes / reuses) a ScoreMLP on ``arrays`` with DSM."""
  dim = arrays["x"].shape[1]
  num_classes = int(arrays["y"].max()) + 1
  model_spec = {"name": "score_mlp", "num_outputs": dim,
                "hidden": tuple(spec.hidden), "num_classes": num_classes,
                "embed_dim": int(spec.embed_dim)}
  model = models.build(**model_spec)
  null = num_classes
  p_uncond = float(spec.p_uncond)

  def eps_fn(params):
    return lambda x, t, y: model.apply({"params": params}, x, t, y)

  def loss_fn(params, batch, rng):
    loss = dsm.denoising_score_matching(eps_fn(params), batch["x"], rng, schedule,
                                        labels=batch["y"], null_label=null,
                                        p_uncond=p_uncond)
    return loss, {}

  def per_example(params, batch):
    # A fixed key: the held-out DSM error is comparable across evaluations.
    errors = dsm.denoising_score_matching(
        eps_fn(params), batch["x"], jax.random.key(0), schedule, labels=batch["y"],
        null_label=null, p_uncond=0.0, reduction="none")
    return {"dsm": errors}

  seed = int(config.seed)
  params0 = model.init(jax.random.key(seed), jnp.asarray(arrays["x"][:1]),
                       jnp.ones((1,)), jnp.zeros((1,), jnp.int32))["params"]
  run_config = trainer.run_config(batch_size=int(spec.batch_size),
                                  optimizer=spec.optimizer, num_steps=int(spec.num_steps),
                                  progress=bool(config.progress))
  # A fixed slice of the training data, to follow the DSM error as it trains.
  probe = {k: v[:512] for k, v in arrays.items()}
  params, final = trainer.train_model(
      workdir=pathlib.Path(workdir) / "models" / name, config=run_config, model=model,
      model_spec=model_spec, loss_fn=loss_fn, train_arrays=arrays,
      eval_sets={"train": probe}, per_example_metrics=per_example, seed=seed,
      params=params0, desc=f"score model {name}")

  def guided_eps(params, x, t, labels, w):
    t = jnp.broadcast_to(t, (x.shape[0],))
    flat = x.reshape(x.shape[0], -1)
    eps_u = model.apply({"params": params}, flat, t, jnp.full_like(labels, null))
    eps_c = model.apply({"params": params}, flat, t, labels)
    return diffusion.classifier_free_guidance(eps_u, eps_c, w).reshape(x.shape)

  data_norm = float(np.linalg.norm(arrays["x"], axis=1).max())
  return {"name": name, "guided_eps": guided_eps, "params": params,
          "shape": (dim,), "num_classes": num_classes,
          "diverged_norm": float(spec.get("diverged_norm", 0.0)) or 2.0 * data_norm,
          "reference_scale": float(spec.get("reference_scale", 2.0)),
          "images": images, "train_dsm": float(final.get("train_dsm", float("nan")))}
