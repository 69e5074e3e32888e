"""Distillation on MNIST-1D: a 1-D CNN teacher, MLP students, twelve objectives.

  python -m divlab.run --config=configs/distillation/mnist1d.py --workdir=workdirs/distillation_mnist1d
  python -m divlab.run --config=configs/distillation/mnist1d.py:smoke --workdir=/tmp/smoke

The teacher is the CNN of configs/classify/mnist1d.py, trained into
<workdir>/teacher (or loaded from `teacher_path`, a finished run directory
such as <classify workdir>/runs/cnn_seed0). Students are MLP(100, 100) models,
five seeds trained side by side per method, on the whole training set and on
a fixed random 20% of it. See experiments/distillation/README.md.
"""
import ml_collections

from configs.classify import mnist1d as classify_config
from experiments.distillation.methods import METHODS


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = "distillation"
  config.seed = 0
  config.num_seeds = 5

  config.data = ml_collections.ConfigDict()
  config.data.name = "divlab_mnist1d"
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.data.batch_size = 128

  # The teacher: the classification family's CNN, with its optimizer and length.
  classify = classify_config.get_config()
  config.teacher_path = ""
  config.teacher = ml_collections.ConfigDict()
  config.teacher.model = dict(classify.models.cnn)
  config.teacher.optimizer = classify.optimizer.to_dict()
  config.teacher.num_steps = classify.train.num_steps
  config.teacher.seed = 0

  config.student = {"arch": "mlp", "hidden": (100, 100)}
  config.regimes = ml_collections.ConfigDict({"full": 1.0, "limited": 0.2})
  config.subset_seed = 0                    # which 20% the limited regime keeps

  config.methods = METHODS
  config.kd = ml_collections.ConfigDict()
  config.kd.temperature = 4.0
  config.kd.alpha = 0.9                     # weight of the soft term
  config.kd.alpha_iw_clip = 5.0
  config.kd.sinkhorn_temperature = 2.0
  config.kd.sinkhorn_epsilon = 0.1
  config.kd.sinkhorn_iters = 20
  config.kd.sinkhorn_weight = 1e-3
  config.kd.sinkhorn_scale = 0.8            # b in (1 - a) CE + a KD + b T^2 L_sink
  config.kd.pld_temperature = 4.0           # the paper's CIFAR-100 table
  config.kd.pld_ablation_temperature = 1.0  # the `pld_tau1` row (ImageNet optimum)
  config.kd.dist_beta = 1.0
  config.kd.dist_gamma = 1.0
  config.kd.dist_temperature = 1.0
  config.kd.dual_logit_weight = 1.0
  config.kd.ofa_gamma = 1.0
  config.kd.ofa_temperature = 1.0

  # Students: the classification MLP's optimizer; every method and regime
  # gets the same budget.
  config.optimizer = classify.optimizer
  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 3000
  config.train.log_every = 100
  config.train.eval_every = 0
  config.train.checkpoint_every = 1000
  config.train.keep_checkpoints = 1
  config.progress = True
  return apply_arg(config, arg)


def apply_arg(config: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  """Applies the config arg: '' or 'full' as is, 'smoke' shrunk to seconds."""
  if arg == "smoke":
    config.num_seeds = 2
    # KD itself runs inside sinkhorn_kd and dual_head_kd: four compilations.
    config.methods = ("ce", "sinkhorn_kd", "pld", "dual_head_kd")
    # No warm-up, so that a few dozen steps visibly train teacher and students
    # (the smoke test checks that the students' loss falls and that they beat
    # chance).
    config.teacher.optimizer.warmup_steps = 0
    config.optimizer.warmup_steps = 0
    config.teacher.num_steps = 60
    config.train.num_steps = 24
    config.train.log_every = 6
    config.train.checkpoint_every = 12
    config.data.batch_size = 32
    config.progress = False
  elif arg not in ("", "full"):
    raise ValueError(f"unknown config arg {arg!r}; use '', 'full' or 'smoke'.")
  return config
