"""Distillation on scikit-learn's 8x8 digits: a 2-D CNN teacher, MLP students.

  python -m divlab.run --config=configs/distillation/digits.py --workdir=workdirs/distillation_digits

The MNIST-1D config with the teacher of configs/classify/digits.py and a
schedule resized for 1437 training images (the limited regime keeps 287).
"""
import ml_collections

from configs.classify import digits as classify_digits
from configs.distillation import mnist1d


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = mnist1d.get_config()
  classify = classify_digits.get_config()
  config.data.name = "divlab_digits"
  config.data.batch_size = 64
  config.teacher.model = dict(classify.models.cnn)
  config.teacher.optimizer = classify.optimizer.to_dict()
  config.teacher.num_steps = classify.train.num_steps
  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_steps = 50
  config.train.num_steps = 1500
  config.train.log_every = 50
  config.train.checkpoint_every = 500
  return mnist1d.apply_arg(config, arg)
