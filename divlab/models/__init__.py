"""Small flax (linen) models shared by the experiments, and LM sampling.

linen is used throughout divlab: its ``init``/``apply`` keep parameters as
plain pytrees passed explicitly to pure functions, which is the style of the
whole codebase (pure losses, one jitted step over a ``TrainState``).

``build(name, **kwargs)`` creates a model from a config; ``MODELS`` lists the
names.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from divlab.models.generate import Generation
from divlab.models.generate import generate
from divlab.models.generate import sample_from_logits
from divlab.models import rollout
from divlab.models.rollout import completion_log_probs
from divlab.models.rollout import sample_groups
from divlab.models.score import ScoreMLP
from divlab.models.transformer import KVCache
from divlab.models.transformer import TransformerLM

__all__ = ["MLP", "CNN1D", "CNN2D", "BottleneckMLP", "ScoreMLP", "TransformerLM",
           "KVCache", "Generation", "generate", "sample_from_logits", "rollout",
           "sample_groups", "completion_log_probs", "MODELS",
           "build"]


class MLP(nn.Module):
  """Multi-layer perceptron on flattened inputs.

  Attributes:
    num_outputs: size of the last layer (classes, or regression targets).
    hidden: widths of the hidden layers.
  """
  num_outputs: int
  hidden: Sequence[int] = (100, 100)
  activation: Callable[[jax.Array], jax.Array] = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               return_features: bool = False):
    del train
    h = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      h = self.activation(nn.Dense(width)(h))
    out = nn.Dense(self.num_outputs)(h)
    return (out, h) if return_features else out


class CNN1D(nn.Module):
  """A small 1-D convnet for sequences ``[B, L, C]`` (e.g. MNIST-1D).

  Three 'SAME' convolutions (the last two strided), then a linear read-out,
  in the spirit of the MNIST-1D paper's CNN baseline (~94% there).
  """
  num_outputs: int
  channels: Sequence[int] = (32, 32, 32)
  kernel_size: int = 5

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               return_features: bool = False):
    del train
    h = x if x.ndim == 3 else x[..., None]
    for i, c in enumerate(self.channels):
      h = nn.relu(nn.Conv(c, (self.kernel_size,), strides=(1 if i == 0 else 2,))(h))
    h = h.reshape(h.shape[0], -1)
    out = nn.Dense(self.num_outputs)(h)
    return (out, h) if return_features else out


class CNN2D(nn.Module):
  """A small 2-D convnet for images ``[B, H, W, C]`` (e.g. 8x8 digits)."""
  num_outputs: int
  channels: Sequence[int] = (32, 64)
  hidden: int = 128

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               return_features: bool = False):
    del train
    h = x if x.ndim == 4 else x[..., None]
    for c in self.channels:
      h = nn.relu(nn.Conv(c, (3, 3))(h))
      h = nn.max_pool(h, (2, 2), strides=(2, 2), padding="SAME")
    h = nn.relu(nn.Dense(self.hidden)(h.reshape(h.shape[0], -1)))
    out = nn.Dense(self.num_outputs)(h)
    return (out, h) if return_features else out


class BottleneckMLP(nn.Module):
  """Encoder -> bottleneck t -> decoder MLP, for information-bottleneck losses.

  ``encode(x)`` returns ``(mean, log_variance)`` of the bottleneck: a linear
  read-out of the encoder's last hidden layer, and, when ``stochastic`` (the
  VIB encoder), a second linear head for the log-variance (None otherwise).
  ``decode(t)`` maps a bottleneck sample to the outputs. Calling the module
  decodes the mean (the deterministic prediction used for evaluation); with
  ``return_features=True`` it returns ``(outputs, mean)``.

  Attributes:
    num_outputs: size of the output (regression targets).
    encoder_hidden: widths of the encoder's hidden layers.
    bottleneck_dim: dimension of t.
    decoder_hidden: widths of the decoder's hidden layers.
    stochastic: add the log-variance head (a Gaussian encoder).
  """
  num_outputs: int
  encoder_hidden: Sequence[int] = (64, 64)
  bottleneck_dim: int = 32
  decoder_hidden: Sequence[int] = (64,)
  stochastic: bool = False
  activation: Callable[[jax.Array], jax.Array] = nn.relu

  def setup(self):
    self.encoder_layers = [nn.Dense(w) for w in self.encoder_hidden]
    self.mean_head = nn.Dense(self.bottleneck_dim)
    if self.stochastic:
      self.log_variance_head = nn.Dense(self.bottleneck_dim)
    self.decoder_layers = [nn.Dense(w) for w in self.decoder_hidden]
    self.readout = nn.Dense(self.num_outputs)

  def encode(self, x: jax.Array):
    h = x.reshape(x.shape[0], -1)
    for layer in self.encoder_layers:
      h = self.activation(layer(h))
    log_variance = self.log_variance_head(h) if self.stochastic else None
    return self.mean_head(h), log_variance

  def decode(self, t: jax.Array) -> jax.Array:
    h = t
    for layer in self.decoder_layers:
      h = self.activation(layer(h))
    return self.readout(h)

  def __call__(self, x: jax.Array, *, train: bool = False,
               return_features: bool = False):
    del train
    mean, _ = self.encode(x)  # runs every head, so init creates them all
    out = self.decode(mean)
    return (out, mean) if return_features else out


def _transformer_lm(num_outputs: int, **kwargs: Any) -> TransformerLM:
  """`build`'s ``num_outputs`` is a language model's vocabulary size."""
  return TransformerLM(vocab_size=num_outputs, **kwargs)


MODELS = {"mlp": MLP, "cnn1d": CNN1D, "cnn2d": CNN2D,
          "bottleneck_mlp": BottleneckMLP, "score_mlp": ScoreMLP,
          "transformer_lm": _transformer_lm}


def build(name: str, num_outputs: int, **kwargs: Any) -> nn.Module:
  """Creates the model ``name`` (one of ``MODELS``) with ``num_outputs``.

  The same ``{"name", "num_outputs", **kwargs}`` dict is what
  ``divlab.train.train_model`` saves as ``model.json`` (its ``model_spec``),
  so ``load_model`` can rebuild the model from a run directory.

  Args:
    name: a key of ``MODELS`` ("mlp", "cnn1d", "cnn2d", "bottleneck_mlp",
      "score_mlp", "transformer_lm").
    num_outputs: the size of the output layer (classes, or the vocabulary).
    **kwargs: the model's own fields (e.g. ``hidden=(64, 64)`` for "mlp");
      lists become tuples, as JSON stores them.

  Returns:
    An unbound linen module.

  Example:
    >>> build("mlp", 3, hidden=[16]).hidden
    (16,)
  """
  if name not in MODELS:
    raise ValueError(f"`model.name`={name!r} is unknown; choose one of {sorted(MODELS)}.")
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  return MODELS[name](num_outputs=num_outputs, **kwargs)
