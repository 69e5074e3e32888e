"""Replacing a run's small files in one step, so a kill never leaves half of one.

A run's results, done markers, configs and stage outputs are read back later:
by a resumed run deciding what is finished, by the table builder, by a user.
A plain ``path.write_text(...)`` truncates the file first and then streams the
new contents; a process killed in between leaves an empty or partial file, and
a partial ``summary.json`` done marker makes every later resume crash on it.

Here the new contents go into a temporary file of the same folder, are flushed
to the disk (``fsync``), and the temporary file is renamed onto ``path`` with
``os.replace``, a single atomic step on POSIX file systems: ``path`` holds the
previous contents or the new ones, whole. The temporary name has a random part,
so two writers never share one; it is opened the ordinary way, so the file gets
the usual permissions (``tempfile.mkstemp`` would give 0600). On an error the
temporary file is removed and ``path`` is untouched.

These functions write on whichever process calls them; per-run files of a
multi-host job are written by process 0 (``divlab.train.metrics.is_writer``),
which is the caller's test.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import uuid
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[BinaryIO]:
  """A binary stream whose contents replace ``path`` when the block ends.

  Args:
    path: the file to (over)write; its folder is created.

  Yields:
    A binary file object of a temporary file beside ``path``. If the block
    raises, the temporary file is removed, ``path`` keeps its old contents and
    the exception propagates.

  Raises:
    ValueError: ``path`` is an existing directory.

  Example:
    >>> import tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "table.md"
    >>> with atomic_output(target) as stream:
    ...   _ = stream.write(b"| a |\\n")
    >>> target.read_bytes()
    b'| a |\\n'
  """
  path = pathlib.Path(path)
  if path.is_dir():
    raise ValueError(f"`path`={str(path)!r} is a directory, not a file to write.")
  path.parent.mkdir(parents=True, exist_ok=True)
  # Same folder, so the rename never crosses file systems (which would copy).
  tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
  try:
    with open(tmp, "xb") as stream:
      yield stream
      stream.flush()
      os.fsync(stream.fileno())
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def write_atomically(path: str | os.PathLike, data: str | bytes) -> None:
  """Replaces the contents of ``path`` with ``data`` (``str`` is written as UTF-8).

  Args:
    path: the file to (over)write; its folder is created.
    data: the new contents.

  Raises:
    ValueError: ``data`` is neither ``str`` nor ``bytes``, or ``path`` is a
      directory.

  Example:
    >>> import tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "done.json"
    >>> write_atomically(target, '{"finished": true}')
    >>> target.read_text()
    '{"finished": true}'
  """
  if isinstance(data, str):
    data = data.encode("utf-8")
  elif not isinstance(data, (bytes, bytearray, memoryview)):
    raise ValueError(f"`data` must be str or bytes, got {type(data).__name__}.")
  with atomic_output(path) as stream:
    stream.write(data)
