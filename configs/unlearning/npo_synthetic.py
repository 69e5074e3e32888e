"""The NPO paper's synthetic unlearning task: GA vs NPO (and GradDiff, NPO+RT).

  python -m divlab.run --config=configs/unlearning/npo_synthetic.py \
      --workdir=workdirs/unlearning_npo_synthetic
  python -m divlab.run --config=configs/unlearning/npo_synthetic.py:smoke --workdir=/tmp/smoke

d = 16 inputs, 128 fixed ReLU random features, 2 classes; retain x ~ N(-1, I)
labelled toward class 0, forget x ~ N(+1, I) toward class 1; n_r = 1000,
n_f = 200; full-batch gradient descent on the last layer for 2000 steps at
lr 5e-4, NPO beta = 1 (Zhang et al., 2024, and their released synthetic code).
Metric: KL(retain-only model || model) on fresh forget and retain samples,
every 25 steps. Runs in seconds.
"""
import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = "unlearning"
  config.setup = "npo_synthetic"
  config.seed = 1000
  config.num_seeds = 5

  config.synthetic = ml_collections.ConfigDict()
  config.synthetic.dim = 16
  config.synthetic.num_features = 128
  config.synthetic.num_classes = 2
  config.synthetic.num_retain = 1000
  config.synthetic.num_forget = 200
  config.synthetic.num_eval = 1000        # fresh samples per distribution
  config.synthetic.alpha = 1.0            # the gap: means at -alpha 1 and +alpha 1
  config.synthetic.intercept = 1.0        # label logit intercept (released code)
  config.synthetic.theta_scale = 1.0      # label logit slope (released code)
  # Retain-only and original models: full-batch GD from zero (released code).
  config.synthetic.pretrain_steps = 20000
  config.synthetic.pretrain_learning_rate = 0.05

  # The generic keys every runner reads; the data are generated in memory and
  # every step is full-batch (batch_size = num_forget forget examples).
  config.data = ml_collections.ConfigDict()
  config.data.name = "npo_synthetic"
  config.data.batch_size = config.synthetic.num_forget

  config.methods = ("ga", "grad_diff", "npo", "npo_rt")
  config.beta = 1.0
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.0         # plain gradient descent
  config.optimizer.learning_rate = 5e-4
  # Per-method overrides of optimizer.learning_rate (none: one lr for all).
  config.learning_rates = ml_collections.ConfigDict()

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 2000
  config.train.log_every = 100
  config.train.eval_every = 25
  config.train.checkpoint_every = 2000
  config.train.keep_checkpoints = 1
  config.progress = True

  if arg == "smoke":
    config.num_seeds = 2
    config.synthetic.num_eval = 200
    config.synthetic.pretrain_steps = 2000
    config.train.num_steps = 50
    config.train.log_every = 25
    config.train.eval_every = 25
    config.train.checkpoint_every = 50
  elif arg not in ("", "full"):
    raise ValueError(f"unknown config arg {arg!r}; use '', 'full' or 'smoke'.")
  return config
