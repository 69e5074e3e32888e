"""Classification on scikit-learn's 8x8 digits: a small 2-D CNN and an MLP.

  python -m divlab.run --config=configs/classify/digits.py --workdir=workdirs/classify_digits

The MNIST-1D config with the data, the CNN and the schedule resized for 1437
training images.
"""
import ml_collections

from configs.classify import mnist1d


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = mnist1d.get_config()
  config.data.name = "divlab_digits"
  config.data.batch_size = 64
  config.models.cnn = {"arch": "cnn2d", "channels": (16, 32), "hidden": 64}
  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_steps = 50
  config.train.num_steps = 1500
  config.train.log_every = 50
  config.train.eval_every = 500
  config.train.checkpoint_every = 500
  return mnist1d.apply_arg(config, arg)
