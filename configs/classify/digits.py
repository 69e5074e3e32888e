"""Classification on scikit-learn's 8x8 digits: a small 2-D CNN and an MLP.

  python -m divlab.run --config=configs/classify/digits.py --workdir=workdirs/classify_digits
"""
import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = "classify"
  config.seed = 0
  config.num_seeds = 1

  config.data = ml_collections.ConfigDict()
  config.data.name = "divlab_digits"
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.batch_size = 64

  config.models = ml_collections.ConfigDict()
  config.models.cnn = {"arch": "cnn2d", "channels": (16, 32), "hidden": 64}
  config.models.mlp = {"arch": "mlp", "hidden": (100, 100)}

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 50
  config.optimizer.weight_decay = 1e-4
  config.optimizer.grad_clip = 0.0

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 1500
  config.train.log_every = 50
  config.train.eval_every = 500
  config.train.checkpoint_every = 500
  config.train.keep_checkpoints = 2
  config.progress = True

  if arg == "smoke":
    config.train.num_steps = 20
    config.train.log_every = 5
    config.train.eval_every = 10
    config.train.checkpoint_every = 10
    config.data.batch_size = 32
  elif arg not in ("", "full"):
    raise ValueError(f"unknown config arg {arg!r}; use '', 'full' or 'smoke'.")
  return config
