"""Diffusion sampling: VP noise schedules, exact Gaussian-mixture scores, samplers.

Pure math, no training code. A learned model plugs in as `eps_fn(x, t)`, with
`t` the continuous time in (0, 1] as a 0-d array (see `schedules`).

  schedules   linear / cosine / discrete VP schedules, lambda_t and its inverse,
              sampling grids (uniform in t or in lambda), padded to a common
              length so the step count can be data.
  gmm         closed-form noised density, score and eps of Gaussian mixtures,
              class-conditional mixtures, classifier-free guidance, exact samples.
  multistep   Adams-Bashforth and GHVB weights, solver names ('hb3.8', ...).
  samplers    DDIM, PLMS, PLMS + heavy ball, GHVB, DPM-Solver++(2M) (+ heavy
              ball), and the `sample(name, ...)` / `sample_on_grid` dispatchers
              (`num_steps` as a traced integer on a padded grid).
  stability   characteristic polynomials, boundary loci and real stability
              intervals on the test equation y' = lambda y.
"""
from divlab.diffusion import gmm
from divlab.diffusion import multistep
from divlab.diffusion import samplers
from divlab.diffusion import schedules
from divlab.diffusion import stability
from divlab.diffusion.gmm import GaussianMixture
from divlab.diffusion.gmm import class_log_weights
from divlab.diffusion.gmm import classifier_free_guidance
from divlab.diffusion.gmm import gaussian_mixture
from divlab.diffusion.gmm import guided_eps
from divlab.diffusion.gmm import guided_mixture_eps_fn
from divlab.diffusion.gmm import mixture_eps_fn
from divlab.diffusion.gmm import noised_eps
from divlab.diffusion.gmm import noised_log_prob
from divlab.diffusion.gmm import noised_score
from divlab.diffusion.gmm import sample_mixture
from divlab.diffusion.multistep import MAX_ORDER
from divlab.diffusion.multistep import SolverSpec
from divlab.diffusion.multistep import adams_bashforth_coefficients
from divlab.diffusion.multistep import ghvb_coefficients
from divlab.diffusion.multistep import multistep_coefficients
from divlab.diffusion.multistep import parse_solver
from divlab.diffusion.samplers import ddim
from divlab.diffusion.samplers import default_spacing
from divlab.diffusion.samplers import dpm_solver_pp_2m
from divlab.diffusion.samplers import ghvb
from divlab.diffusion.samplers import plms
from divlab.diffusion.samplers import plms_heavy_ball
from divlab.diffusion.samplers import sample
from divlab.diffusion.samplers import sample_on_grid
from divlab.diffusion.schedules import CosineVPSchedule
from divlab.diffusion.schedules import DiscreteVPSchedule
from divlab.diffusion.schedules import LinearVPSchedule
from divlab.diffusion.schedules import SamplingGrid
from divlab.diffusion.schedules import VPSchedule
from divlab.diffusion.schedules import cosine_alphas_cumprod
from divlab.diffusion.schedules import cosine_schedule
from divlab.diffusion.schedules import ddpm_linear_alphas_cumprod
from divlab.diffusion.schedules import discrete_schedule
from divlab.diffusion.schedules import linear_schedule
from divlab.diffusion.schedules import pad_grid
from divlab.diffusion.schedules import padded_sampling_grid
from divlab.diffusion.schedules import sampling_grid
from divlab.diffusion.stability import boundary_locus
from divlab.diffusion.stability import characteristic_polynomial
from divlab.diffusion.stability import real_stability_interval
from divlab.diffusion.stability import spectral_radius

__all__ = [
    "gmm",
    "multistep",
    "samplers",
    "schedules",
    "stability",
    *gmm.__all__,
    *multistep.__all__,
    *samplers.__all__,
    *schedules.__all__,
    *stability.__all__,
]
