"""The CS-IB paper's toy: 400 free points moved onto two Gaussians by D_CS.

  python -m divlab.run --config=configs/ib_regression/two_gaussians.py --workdir=workdirs/two_gaussians
  python -m divlab.run --config=configs/ib_regression/two_gaussians.py:smoke --workdir=workdirs/two_gaussians_smoke

Target: 200 points from each of N((-4, -4), I) and N((+4, +4), I); the free
points start from N(0, I) and follow plain gradient descent (the released
script's SGD, learning rate 200, kernel sigma 1) on the Cauchy-Schwarz
divergence. The released script runs 10000 steps; 500 already bring D_CS
below 0.01 with the points split evenly between the modes.
"""
import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = "ib_regression"
  config.task = "two_gaussians"
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = "two_gaussians"  # generated in the run, not a tfds set
  config.data.batch_size = 400        # the whole target sample every step

  config.toy = ml_collections.ConfigDict()
  config.toy.points_per_mode = 200
  config.toy.num_free_points = 400
  config.toy.mode_offset = 4.0
  config.toy.mode_std = 1.0
  config.toy.kernel_sigma = 1.0

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.0     # plain gradient descent
  config.optimizer.learning_rate = 200.0
  config.optimizer.schedule = "constant"

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 500
  config.train.log_every = 50
  config.train.eval_every = 0
  config.train.checkpoint_every = 250
  config.train.keep_checkpoints = 1
  config.progress = True

  if arg == "smoke":
    config.train.num_steps = 40
    config.train.log_every = 10
    config.train.checkpoint_every = 20
    config.progress = False
  elif arg:
    raise ValueError(f"unknown config arg {arg!r}; use '' or 'smoke'.")
  return config
