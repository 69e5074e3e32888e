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
"""
from __future__ import annotations

import os
import pathlib

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
