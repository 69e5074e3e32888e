"""Plain supervised classification: the training layer's first experiment.

Trains each model listed in ``config.models`` for each seed with
cross-entropy, evaluates on the test split, and writes ``results.md`` /
``results.json`` (test accuracy mean ± std per model). Each (model, seed) run
is a resumable sub-run under ``<workdir>/runs/<model>_seed<k>``; its
checkpoint is what the distillation family loads as a teacher.
"""
from experiments.classify.experiment import run, run_dir

__all__ = ["run", "run_dir"]
