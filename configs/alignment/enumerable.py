"""Preference optimisation on an enumerable autoregressive policy (exact).

  python -m divlab.run --config=configs/alignment/enumerable.py \
      --workdir=workdirs/alignment_enumerable
  python -m divlab.run --config=configs/alignment/enumerable.py:smoke --workdir=/tmp/smoke

Every completion of length 3 over 4 tokens (64), a tabular autoregressive
policy and reference, Bradley-Terry preferences from a known reward on pairs
drawn from the reference; each loss is trained on its exact expectation over
the pair distribution by full-batch Adam, 5 seeds (independent problems) at
once. See experiments/alignment/enumerable.py and the family's README.
"""
import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = "alignment"
  config.setting = "enumerable"
  config.seed = 0
  config.num_seeds = 5

  config.task = ml_collections.ConfigDict()
  config.task.vocab_size = 4
  config.task.length = 3
  config.task.reference_scale = 1.0   # reference logits ~ N(0, scale^2)
  config.task.reward_scale = 1.0      # r(y) ~ N(0, scale^2) per completion

  # The generic keys every runner reads; the "data" are the exact pair
  # distribution, every step is full-batch.
  config.data = ml_collections.ConfigDict()
  config.data.name = "enumerable_pairs"
  config.data.batch_size = config.task.vocab_size ** (2 * config.task.length)

  config.methods = ("dpo", "cdpo", "robust_dpo", "ipo", "f_dpo_reverse_kl",
                    "f_dpo_js", "f_dpo_alpha", "f_dpo_forward_kl", "tdpo1", "tdpo2",
                    "sparse_po", "simpo", "orpo", "kto", "mapo", "npo")
  # beta of every reference-based loss (DPO family, IPO, f-DPO, TDPO,
  # SparsePO, KTO, NPO); larger than the papers' 0.1 so that the optimum
  # pi_ref exp(r / beta) stays within a few nats of the reference.
  config.beta = 0.5
  config.hparams = ml_collections.ConfigDict({
      "cdpo": {"label_smoothing": 0.2},
      "robust_dpo": {"epsilon": 0.1},
      "f_dpo_alpha": {"alpha": 0.5},
      "tdpo2": {"alpha": 0.5},
      "sparse_po": {"l1": 1e-3, "mask_init": 0.0},
      "simpo": {"beta": 2.0, "gamma_beta_ratio": 0.25},
      "orpo": {"odds_ratio_weight": 0.1},
      "mapo": {"beta": 0.1, "snr": 0.5, "num_train_timesteps": 1000},
  })

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 0.1

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 3000
  config.train.log_every = 150
  config.train.eval_every = 150
  config.train.checkpoint_every = 3000  # a run takes seconds: nothing to resume
  config.train.keep_checkpoints = 1

  # Closed-form pi*_f over a beta grid: coverage at matched expected reward.
  config.coverage_divergences = ("forward_kl", "alpha", "reverse_kl")
  config.frontier = ml_collections.ConfigDict()
  config.frontier.beta_min = 0.05
  config.frontier.beta_max = 20.0
  config.frontier.num_betas = 60
  config.frontier.num_levels = 9
  config.frontier.alpha = 0.5

  config.claims = ml_collections.ConfigDict()
  config.claims.closed_form_tv = 0.01   # trained f-DPO within this TV of pi*_f
  config.claims.loss_gap_tolerance = 1e-5   # float32 noise of the population loss
  config.claims.grad_norm_tolerance = 1e-4  # |grad| of the population loss at pi*_f
  config.progress = True

  if arg == "smoke":
    config.num_seeds = 2
    config.task.vocab_size = 3
    config.task.length = 2
    config.data.batch_size = config.task.vocab_size ** (2 * config.task.length)
    config.methods = ("dpo", "f_dpo_forward_kl", "tdpo2", "simpo")
    config.train.num_steps = 600
    config.train.eval_every = 100
    config.train.log_every = 100
    config.train.checkpoint_every = 600
    config.frontier.num_betas = 20
    config.frontier.num_levels = 3
    config.claims.closed_form_tv = 0.02
  elif arg not in ("", "full"):
    raise ValueError(f"unknown config arg {arg!r}; use '', 'full' or 'smoke'.")
  return config
