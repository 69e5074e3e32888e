"""Knowledge distillation: a CNN teacher, MLP students, twelve objectives.

`run(config, workdir)` trains (or loads) the teacher, then every method's
students over seeds in a full-data and a limited-data regime, and writes the
paper-style table. See README.md.
"""
from experiments.distillation.experiment import run

__all__ = ["run"]
