"""Shared pytest setup.

Tests compare float32 JAX results against float64 numpy/scipy references; the
few tests that need float64 inside JAX use `jax.enable_x64` locally.
"""
import os

# Notebooks and end-to-end tests read this to pick their `smoke` settings.
os.environ.setdefault("DIVLAB_SMOKE", "1")
# `divlab.run` keeps compiled programs in a per-user cache by default; tests
# that call it must neither read programs compiled by an earlier version nor
# fill the user's cache (tests/test_compilation.py turns it on in a temp dir).
os.environ.setdefault("DIVLAB_COMPILATION_CACHE", "off")
