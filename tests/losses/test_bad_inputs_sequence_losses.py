"""Bad and edge inputs to the sequence, preference, policy and fused-linear losses.

NaN in gives NaN out in the affected row (and only there); wrong shapes and
out-of-range options give a ValueError naming the argument.
"""
import jax.numpy as jnp
import numpy as np
import pytest

from divlab.divergences import fused
from divlab.losses import policy, preference, sequence

NAN = np.nan
A = jnp.array([1.0, NAN, 0.5])
B = jnp.array([0.2, 0.1, 0.3])


def _log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


# The clean pairs 0 and 2 against float64 transcriptions: with the reference
# and rejected log-probabilities all equal to B, every margin is A - B.
_A64, _B64 = np.float64(np.asarray(A)), np.float64(np.asarray(B))
_A64[1] = 0.0  # the NaN pair is checked on its own
_JS_PSI = lambda log_u: _log_sigmoid(log_u) + np.log(2.0)  # log(2u / (1 + u))


@pytest.mark.parametrize("fn,expected", [
    (lambda: preference.dpo(A, B, B, B, beta=0.1), -_log_sigmoid(0.1 * (_A64 - _B64))),
    (lambda: preference.ipo(A, B, B, B, beta=0.1), (_A64 - _B64 - 5.0) ** 2),
    (lambda: preference.f_dpo(A, B, B, B, beta=0.1, divergence="js"),
     -_log_sigmoid(0.1 * (_JS_PSI(_A64 - _B64) - _JS_PSI(0.0)))),
    (lambda: policy.kl_estimator(A, B, kind="k3"), np.expm1(_B64 - _A64) - (_B64 - _A64)),
], ids=["dpo", "ipo", "f_dpo(js)", "kl_estimator(k3)"])
def test_a_nan_log_prob_makes_only_its_pair_nan(fn, expected):
  values = np.asarray(fn())
  assert np.isnan(values[1])
  np.testing.assert_allclose(values[[0, 2]], expected[[0, 2]], rtol=1e-5, atol=1e-7)


def test_group_advantages_nan_reward_poisons_only_its_group():
  adv = np.asarray(policy.group_advantages(jnp.array([[1.0, NAN, 0.0, 1.0],
                                                      [1.0, 0.0, 1.0, 0.0]])))
  assert np.all(np.isnan(adv[0]))
  np.testing.assert_allclose(adv[1], [np.sqrt(3) / 2, -np.sqrt(3) / 2] * 2, rtol=1e-5)


def test_token_log_probs_nan_logit_only_at_its_position():
  logits = jnp.zeros((2, 3, 5)).at[0, 1, 2].set(NAN)
  out = np.asarray(sequence.token_log_probs(logits, jnp.zeros((2, 3), int)))
  assert np.isnan(out[0, 1])
  np.testing.assert_allclose(np.delete(out.ravel(), 1), -np.log(5.0), rtol=1e-6)


def test_fused_linear_nan_hidden_state_only_in_its_token():
  hidden = jnp.ones((4, 8)).at[1, 0].set(NAN)
  weight = jnp.full((8, 6), 0.1)
  out = np.asarray(fused.fused_linear_divergence(hidden, weight, jnp.ones((4, 8)), weight,
                                                 reduction="none"))
  # Student and teacher are the same model on the other tokens: KL = 0.
  assert np.isnan(out[1])
  np.testing.assert_allclose(out[[0, 2, 3]], 0.0, atol=1e-7)


@pytest.mark.parametrize("call,name", [
    (lambda: preference.dpo(A, B[:2], B, B, beta=0.1), "rejected_logp"),
    (lambda: preference.dpo(A, B, B, B, beta=-1.0), "beta"),
    (lambda: preference.f_dpo(A, B, B, B, beta=0.1, divergence="nope"), "divergence"),
    (lambda: policy.kl_estimator(A, B, kind="k9"), "kind"),
    (lambda: fused.fused_linear_divergence(jnp.ones((4, 8)), jnp.ones((7, 6)),
                                           jnp.ones((4, 8)), jnp.ones((8, 6))),
     "student_weight"),
], ids=["dpo shapes", "dpo beta", "f_dpo divergence", "kl_estimator kind", "fused weight"])
def test_bad_arguments_raise_value_error_naming_them(call, name):
  with pytest.raises(ValueError, match=name):
    call()
