"""GRPO variants and offline TOPR on a small TransformerLM sorting digit lists.

  python -m divlab.run --config=configs/policy_rl/sort.py --workdir=workdirs/policy_rl_sort
  python -m divlab.run --config=configs/policy_rl/sort.py:smoke --workdir=/tmp/smoke

A TransformerLM learns to sort digits by SFT (stopped short of perfect), then
GRPO with group size 8 trains it with no KL, k3 in the loss, k1 in the reward
(return-to-go) or DPH-RL's forward-KL rehearsal; offline TOPR learns from a
fixed buffer of SFT samples. pass@k (k up to 64) on held-out prompts, 3 seeds.
See experiments/policy_rl/task.py and the family's README.
"""
import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = "policy_rl"
  config.setting = "task"
  config.seed = 0
  config.num_seeds = 3

  config.task = ml_collections.ConfigDict()
  config.task.name = "sort"
  config.task.length = 5
  config.task.reverse_answer = True   # addition only
  config.task.num_train = 4000
  config.task.num_test = 64
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

  # The generic keys every runner reads; batch_size is SFT's.
  config.data = ml_collections.ConfigDict()
  config.data.name = "sort"
  config.data.batch_size = 64

  config.sft = ml_collections.ConfigDict()
  config.sft.num_steps = 120
  config.sft.log_every = 50
  config.sft.optimizer = ml_collections.ConfigDict({
      "name": "adam", "learning_rate": 3e-3, "schedule": "cosine", "warmup_steps": 20,
      "grad_clip": 1.0})

  config.methods = ("grpo", "grpo_k3_loss", "grpo_k1_reward", "grpo_dph_forward",
                    "topr_offline")
  config.rl = ml_collections.ConfigDict()
  config.rl.group_size = 8
  config.rl.prompts_per_step = 8
  config.rl.aggregation = "sequence_mean"   # GRPO's
  config.rl.std = "unbiased"
  config.rl.eps = 1e-4
  config.rl.clip_low = 0.2
  config.rl.clip_high = 0.2
  config.rl.kl_coef = 0.05
  config.rl.kl_kind = "k3"

  # DPH-RL: the rehearsal set and its forward-KL (k3 of pi / pi_SFT) weight.
  config.dph = ml_collections.ConfigDict()
  config.dph.samples_per_prompt = 8
  config.dph.num_prompts = 512
  config.dph.rehearsal_batch = 32
  config.dph.coef = 0.05

  config.topr = ml_collections.ConfigDict()
  config.topr.num_prompts = 1000
  config.topr.samples_per_prompt = 4
  config.topr.negative_reward = -1.0
  config.topr.batch_size = 64

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 2e-4
  config.optimizer.grad_clip = 1.0

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 100
  config.train.log_every = 25
  config.train.eval_every = 0
  config.train.checkpoint_every = 100
  config.train.keep_checkpoints = 1

  config.eval = ml_collections.ConfigDict()
  config.eval.num_samples = 64
  config.eval.pass_k = (1, 2, 4, 8, 16, 32, 64)
  config.eval.prompts_per_chunk = 64
  config.progress = True

  if arg == "smoke":
    config.num_seeds = 2
    config.task.length = 3
    config.task.num_train = 600
    config.task.num_test = 16
    config.model.num_layers = 1
    config.model.d_model = 32
    config.model.num_heads = 2
    config.model.mlp_dim = 64
    config.data.batch_size = 32
    config.sft.num_steps = 100
    config.sft.log_every = 25
    config.sft.optimizer.warmup_steps = 10
    config.rl.prompts_per_step = 4
    config.dph.num_prompts = 64
    config.dph.rehearsal_batch = 8
    config.topr.num_prompts = 64
    config.topr.batch_size = 32
    config.optimizer.learning_rate = 1e-3
    config.train.num_steps = 30
    config.train.log_every = 10
    config.train.checkpoint_every = 30
    config.eval.num_samples = 16
    config.eval.pass_k = (1, 4, 16)
    config.eval.prompts_per_chunk = 16
  elif arg not in ("", "full"):
    raise ValueError(f"unknown config arg {arg!r}; use '', 'full' or 'smoke'.")
  return config
