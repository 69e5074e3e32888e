"""DMM's KLoM against the number of subset models (128 up to 1024) on MNIST-1D.

  python -m divlab.run --config=configs/unlearning/dmm_scaling.py --workdir=workdirs/unlearning_dmm_scaling
  python -m divlab.run --config=configs/unlearning/dmm_scaling.py:cpu --workdir=workdirs/unlearning_dmm_scaling_cpu
  python -m divlab.run --config=configs/unlearning/dmm_scaling.py:smoke --workdir=/tmp/smoke

The setting of configs/unlearning/mnist1d.py (same MLP, N = 16, forget sets,
base training and DMM unlearning) with one base ensemble of 16 originals,
16 + 16 oracles per forget set and 1024 subset models (1104 models trained
side by side); the datamodels are fitted on the first 128, 256, 512 and 1024
of them. The default is sized for an accelerator (the base ensemble is about
five times the classification config's); ``:cpu`` stops at 512 subset models.
See experiments/unlearning/README.md.
"""
import ml_collections

from configs.unlearning import mnist1d


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = mnist1d.get_config()
  config.setup = "dmm_scaling"
  config.methods = ("dmm",)
  config.datamodels.sizes = (128, 256, 512, 1024)
  config.progress = True
  if arg == "cpu":
    config.datamodels.sizes = (128, 256, 512)
  elif arg == "smoke":
    config = mnist1d.apply_arg(config, "smoke")
    config.forget.kinds = ("random",)
    config.datamodels.sizes = (6, 12)
    config.unlearn.eval_every = 6
  elif arg not in ("", "full"):
    raise ValueError(f"unknown config arg {arg!r}; use '', 'full', 'cpu' or 'smoke'.")
  return config
