"""Few-step guided sampling of learned eps-networks: a 2-D mixture and the 8x8 digits.

  python -m divlab.run --config=configs/diffusion_sampling/learned.py --workdir=workdirs/diffusion_learned
  python -m divlab.run --config=configs/diffusion_sampling/learned.py:smoke --workdir=/tmp/smoke

Each model is a `ScoreMLP` trained by denoising score matching (with label
dropout for classifier-free guidance) through the shared training layer,
checkpointed under <workdir>/models/ and reused on a re-run.
"""
import ml_collections

from configs.diffusion_sampling import gmm


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = gmm.get_config()
  config.data.name = "divlab_digits"
  optimizer = {"name": "adam", "learning_rate": 1e-3, "schedule": "cosine",
               "warmup_steps": 100}
  config.models = ml_collections.ConfigDict()
  config.models.learned2d = {
      "kind": "learned_gmm", "dim": 2, "num_components": 8, "radius": 4.0,
      "scale": 0.5, "diverged_norm": 10.0, "train_examples": 20000,
      "hidden": (128, 128, 128), "embed_dim": 32, "p_uncond": 0.1,
      "batch_size": 256, "num_steps": 4000, "optimizer": optimizer}
  config.models.digits = {
      "kind": "learned_digits", "hidden": (256, 256, 256), "embed_dim": 64,
      "p_uncond": 0.1, "batch_size": 128, "num_steps": 6000, "optimizer": optimizer}
  config.samples_per_seed = 256
  config.reference_nfe = 500
  # At w = 15 this small model's guided samples saturate every pixel even when
  # solved exactly; the pictures show w = 1, where PLMS4's artifacts appear.
  config.picture_nfe = 5
  config.picture_guidance = 1.0
  config = gmm.apply_arg(config, arg)
  if arg == "smoke":
    for name in ("learned2d", "digits"):
      config.models[name].num_steps = 20
      config.models[name].batch_size = 32
    config.models.learned2d.train_examples = 512
    config.solvers = ("ddim", "hb3.8")
    config.nfes = (5,)
  return config
