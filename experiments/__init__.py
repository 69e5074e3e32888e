"""Experiment families: one package per family of papers.

Each package exposes ``run(config, workdir)``; ``divlab.run`` picks the
package named by ``config.experiment``. Everything generic (divergences,
losses, train steps, data, checkpoints) lives in ``divlab``.
"""
