"""Diffusion sampling: few-step solvers, heavy-ball / GHVB momentum, divergence artifacts.

`run(config, workdir)` sweeps solvers x NFE x guidance on exact Gaussian
mixtures and learned eps-networks and writes the tables and figures. See
README.md.
"""
from experiments.diffusion_sampling.experiment import run

__all__ = ["run"]
