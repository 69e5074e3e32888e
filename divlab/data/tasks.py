"""Synthetic verifiable language tasks: sorting digit lists, 2-digit addition.

Small enough for a tiny causal transformer on a CPU, and *verifiable*: a
reward function scores any completion exactly, so pairs sampled from a model
can be labelled without a learned reward model (the toy analogue of the
math/code tasks of the preference- and policy-optimisation papers).

Vocabulary (no tokenizer): ids 0-9 are the digits, then ``PAD``, ``BOS``,
``EOS``, ``SEP``, ``PLUS``, ``EQUALS`` (``VOCAB_SIZE = 16``), shared by both
tasks.

* ``"sort"``: prompt ``BOS d_1 .. d_n SEP``, completion the digits in
  non-decreasing order then ``EOS`` (``n = length``, default 5; digits drawn
  uniformly with repetition).
* ``"addition"``: prompt ``BOS a_1 a_2 PLUS b_1 b_2 EQUALS`` (two-digit,
  zero-padded operands 0-99), completion the digits of ``a + b`` without
  leading zeros then ``EOS``; with ``reverse_answer`` (default) the sum is
  written least-significant digit first, the order in which carries are
  computed, which small transformers learn far more easily.

Splits are disjoint: train and test prompts are distinct draws (without
replacement) from all possible prompts, by ``np.random.default_rng(seed)``.

Rewards (`reward`): ``exact`` is 1 when the completion up to its first
``EOS`` equals the answer (and an ``EOS`` is there); ``partial`` is the
fraction of answer positions matched, ``#{i: y_i = a_i} / max(|y|, |a|)``,
so missing and surplus tokens both cost (for addition the digits are aligned
from the least significant one).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = [
    "PAD", "BOS", "EOS", "SEP", "PLUS", "EQUALS", "VOCAB_SIZE", "TOKEN_NAMES",
    "TASKS", "task_lengths", "make_task", "answers", "reward", "decode_tokens",
]

PAD, BOS, EOS, SEP, PLUS, EQUALS = 10, 11, 12, 13, 14, 15
VOCAB_SIZE = 16
TOKEN_NAMES = tuple(str(d) for d in range(10)) + ("_", "^", "$", "|", "+", "=")
TASKS = ("sort", "addition")


def _check_task(name: str) -> None:
  if name not in TASKS:
    raise ValueError(f"`name`={name!r} is not a task; choose one of {TASKS}.")


def _check_length(length: int) -> int:
  if isinstance(length, bool) or int(length) != length or not 1 <= length <= 9:
    raise ValueError(f"`length` must be an integer in [1, 9], got {length!r}.")
  return int(length)


def task_lengths(name: str, *, length: int = 5, reverse_answer: bool = True
                 ) -> tuple[int, int]:
  """``(prompt_length, completion_length)`` in tokens; the completion length
  counts the ``EOS`` (the longest answer's)."""
  del reverse_answer
  _check_task(name)
  if name == "sort":
    n = _check_length(length)
    return n + 2, n + 1
  return 7, 4


def _num_prompts(name: str, length: int) -> int:
  return 10 ** length if name == "sort" else 100 * 100


def _answer_digits(name: str, prompt_index: np.ndarray, length: int,
                   reverse_answer: bool) -> tuple[np.ndarray, list[list[int]]]:
  """Prompt digits and answer digits (as written) for prompt indices."""
  if name == "sort":
    powers = 10 ** np.arange(length - 1, -1, -1)
    digits = (prompt_index[:, None] // powers) % 10
    return digits, [sorted(row.tolist()) for row in digits]
  a, b = prompt_index // 100, prompt_index % 100
  digits = np.stack([a // 10, a % 10, b // 10, b % 10], axis=1)
  written = []
  for total in (a + b).tolist():
    text = [int(c) for c in str(total)]
    written.append(text[::-1] if reverse_answer else text)
  return digits, written


def _encode(name: str, digits: np.ndarray, written: list[list[int]],
            completion_length: int) -> dict[str, np.ndarray]:
  n = len(digits)
  if name == "sort":
    prompt = np.concatenate([np.full((n, 1), BOS), digits, np.full((n, 1), SEP)], 1)
  else:
    prompt = np.concatenate([np.full((n, 1), BOS), digits[:, :2], np.full((n, 1), PLUS),
                             digits[:, 2:], np.full((n, 1), EQUALS)], 1)
  completion = np.full((n, completion_length), PAD)
  mask = np.zeros((n, completion_length), bool)
  for i, answer in enumerate(written):
    completion[i, :len(answer)] = answer
    completion[i, len(answer)] = EOS
    mask[i, :len(answer) + 1] = True
  return {"prompt": prompt.astype(np.int32), "completion": completion.astype(np.int32),
          "completion_mask": mask}


def make_task(name: str, *, num_train: int, num_test: int, seed: int,
              length: int = 5, reverse_answer: bool = True
              ) -> dict[str, dict[str, np.ndarray]]:
  """Disjoint train/test splits of a task, drawn without replacement.

  Args:
    name: ``"sort"`` or ``"addition"``.
    num_train: training examples.
    num_test: test examples (prompts never seen in training).
    seed: seeds ``np.random.default_rng``; one draw of ``num_train +
      num_test`` distinct prompt indices, the first ``num_train`` for train.
    length: digits per list (sort only).
    reverse_answer: write sums least-significant digit first (addition only).

  Returns:
    ``{"train": arrays, "test": arrays}`` with ``prompt`` ``[n, P]`` int32,
    ``completion`` ``[n, C]`` int32 (the answer, ``EOS``, then ``PAD``) and
    ``completion_mask`` ``[n, C]`` bool (True up to and including ``EOS``).

  Example:
    >>> split = make_task("sort", num_train=2, num_test=1, seed=0, length=3)
    >>> decode_tokens(split["train"]["prompt"][0]), decode_tokens(
    ...     split["train"]["completion"][0], split["train"]["completion_mask"][0])
    ('^636|', '366$')
  """
  _check_task(name)
  length = _check_length(length)
  for value, arg in ((num_train, "num_train"), (num_test, "num_test")):
    if isinstance(value, bool) or int(value) != value or value < 1:
      raise ValueError(f"`{arg}` must be a positive integer, got {value!r}.")
  total = _num_prompts(name, length)
  if num_train + num_test > total:
    raise ValueError(f"`num_train` + `num_test` = {num_train + num_test} exceeds the "
                     f"{total} distinct prompts of {name!r}.")
  indices = np.random.default_rng(seed).choice(total, num_train + num_test, replace=False)
  completion_length = task_lengths(name, length=length)[1]
  splits = {}
  for split, part in (("train", indices[:num_train]), ("test", indices[num_train:])):
    digits, written = _answer_digits(name, part, length, reverse_answer)
    splits[split] = _encode(name, digits, written, completion_length)
  return splits


def answers(name: str, prompts: np.ndarray, *, reverse_answer: bool = True
            ) -> list[list[int]]:
  """The correct answer digits (as written, without ``EOS``) of each prompt."""
  _check_task(name)
  prompts = np.asarray(prompts)
  if name == "sort":
    return [sorted(row.tolist()) for row in prompts[:, 1:-1]]
  a = prompts[:, 1] * 10 + prompts[:, 2]
  b = prompts[:, 4] * 10 + prompts[:, 5]
  out = []
  for total in (a + b).tolist():
    text = [int(c) for c in str(total)]
    out.append(text[::-1] if reverse_answer else text)
  return out


def reward(name: str, prompts: np.ndarray, completions: np.ndarray,
           completion_mask: Optional[np.ndarray] = None, *,
           reverse_answer: bool = True) -> dict[str, np.ndarray]:
  """Exact and partial-credit rewards of completions.

  The answer read from a completion is its tokens before the first ``EOS``
  (among the ``completion_mask`` positions); a completion with no ``EOS``
  never gets the exact reward.

  Args:
    name: the task.
    prompts: ``[n, P]`` prompt tokens (as made by `make_task`).
    completions: ``[n, C]`` completion tokens (e.g. `divlab.models.generate`'s).
    completion_mask: optional ``[n, C]`` bool, the generated positions.
    reverse_answer: as in `make_task` (addition only).

  Returns:
    ``{"exact": [n], "partial": [n]}`` float64 rewards in [0, 1].

  Example:
    >>> prompts = np.array([[BOS, 3, 1, 2, SEP]] * 3)
    >>> completions = np.array([[1, 2, 3, EOS], [1, 3, 2, EOS], [1, 2, 3, 3]])
    >>> r = reward("sort", prompts, completions)
    >>> r["exact"].tolist(), np.round(r["partial"], 3).tolist()
    ([1.0, 0.0, 0.0], [1.0, 0.333, 0.75])
  """
  _check_task(name)
  prompts, completions = np.asarray(prompts), np.asarray(completions)
  if prompts.ndim != 2 or completions.ndim != 2 or len(prompts) != len(completions):
    raise ValueError(f"`prompts` {prompts.shape} and `completions` {completions.shape} "
                     "must be [n, P] and [n, C] with the same n.")
  if completion_mask is None:
    completion_mask = np.ones(completions.shape, bool)
  completion_mask = np.asarray(completion_mask, bool)
  if completion_mask.shape != completions.shape:
    raise ValueError(f"`completion_mask` must have shape {completions.shape}, got "
                     f"{completion_mask.shape}.")
  targets = answers(name, prompts, reverse_answer=reverse_answer)
  exact = np.zeros(len(prompts))
  partial = np.zeros(len(prompts))
  for i, target in enumerate(targets):
    tokens = completions[i][completion_mask[i]].tolist()
    stopped = EOS in tokens
    written = tokens[:tokens.index(EOS)] if stopped else tokens
    exact[i] = float(stopped and written == target)
    if name == "addition" and not reverse_answer:  # align least-significant digits
      written, target = written[::-1], target[::-1]
    matches = sum(int(y == a) for y, a in zip(written, target))
    partial[i] = matches / max(len(written), len(target))
  return {"exact": exact, "partial": partial}


def decode_tokens(tokens: np.ndarray, mask: Optional[np.ndarray] = None) -> str:
  """A readable string of token ids (``^`` BOS, ``$`` EOS, ``|`` SEP, ``_`` PAD).

  Example:
    >>> decode_tokens(np.array([BOS, 4, 2, PLUS, 0, 7, EQUALS]))
    '^42+07='
  """
  tokens = np.asarray(tokens)
  if mask is not None:
    tokens = tokens[np.asarray(mask, bool)]
  return "".join(TOKEN_NAMES[int(t)] for t in tokens)
