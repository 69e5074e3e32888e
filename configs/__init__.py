"""Experiment configs: `get_config(arg)` files, one folder per family."""
