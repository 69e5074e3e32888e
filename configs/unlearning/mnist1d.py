"""Unlearning on MNIST-1D: a random 10% and a whole class, fifteen methods.

  python -m divlab.run --config=configs/unlearning/mnist1d.py --workdir=workdirs/unlearning_mnist1d
  python -m divlab.run --config=configs/unlearning/mnist1d.py:smoke --workdir=/tmp/smoke

Sized to finish within 10 minutes on a 2-core CPU: an MLP (the models train
side by side as one vmapped ensemble), N = 16 models per method (KLoM compares
16 unlearned against 16 oracle models), and 128 subset models for the
datamodels (the DMM paper uses 1,000-20,000). See experiments/unlearning/README.md.
"""
import ml_collections

METHODS = ("noop", "finetune", "ga", "grad_diff", "npo", "npo_rt", "simnpo", "ga_gu",
           "npo_gu", "npo_official", "npo_rt_official", "simnpo_official", "om", "dmm",
           "retrain")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = "unlearning"
  config.setup = "classification"
  config.seed = 0
  config.num_models = 16                  # N: models per method (and per oracle pool)

  config.data = ml_collections.ConfigDict()
  config.data.name = "divlab_mnist1d"
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.batch_size = 64

  config.model = {"arch": "mlp", "hidden": (100, 100)}

  config.forget = ml_collections.ConfigDict()
  config.forget.kinds = ("random", "class")
  config.forget.fraction = 0.1
  config.forget.class_label = 3
  config.forget.seed = 0

  # Original, oracle and subset models (one ensemble).
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 2000
  config.train.log_every = 100
  config.train.eval_every = 0
  config.train.checkpoint_every = 1000
  config.train.keep_checkpoints = 1

  config.datamodels = ml_collections.ConfigDict()
  config.datamodels.num_models = 128
  config.datamodels.subset_fraction = 0.5
  config.datamodels.subset_seed = 1
  config.datamodels.ridges = (1.0, 10.0, 100.0, 1000.0)
  config.datamodels.holdout_fraction = 0.2

  config.methods = METHODS
  config.unlearn = ml_collections.ConfigDict()
  config.unlearn.num_steps = 300
  config.unlearn.log_every = 50
  config.unlearn.eval_every = 10
  config.unlearn.checkpoint_every = 300
  config.unlearn.keep_checkpoints = 1
  config.unlearn.forget_batch_size = 64
  config.unlearn.retain_batch_size = 64
  config.unlearn.optimizer = ml_collections.ConfigDict()
  config.unlearn.optimizer.name = "adam"
  config.unlearn.optimizer.learning_rate = 1e-3
  config.unlearn.learning_rates = ml_collections.ConfigDict()  # per-method overrides
  config.unlearn.npo_beta = 1.0
  config.unlearn.simnpo_beta = 2.5
  config.unlearn.simnpo_gamma = 0.0
  config.unlearn.retain_weight = 1.0
  config.unlearn.gu_metric = "adam"
  # The `*_official` rows: the official NPO / SimNPO TOFU regime (AdamW, lr
  # 1e-5, weight decay 0.01, one of ten epochs of warm-up then linear decay,
  # NPO beta 0.1) scaled to this model: lr 1e-4, a tenth of these models'
  # training lr (TOFU's 1e-5 is a few percent of Llama-2's pretraining peak),
  # warm-up over the first 10% of the steps, cosine decay.
  config.unlearn.official = ml_collections.ConfigDict()
  config.unlearn.official.name = "adamw"
  config.unlearn.official.learning_rate = 1e-4
  config.unlearn.official.schedule = "cosine"
  config.unlearn.official.warmup_steps = 30
  config.unlearn.official.weight_decay = 0.01
  config.unlearn.official.npo_beta = 0.1
  config.unlearn.trajectory_retain_points = 1000
  config.unlearn.trajectory_test_points = 500

  config.klom = ml_collections.ConfigDict()
  config.klom.num_bins = 20
  config.klom.clip = 100.0
  config.klom.floor = 1e-5
  config.klom.percentile = 95
  config.klom.bootstrap = 20
  config.progress = True
  return apply_arg(config, arg)


def apply_arg(config: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  """Applies the config arg: '' or 'full' as is, 'smoke' shrunk to seconds."""
  if arg == "smoke":
    # Seconds, dominated by compilation: one method per code path (plain
    # forget loss, GU gradients, margin matching with datamodels).
    config.methods = ("noop", "ga", "npo_gu", "dmm", "retrain")
    config.num_models = 2
    config.datamodels.num_models = 6
    config.datamodels.ridges = (10.0, 100.0)
    config.datamodels.holdout_fraction = 0.34
    config.train.num_steps = 20
    config.train.log_every = 10
    config.train.checkpoint_every = 20
    config.unlearn.num_steps = 6
    config.unlearn.log_every = 3
    config.unlearn.eval_every = 3
    config.unlearn.checkpoint_every = 6
    config.unlearn.forget_batch_size = 16
    config.unlearn.retain_batch_size = 16
    config.unlearn.trajectory_retain_points = 64
    config.unlearn.trajectory_test_points = 64
    config.klom.bootstrap = 2
    config.progress = False
  elif arg not in ("", "full"):
    raise ValueError(f"unknown config arg {arg!r}; use '', 'full' or 'smoke'.")
  return config
