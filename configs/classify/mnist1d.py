"""Classification on MNIST-1D: a 1-D CNN and an MLP, cross-entropy.

  python -m divlab.run --config=configs/classify/mnist1d.py --workdir=workdirs/classify_mnist1d
  python -m divlab.run --config=configs/classify/mnist1d.py:smoke --workdir=/tmp/smoke

The dataset's published baselines are about 0.94 (CNN) and 0.68 (MLP).
"""
import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = "classify"
  config.seed = 0
  config.num_seeds = 1

  config.data = ml_collections.ConfigDict()
  config.data.name = "divlab_mnist1d"
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.batch_size = 128
  # How the training split is read: "memory" (whole split as arrays), "grain"
  # (streamed lazily from array_record), "auto" (memory while it fits the budget).
  config.data.loader = "auto"
  config.data.memory_budget_mb = 1024
  config.data.num_workers = 0  # grain decoding processes (0: threads only)
  # Grain only: records per grain element, and a budget for records kept decoded
  # after their first read (MNIST-1D's training split takes well under 16 MiB:
  # from the second epoch on, batches are gathered without reading the files).
  config.data.batches_per_element = 1
  config.data.cache_mb = 16

  config.models = ml_collections.ConfigDict()
  config.models.cnn = {"arch": "cnn1d", "channels": (32, 32, 32), "kernel_size": 5}
  config.models.mlp = {"arch": "mlp", "hidden": (100, 100)}

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 3e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 100
  config.optimizer.weight_decay = 1e-4
  config.optimizer.grad_clip = 0.0

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 4000
  config.train.log_every = 100
  config.train.eval_every = 1000
  config.train.checkpoint_every = 1000
  config.train.keep_checkpoints = 2
  config.progress = True
  return apply_arg(config, arg)


def apply_arg(config: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  """Applies the config arg: '' or 'full' as is, 'smoke' shrunk to seconds."""
  if arg == "smoke":
    config.train.num_steps = 20
    config.train.log_every = 5
    config.train.eval_every = 10
    config.train.checkpoint_every = 10
    config.data.batch_size = 32
  elif arg not in ("", "full"):
    raise ValueError(f"unknown config arg {arg!r}; use '', 'full' or 'smoke'.")
  return config
