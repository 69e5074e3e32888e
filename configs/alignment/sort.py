"""Preference optimisation of a small TransformerLM on sorting digit lists.

  python -m divlab.run --config=configs/alignment/sort.py --workdir=workdirs/alignment_sort
  python -m divlab.run --config=configs/alignment/sort.py:smoke --workdir=/tmp/smoke

A 2-layer, d = 64 TransformerLM learns to sort 5 digits by 150 SFT steps
(short of perfect, so its samples still differ in reward); pairs are the best
and worst of 4 SFT samples per training prompt, scored by partial credit; DPO,
IPO, f-DPO (four divergences), TDPO2, SimPO, ORPO and KTO train from the SFT
model of each of 3 seeds (vmapped). See experiments/alignment/task.py and the
family's README.
"""
import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = "alignment"
  config.setting = "task"
  config.seed = 0
  config.num_seeds = 3

  config.task = ml_collections.ConfigDict()
  config.task.name = "sort"
  config.task.length = 5
  config.task.reverse_answer = True   # addition only
  config.task.num_train = 4000
  config.task.num_test = 256
  config.task.split_seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.num_layers = 2
  config.model.d_model = 64
  config.model.num_heads = 4
  config.model.mlp_dim = 128
  config.model.max_len = 16
  config.model.position_encoding = "rope"
  config.model.tie_embeddings = True
  config.model.dropout_rate = 0.0

  # The generic keys every runner reads; batch_size is the preference
  # training's (pairs); SFT has its own.
  config.data = ml_collections.ConfigDict()
  config.data.name = "sort"
  config.data.batch_size = 32

  # Short on purpose: a perfect SFT model's samples all get the same reward,
  # which leaves no pairs to prefer.
  config.sft = ml_collections.ConfigDict()
  config.sft.batch_size = 64
  config.sft.num_steps = 150
  config.sft.log_every = 25
  config.sft.optimizer = ml_collections.ConfigDict({
      "name": "adam", "learning_rate": 3e-3, "schedule": "cosine", "warmup_steps": 20,
      "grad_clip": 1.0})

  config.pairs = ml_collections.ConfigDict()
  config.pairs.num_prompts = 2000
  config.pairs.samples_per_prompt = 4
  config.pairs.temperature = 1.0

  config.methods = ("dpo", "ipo", "f_dpo_reverse_kl", "f_dpo_js", "f_dpo_alpha",
                    "f_dpo_forward_kl", "tdpo", "simpo", "orpo", "kto")
  config.beta = 0.1
  config.hparams = ml_collections.ConfigDict({
      "f_dpo_alpha": {"alpha": 0.5},
      "tdpo": {"variant": 2, "alpha": 0.5},
      "simpo": {"beta": 2.0, "gamma_beta_ratio": 0.25},
      "orpo": {"odds_ratio_weight": 0.1},
  })

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 3e-4
  config.optimizer.grad_clip = 1.0

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 150
  config.train.log_every = 25
  config.train.eval_every = 0
  config.train.checkpoint_every = 150
  config.train.keep_checkpoints = 1

  config.eval = ml_collections.ConfigDict()
  config.eval.samples_per_prompt = 4
  config.eval.temperature = 1.0
  config.progress = True

  if arg == "smoke":
    config.num_seeds = 2
    config.task.length = 3
    config.task.num_train = 600
    config.task.num_test = 32
    config.model.num_layers = 1
    config.model.d_model = 32
    config.model.num_heads = 2
    config.model.mlp_dim = 64
    config.sft.batch_size = 32
    config.sft.num_steps = 150
    config.sft.log_every = 25
    config.sft.optimizer.warmup_steps = 10
    config.pairs.num_prompts = 300
    config.methods = ("dpo", "f_dpo_reverse_kl", "simpo")
    config.train.num_steps = 30
    config.train.log_every = 10
    config.train.checkpoint_every = 30
    config.eval.samples_per_prompt = 2
  elif arg not in ("", "full"):
    raise ValueError(f"unknown config arg {arg!r}; use '', 'full' or 'smoke'.")
  return config
