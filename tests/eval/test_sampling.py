"""pass_at_k against the binomial formula (math.comb, exact integers)."""
from math import comb

import numpy as np
import pytest

from divlab.eval import pass_at_k


def test_pass_at_k_matches_binomial_formula():
  correct = np.array([0, 1, 5, 17, 63, 64])
  n = 64
  for k in (1, 2, 8, 64):
    want = np.mean([1 - comb(n - c, k) / comb(n, k) for c in correct])
    np.testing.assert_allclose(pass_at_k(correct, n, (k,)), [want], rtol=1e-12)


def test_pass_at_1_is_the_success_rate():
  correct = np.array([3, 0, 8])
  np.testing.assert_allclose(pass_at_k(correct, 8, (1,)), [np.mean(correct / 8)])


@pytest.mark.parametrize("correct,n,ks,arg", [
    (np.array([9]), 8, (1,), "num_correct"),
    (np.array([1]), 8, (9,), "ks"),
])
def test_bad_input_names_the_argument(correct, n, ks, arg):
  with pytest.raises(ValueError, match=f"`{arg}`"):
    pass_at_k(correct, n, ks)
