"""Rollouts for policy-gradient training of a `TransformerLM`: sample groups
of completions, and score given completions under any parameters.

* `sample_groups`: ``group_size`` completions of every prompt (the GRPO
  group), with the sampling policy's token log-probabilities and mask;
* `completion_log_probs`: ``log pi(y_t | x, y_<t)`` of given completions under
  given parameters, in one forward pass over prompt + completion (the
  differentiable policy term of a loss, or a reference's constants).

Both are pure functions of their inputs; rewards (a numpy verifier, a reward
model) are the caller's.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from divlab.losses import sequence
from divlab.models.generate import Generation
from divlab.models.generate import generate

__all__ = ["sample_groups", "completion_log_probs"]


def sample_groups(model, params, prompts: jax.Array, key: jax.Array, *,
                  group_size: int, max_new_tokens: int, temperature: float = 1.0,
                  stop_token: Optional[int] = None, pad_token: int = 0
                  ) -> tuple[jax.Array, Generation]:
  """Samples ``group_size`` completions of each prompt.

  Args:
    model: a `TransformerLM`.
    params: its parameters.
    prompts: ``[P, L]`` prompt tokens (left-padded if ragged).
    key: PRNG key.
    group_size: G completions per prompt.
    max_new_tokens: the most tokens per completion.
    temperature: sampling temperature (the log-probs are the model's own).
    stop_token, pad_token: as in `divlab.models.generate`.

  Returns:
    ``(repeated_prompts [P*G, L], Generation [P*G, N])``; rows ``g*G .. g*G+G-1``
    are the group of prompt g.
  """
  if int(group_size) < 1:
    raise ValueError(f"`group_size` must be >= 1, got {group_size}.")
  repeated = jnp.repeat(jnp.asarray(prompts), int(group_size), axis=0)
  out = generate(model, params, repeated, key, max_new_tokens=max_new_tokens,
                 temperature=temperature, stop_token=stop_token, pad_token=pad_token)
  return repeated, out


def completion_log_probs(model, params, prompts: jax.Array, completions: jax.Array,
                         completion_mask: Optional[jax.Array] = None) -> jax.Array:
  """``log pi(y_t | x, y_<t)`` of each completion token, ``[B, N]``.

  The model reads ``prompt + completion[:-1]`` once (teacher forcing); the
  logits at positions ``L-1 .. L+N-2`` predict the completion. Prompts must be
  unpadded or left-padded consistently with how they were sampled (positions
  are those of the concatenation).

  Args:
    model: a `TransformerLM`.
    params: its parameters (differentiable).
    prompts: ``[B, L]`` prompt tokens.
    completions: ``[B, N]`` completion tokens.
    completion_mask: optional ``[B, N]`` bool; masked tokens get 0.

  Returns:
    ``[B, N]`` float32 token log-probabilities.
  """
  prompts, completions = jnp.asarray(prompts), jnp.asarray(completions)
  if prompts.ndim != 2 or completions.ndim != 2 or prompts.shape[0] != completions.shape[0]:
    raise ValueError(f"`prompts` {prompts.shape} and `completions` {completions.shape} "
                     "must be [B, L] and [B, N] with the same B.")
  tokens = jnp.concatenate([prompts, completions], axis=1)[:, :-1]
  logits = model.apply({"params": params}, tokens)[:, prompts.shape[1] - 1:]
  return sequence.token_log_probs(logits, completions, completion_mask)
