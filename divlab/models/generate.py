"""Autoregressive sampling from a `TransformerLM` with a key/value cache.

`generate` runs the prompt through the model once (filling the cache), then
one token at a time inside a ``lax.while_loop``, so the whole decode is one
jitted program whose cost grows linearly with the completion length. It stops
early once every sequence has produced its stop token.

The returned log-probabilities are the *model's* (temperature 1, full
vocabulary): ``log softmax(logits)[token]``, which is what a policy-gradient
or preference loss needs as ``log pi(y_t | y_<t, x)``. Temperature and top-k
only change which token is drawn.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from divlab import _checks

__all__ = ["Generation", "generate", "sample_from_logits"]


class Generation(NamedTuple):
  """The output of `generate`.

  Attributes:
    tokens: ``[B, N]`` int32 sampled completions; after a sequence's stop
      token the entries are ``pad_token``.
    log_probs: ``[B, N]`` float32 ``log pi(token_t | prompt, tokens_<t)``
      under the model (temperature 1, full vocabulary); 0 where ``mask`` is
      False.
    mask: ``[B, N]`` bool, True for the generated tokens up to and including
      the stop token.
  """
  tokens: jax.Array
  log_probs: jax.Array
  mask: jax.Array


def sample_from_logits(logits: jax.Array, key: jax.Array, *,
                       temperature: float = 1.0, top_k: int = 0,
                       greedy: bool = False) -> jax.Array:
  """Draws one token per row of ``logits``.

  Greedy takes ``argmax``; otherwise the token is drawn from
  ``softmax(logits / temperature)`` restricted to the ``top_k`` largest
  logits (``top_k=0``: the whole vocabulary; ties at the k-th value are
  kept).

  Args:
    logits: ``[B, V]`` next-token logits.
    key: a PRNG key (one draw for the whole batch).
    temperature: positive sampling temperature.
    top_k: keep only the k most likely tokens (0 = all).
    greedy: ignore ``key`` and take the most likely token.

  Returns:
    ``[B]`` int32 token ids.
  """
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  scaled = logits.astype(jnp.float32) / temperature
  if top_k:
    kth = jax.lax.top_k(scaled, top_k)[0][..., -1:]
    scaled = jnp.where(scaled >= kth, scaled, -jnp.inf)
  return jax.random.categorical(key, scaled, axis=-1).astype(jnp.int32)


def generate(model, params, prompts: jax.Array, key: jax.Array, *,
             max_new_tokens: int,
             prompt_mask: Optional[jax.Array] = None,
             temperature: float = 1.0,
             top_k: int = 0,
             greedy: bool = False,
             stop_token: Optional[int | jax.Array] = None,
             pad_token: int = 0) -> Generation:
  """Samples completions of ``prompts`` token by token with a KV cache.

  At step t every unfinished sequence draws ``y_t ~ softmax(z_t / T)``
  (top-k restricted, or argmax when greedy) from the logits ``z_t`` of the
  model given the prompt and ``y_<t``; a sequence is finished after it emits
  its ``stop_token``. Step t uses the key ``fold_in(key, t)``, so the result
  is a pure function of the inputs and is the same under ``jit`` and
  ``vmap`` (e.g. over a stack of parameters or keys) as in a plain call.

  Args:
    model: a `TransformerLM` (static: a new model compiles anew).
    params: its parameters (``variables["params"]``).
    prompts: ``[B, P]`` int prompt tokens, **left**-padded if they differ in
      length (the last column must be a real token).
    key: PRNG key.
    max_new_tokens: N, the most tokens generated per sequence.
    prompt_mask: optional ``[B, P]`` bool, False at the left padding.
    temperature: sampling temperature (> 0; unused when greedy).
    top_k: sample among the k most likely tokens (0: all).
    greedy: take the most likely token at every step.
    stop_token: a token id, or ``[B]`` ids (one per sequence), that ends a
      sequence; None: always generate N tokens.
    pad_token: the id written after a sequence has stopped.

  Returns:
    A `Generation` of ``tokens``, ``log_probs`` and ``mask``, each ``[B, N]``.

  Example::

    out = generate(model, params, prompts, jax.random.key(0), max_new_tokens=6,
                   stop_token=EOS)
    completion_logp = (out.log_probs * out.mask).sum(-1)   # log pi(y | x)
  """
  prompts = jnp.asarray(prompts)
  if prompts.ndim != 2 or not jnp.issubdtype(prompts.dtype, jnp.integer):
    raise ValueError(f"`prompts` must be [B, P] integer ids, got {prompts.shape} "
                     f"{prompts.dtype}.")
  if int(max_new_tokens) < 1:
    raise ValueError(f"`max_new_tokens` must be >= 1, got {max_new_tokens}.")
  if int(top_k) < 0 or int(top_k) > model.vocab_size:
    raise ValueError(f"`top_k` must lie in [0, {model.vocab_size}], got {top_k}.")
  if not greedy:
    _checks.check_positive(temperature, "temperature")
  return _generate(model, params, prompts, key, max_new_tokens=int(max_new_tokens),
                   prompt_mask=prompt_mask, temperature=temperature, top_k=int(top_k),
                   greedy=bool(greedy), stop_token=stop_token, pad_token=pad_token)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "top_k",
                                             "greedy"))
def _generate(model, params, prompts, key, *, max_new_tokens, prompt_mask, temperature,
              top_k, greedy, stop_token, pad_token) -> Generation:
  """The jitted body of `generate` (arguments already checked)."""
  batch, prompt_len = prompts.shape
  num_new = int(max_new_tokens)
  variables = {"params": params}
  cache = model.init_cache(batch, prompt_len + num_new)
  logits, cache = model.apply(variables, prompts, cache, token_mask=prompt_mask,
                              method=model.decode)
  stop = None if stop_token is None else jnp.broadcast_to(
      jnp.asarray(stop_token, jnp.int32), (batch,))

  def cond(carry):
    t, _, _, _, _, _, done = carry
    return (t < num_new) & ~jnp.all(done)

  def body(carry):
    t, next_logits, cache, tokens, log_probs, mask, done = carry
    token = sample_from_logits(next_logits, jax.random.fold_in(key, t),
                               temperature=temperature, top_k=top_k, greedy=greedy)
    token_logp = jnp.take_along_axis(jax.nn.log_softmax(next_logits, axis=-1),
                                     token[:, None], axis=-1)[:, 0]
    alive = ~done
    token = jnp.where(alive, token, pad_token)
    tokens = tokens.at[:, t].set(token)
    log_probs = log_probs.at[:, t].set(jnp.where(alive, token_logp, 0.0))
    mask = mask.at[:, t].set(alive)
    if stop is not None:
      done = done | (alive & (token == stop))
    step_logits, cache = model.apply(variables, token[:, None], cache,
                                     token_mask=alive[:, None], method=model.decode)
    return t + 1, step_logits[:, -1], cache, tokens, log_probs, mask, done

  init = (jnp.zeros((), jnp.int32), logits[:, -1], cache,
          jnp.full((batch, num_new), pad_token, jnp.int32),
          jnp.zeros((batch, num_new), jnp.float32),
          jnp.zeros((batch, num_new), bool), jnp.zeros((batch,), bool))
  _, _, _, tokens, log_probs, mask, _ = jax.lax.while_loop(cond, body, init)
  return Generation(tokens=tokens, log_probs=log_probs, mask=mask)
