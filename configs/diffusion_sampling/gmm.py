"""Few-step guided sampling of exact class-conditional Gaussian mixtures (2-D and 16-D).

  python -m divlab.run --config=configs/diffusion_sampling/gmm.py --workdir=workdirs/diffusion_gmm
  python -m divlab.run --config=configs/diffusion_sampling/gmm.py:smoke --workdir=/tmp/smoke

The noise predictor is the mixture's closed form (`divlab.diffusion.gmm`), so
every difference between solvers is the solver's. See
experiments/diffusion_sampling/README.md.
"""
import ml_collections

SOLVERS = ("ddim", "plms4", "hb3.8", "hb3.9", "ghvb3.8", "dpmpp2m", "dpmpp2m_hb0.8")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = "diffusion_sampling"
  config.seed = 0
  config.num_seeds = 3                      # groups of samples (metric spread)
  config.samples_per_seed = 512

  # The shared keys of every config; nothing is trained here.
  config.data = ml_collections.ConfigDict({"name": "exact_gmm", "batch_size": 512})
  config.train = ml_collections.ConfigDict({
      "num_steps": 0, "log_every": 1, "eval_every": 0, "checkpoint_every": 1,
      "keep_checkpoints": 1})

  config.models = ml_collections.ConfigDict()
  config.models.gmm2d = {"kind": "gmm", "dim": 2, "num_components": 8, "radius": 4.0,
                         "scale": 0.5, "diverged_norm": 10.0}
  config.models.gmm16d = {"kind": "gmm", "dim": 16, "num_components": 8,
                          "radius": 4.0, "scale": 0.5, "diverged_norm": 10.0, "seed": 0}
  config.solvers = SOLVERS
  config.nfes = (5, 6, 8, 10, 15, 20, 25)
  config.guidance = (1.0, 5.0, 10.0, 15.0)
  config.reference_nfe = 1000
  config.picture_nfe = 6
  config.picture_guidance = 15.0
  config.progress = True
  return apply_arg(config, arg)


def apply_arg(config: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  """Applies the config arg: '' or 'full' as is, 'smoke' shrunk to seconds."""
  if arg == "smoke":
    config.num_seeds = 2
    config.samples_per_seed = 64
    config.solvers = ("plms4", "hb3.8", "dpmpp2m")
    config.nfes = (5,)
    config.guidance = (1.0, 15.0)
    config.reference_nfe = 50
    config.picture_nfe = 5
    config.progress = False
  elif arg not in ("", "full"):
    raise ValueError(f"unknown config arg {arg!r}; use '', 'full' or 'smoke'.")
  return config
