"""Policy-gradient objectives on tabular policies, every quantity exact.

  python -m divlab.run --config=configs/policy_rl/exact.py --workdir=workdirs/policy_rl_exact
  python -m divlab.run --config=configs/policy_rl/exact.py:smoke --workdir=/tmp/smoke

(a) the KL-estimator gradient table (bandit and length-3 sequence policy);
(b) DPH-RL's divergences on a contextual bandit, pass@k up to 64 at matched
train pass@1; (c) TOPR vs naive off-policy REINFORCE vs truncated IS vs SFT on
positives. See experiments/policy_rl/exact.py and the family's README.
"""
import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = "policy_rl"
  config.setting = "exact"
  config.seed = 0
  config.num_seeds = 5
  config.pass_k = (1, 2, 4, 8, 16, 32, 64)

  config.gradients = ml_collections.ConfigDict()
  config.gradients.vocab_size = 3
  config.gradients.length = 3
  config.gradients.logit_scale = 1.0

  config.bandit = ml_collections.ConfigDict()
  config.bandit.num_train = 64
  config.bandit.num_test = 256
  config.bandit.num_answers = 32
  config.bandit.num_correct = 4
  config.bandit.feature_dim = 16
  config.bandit.init_scale = 0.7
  config.bandit.init_noise = 0.5
  config.bandit.popularity = 1.0
  config.bandit.idiosyncrasy = 1.5

  config.dph = ml_collections.ConfigDict()
  config.dph.methods = ("none", "reverse_kl", "js", "forward_kl")
  # Each divergence is swept; the claims compare each one's best held-out
  # pass@64 among the coefficients that reach the matched train pass@1.
  config.dph.coefficients = ml_collections.ConfigDict(
      {name: (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
       for name in ("reverse_kl", "js", "forward_kl")})
  config.dph.matched_pass1 = 0.9

  config.off_policy = ml_collections.ConfigDict()
  config.off_policy.methods = ("naive", "truncated_is", "topr", "sft_positive")
  config.off_policy.negative_reward = -1.0

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 0.05

  # The generic keys every runner reads; every step is an exact full batch.
  config.data = ml_collections.ConfigDict()
  config.data.name = "exact"
  config.data.batch_size = 1
  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 600
  config.train.log_every = 1
  config.train.eval_every = 0
  config.train.checkpoint_every = 600
  config.train.keep_checkpoints = 1

  # A relative error below this counts as "exact" in the claims.
  config.claims = ml_collections.ConfigDict()
  config.claims.exact_relerr = 1e-6
  # A loss that fell by more than this (relative to 1 + |loss|) over the
  # second half of training is still falling.
  config.claims.settled = 0.05
  config.progress = True

  if arg == "smoke":
    config.num_seeds = 2
    config.gradients.vocab_size = 2
    config.bandit.num_train = 16
    config.bandit.num_test = 32
    config.bandit.num_answers = 16
    config.bandit.feature_dim = 8
    config.dph.coefficients = ml_collections.ConfigDict(
        {"reverse_kl": (0.03,), "js": (0.03,), "forward_kl": (0.03,)})
    config.train.num_steps = 150
    config.train.checkpoint_every = 150
  elif arg not in ("", "full"):
    raise ValueError(f"unknown config arg {arg!r}; use '', 'full' or 'smoke'.")
  return config
