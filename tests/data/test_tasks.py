"""Synthetic verifiable tasks: formats, disjoint seeded splits, rewards."""
import doctest

import numpy as np
import pytest

from divlab import data
from divlab.data import tasks


def _read(prompt, completion, mask):
  """Digits of a prompt and the written answer, decoded independently."""
  answer = [int(t) for t, m in zip(completion, mask) if m and t < 10]
  return [int(t) for t in prompt if t < 10], answer


def test_sort_examples_are_sorted_digit_lists():
  split = tasks.make_task("sort", num_train=50, num_test=20, seed=3, length=4)
  train = split["train"]
  assert train["prompt"].shape == (50, 6) and train["completion"].shape == (50, 5)
  assert (train["prompt"][:, 0] == tasks.BOS).all() and (train["prompt"][:, -1] == tasks.SEP).all()
  assert train["completion_mask"].all()  # every sort answer has the full length
  assert (train["completion"][:, -1] == tasks.EOS).all()
  for p, c, m in zip(train["prompt"], train["completion"], train["completion_mask"]):
    digits, answer = _read(p, c, m)
    assert answer == sorted(digits)


@pytest.mark.parametrize("reverse", [True, False])
def test_addition_examples_hold_the_sum(reverse):
  split = tasks.make_task("addition", num_train=200, num_test=10, seed=0,
                          reverse_answer=reverse)
  train = split["train"]
  assert train["prompt"].shape == (200, 7) and train["completion"].shape == (200, 4)
  lengths = train["completion_mask"].sum(1)
  assert set(lengths.tolist()) <= {2, 3, 4} and len(set(lengths.tolist())) > 1
  for p, c, m in zip(train["prompt"], train["completion"], train["completion_mask"]):
    digits, answer = _read(p, c, m)
    a, b = 10 * digits[0] + digits[1], 10 * digits[2] + digits[3]
    written = answer[::-1] if reverse else answer
    assert int("".join(map(str, written))) == a + b
    assert c[m.sum() - 1] == tasks.EOS and (c[m.sum():] == tasks.PAD).all()


def test_splits_are_disjoint_seeded_and_reproducible():
  a = tasks.make_task("sort", num_train=300, num_test=100, seed=1, length=3)
  b = tasks.make_task("sort", num_train=300, num_test=100, seed=1, length=3)
  c = tasks.make_task("sort", num_train=300, num_test=100, seed=2, length=3)
  np.testing.assert_array_equal(a["train"]["prompt"], b["train"]["prompt"])
  assert not np.array_equal(a["train"]["prompt"], c["train"]["prompt"])
  train = {tuple(r) for r in a["train"]["prompt"]}
  test = {tuple(r) for r in a["test"]["prompt"]}
  assert len(train) == 300 and len(test) == 100 and not train & test


def test_rewards_of_correct_and_corrupted_completions():
  split = tasks.make_task("sort", num_train=40, num_test=1, seed=5, length=5)["train"]
  correct = tasks.reward("sort", split["prompt"], split["completion"],
                         split["completion_mask"])
  np.testing.assert_array_equal(correct["exact"], 1.0)
  np.testing.assert_array_equal(correct["partial"], 1.0)
  # Hand-checked cases: prompt 3 1 2 -> answer 1 2 3.
  prompts = np.array([[tasks.BOS, 3, 1, 2, tasks.SEP]] * 5)
  E, P = tasks.EOS, tasks.PAD
  completions = np.array([[1, 2, 3, E], [1, 2, E, P], [1, 2, 3, 3], [2, 1, 3, E],
                          [E, 1, 2, 3]])
  r = tasks.reward("sort", prompts, completions)
  np.testing.assert_array_equal(r["exact"], [1, 0, 0, 0, 0])
  np.testing.assert_allclose(r["partial"], [1, 2 / 3, 3 / 4, 1 / 3, 0])
  # Masked positions are not read: an EOS outside the mask does not count.
  mask = np.array([[True, True, True, False]])
  r = tasks.reward("sort", prompts[:1], np.array([[1, 2, 3, E]]), mask)
  assert r["exact"][0] == 0 and r["partial"][0] == 1


def test_addition_partial_credit_aligns_least_significant_digits():
  prompt = np.array([[tasks.BOS, 4, 7, tasks.PLUS, 5, 8, tasks.EQUALS]])  # 47+58=105
  E = tasks.EOS
  forward = tasks.reward("addition", prompt, np.array([[1, 0, 5, E]]), reverse_answer=False)
  assert forward["exact"][0] == 1
  # "95" vs "105": aligned from the right, 5 matches, 9 != 0 -> 1/3.
  wrong = tasks.reward("addition", prompt, np.array([[9, 5, E, E]]), reverse_answer=False)
  np.testing.assert_allclose(wrong["partial"], [1 / 3])
  reverse = tasks.reward("addition", prompt, np.array([[5, 0, 1, E]]))
  assert reverse["exact"][0] == 1


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="name"):
    tasks.make_task("parity", num_train=1, num_test=1, seed=0)
  with pytest.raises(ValueError, match="num_train"):
    tasks.make_task("sort", num_train=0, num_test=1, seed=0)
  with pytest.raises(ValueError, match="num_train"):
    tasks.make_task("sort", num_train=900, num_test=200, seed=0, length=3)
  with pytest.raises(ValueError, match="length"):
    tasks.make_task("sort", num_train=1, num_test=1, seed=0, length=12)
  with pytest.raises(ValueError, match="completion_mask"):
    tasks.reward("sort", np.zeros((2, 5), int), np.zeros((2, 4), int), np.ones((2, 3), bool))


def test_exported_from_data_and_docstring_examples_run():
  assert data.tasks is tasks and tasks.VOCAB_SIZE == len(tasks.TOKEN_NAMES)
  result = doctest.testmod(tasks, extraglobs={"np": np})
  assert result.failed == 0 and result.attempted > 0
