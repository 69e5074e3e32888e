"""Shared pytest setup.

Tests compare float32 JAX results against float64 numpy/scipy references; the
few tests that need float64 inside JAX use `jax.enable_x64` locally.
"""
import os

# Notebooks and end-to-end tests read this to pick their `smoke` settings.
os.environ.setdefault("DIVLAB_SMOKE", "1")
