"""Unlearning on the 8x8 digits: a random 10% and a whole class, fifteen methods.

  python -m divlab.run --config=configs/unlearning/digits.py --workdir=workdirs/unlearning_digits
  python -m divlab.run --config=configs/unlearning/digits.py:smoke --workdir=/tmp/smoke

1437 training images (a random 10% is 144 of them, the class 3 has 146), so
everything is smaller than on MNIST-1D: 1500 base steps (67 epochs) and 200
unlearning steps. Same N = 16 models per method and 128 subset models for the
datamodels. See experiments/unlearning/README.md.
"""
import ml_collections

from configs.unlearning import mnist1d


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = mnist1d.get_config()
  config.data.name = "divlab_digits"
  config.train.num_steps = 1500
  config.unlearn.num_steps = 200
  config.unlearn.checkpoint_every = 200
  config.unlearn.official.warmup_steps = 20   # 10% of the steps, as on MNIST-1D
  config.unlearn.trajectory_test_points = 360
  return mnist1d.apply_arg(config, arg)
