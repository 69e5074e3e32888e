"""Writing a run's figures: once per job, atomically, and never leaking memory.

Every experiment family ends by drawing a few matplotlib figures into its
workdir. Two things make a plain ``fig.savefig(path)`` wrong there:

* In a multi-host job every process runs the same plotting code on the same
  replicated numbers. If each one saved, several processes would write the
  same file of a shared workdir at once. Only process 0 writes, as for every
  other per-run file (``divlab.train.metrics.is_writer``).
* A process killed while ``savefig`` streams the image would leave a truncated
  file behind, which looks like a result. The image is drawn into a temporary
  file of the same folder and renamed onto ``path`` with ``os.replace``, a
  single atomic step on POSIX file systems: ``path`` holds either the previous
  image or the new one, whole.

The figure is closed on every process: pyplot keeps each open figure alive,
so a sweep that draws a picture per setting would otherwise grow its memory
with every plot.

:func:`learning_curves` draws the figure any family can use: metrics from
``metrics.jsonl`` against the step, averaged over seeds.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from divlab.train import files
from divlab.train import metrics


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 120) -> None:
  """Writes ``fig`` to ``path`` on process 0 (atomically), then closes it.

  Process 0 draws the figure into ``.<name>.<random>.tmp`` beside ``path``
  and renames it onto ``path`` (``os.replace``), so a kill at any moment leaves
  either the old file or the new one, never a half-written image; if drawing
  fails the temporary file is removed and the error raised. Every other
  process writes nothing. The figure is closed on every process, whatever
  happened, so memory does not grow over a run that draws many figures.

  Args:
    fig: a ``matplotlib.figure.Figure``.
    path: the image to (over)write. Its suffix picks the format and must be
      one the figure's canvas can write (``.png``, ``.pdf``, ``.svg``, ...);
      its folder is created.
    dpi: resolution in dots per inch (raster formats).

  Returns:
    None.

  Raises:
    ValueError: if ``path`` has no suffix the figure's canvas can write.

  Example:
    >>> import pathlib, shutil, tempfile
    >>> import matplotlib.pyplot as plt
    >>> workdir = pathlib.Path(tempfile.mkdtemp())
    >>> fig, ax = plt.subplots()
    >>> _ = ax.plot([0, 1], [1, 0])
    >>> save_figure(fig, workdir / "plots" / "curve.png", dpi=120)
    >>> (workdir / "plots" / "curve.png").read_bytes()[1:4], plt.fignum_exists(fig.number)
    (b'PNG', False)
    >>> shutil.rmtree(workdir)
  """
  try:
    path = pathlib.Path(path)
    image_format = path.suffix[1:].lower()
    supported = fig.canvas.get_supported_filetypes()
    if image_format not in supported:
      raise ValueError(
          f"path {str(path)!r} must end in an image suffix matplotlib can "
          f"write, one of {', '.join('.' + s for s in sorted(supported))}")
    if metrics.is_writer():
      _write_atomically(fig, path, image_format, dpi)
  finally:
    _close(fig)


def _write_atomically(fig, path: pathlib.Path, image_format: str, dpi: int) -> None:
  with files.atomic_output(path) as stream:
    fig.savefig(stream, format=image_format, dpi=dpi)


def _close(fig) -> None:
  # Imported here: importing divlab.train should not load pyplot (nor pick a
  # backend) for programs that never draw.
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  plt.close(fig)


def learning_curves(path: str | os.PathLike,
                    histories: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
                    keys: Sequence[str], *, dpi: int = 120) -> dict:
  """Metrics against the training step: one panel per key, one line per label.

  Each label (say a model) has one history per run (say a seed), as
  :func:`divlab.train.metrics.read_metrics` returns it. A line is the mean over
  a label's runs at the steps where every run logged the key; with several
  runs, a band spans their minimum and maximum. A key no run logged leaves its
  panel out; a NaN value makes that step's mean NaN (a gap in the line).

  Args:
    path: the image to write (see :func:`save_figure`).
    histories: ``{label: [records of run 1, records of run 2, ...]}``.
    keys: metric names to draw, e.g. ``("train_loss", "test_accuracy")``.
    dpi: resolution.

  Returns:
    ``{(label, key): (steps, means)}``, the drawn lines.

  Example:
    ``learning_curves(workdir / "curves.png", {"mlp": [read_metrics(run)]},
    ("train_loss",))``
  """
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
    raise ValueError(f"`keys` must be a sequence of metric names, got {keys!r}.")
  if not isinstance(histories, Mapping) or not histories:
    raise ValueError("`histories` must be a non-empty {label: [records per run]} "
                     f"mapping, got {type(histories).__name__}.")
  for label, runs in histories.items():
    if isinstance(runs, Mapping) or not runs or any(
        not isinstance(r, Mapping) or "step" not in r for run in runs for r in run):
      raise ValueError(f"`histories`[{label!r}] must be a list of runs, each a list "
                       "of records with a 'step' (as read_metrics returns).")
  lines, bands = {}, {}
  for label, runs in histories.items():
    for key in keys:
      per_run = [{r["step"]: r[key] for r in run if key in r} for run in runs]
      steps = sorted(set.intersection(*(set(v) for v in per_run)))
      if not steps:
        continue
      values = np.array([[v[s] for s in steps] for v in per_run], np.float64)
      lines[(label, key)] = (np.array(steps), values.mean(axis=0))
      bands[(label, key)] = (values.min(axis=0), values.max(axis=0), len(per_run))
  drawn_keys = [k for k in keys if any(key == k for _, key in lines)]
  if not drawn_keys:
    raise ValueError(f"no history logs any of `keys`={list(keys)}.")
  fig, axes = plt.subplots(1, len(drawn_keys), figsize=(4.4 * len(drawn_keys), 3.4),
                           squeeze=False)
  colours = plt.get_cmap("tab10")
  for ax, key in zip(axes[0], drawn_keys):
    for index, label in enumerate(histories):
      if (label, key) not in lines:
        continue
      steps, mean = lines[(label, key)]
      low, high, count = bands[(label, key)]
      ax.plot(steps, mean, "o-" if len(steps) < 12 else "-", ms=3,
              color=colours(index % 10), label=label if count == 1 else
              f"{label} (mean of {count}, min-max band)")
      if count > 1:
        ax.fill_between(steps, low, high, color=colours(index % 10), alpha=0.2)
    ax.set_xlabel("step")
    ax.set_title(key, fontsize=9)
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  save_figure(fig, path, dpi=dpi)
  return lines
