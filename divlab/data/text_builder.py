"""``divlab_text``: your own text files as byte- or character-level token records.

A tfds builder that reads UTF-8 ``*.txt`` files from a local folder (tfds's
``manual_dir``; nothing is downloaded) and writes one record per non-empty
line, ``{"tokens": int32 [n]}``, in array_record format, so that
``divlab.data.TfdsSplit`` and ``GrainLoader`` can stream it. Files are read in
sorted path order (recursively) and lines in file order; that order is stored
(no shuffling on write) and the loaders shuffle.

Two configs:

- ``divlab_text/bytes``: a token is a byte of the line's UTF-8 encoding,
  ``0..255`` (vocabulary size 256, the same for every corpus).
- ``divlab_text/chars``: a token is a Unicode character's rank in the corpus's
  sorted character set, ``0..V-1``; the set is stored in the dataset's
  metadata (``info.metadata["vocabulary"]``, a string) so :func:`decode`
  can map tokens back.

Line breaks are not part of a record. One prepared corpus per data dir and
config: prepare a different corpus into a different ``data_dir``.

Example::

  builder = prepare_text("my_corpus/", level="byte", data_dir="/tmp/tfds")
  split = TfdsSplit("divlab_text/bytes", "train", data_dir="/tmp/tfds",
                    collate=sequences.pad_collate(256))
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

PathLike = str | os.PathLike
LEVELS = {"byte": "bytes", "char": "chars"}


@dataclasses.dataclass(eq=False)
class TextConfig(tfds.core.BuilderConfig):
  """``level``: ``"byte"`` (UTF-8 bytes) or ``"char"`` (Unicode characters)."""
  level: str = "byte"


def _text_files(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(path for path in folder.rglob("*.txt") if path.is_file())


def _lines(files: Sequence[pathlib.Path]) -> Iterator[tuple[int, int, str]]:
  """(file number, line number, line) of every non-empty line, in order."""
  for file_number, path in enumerate(files):
    with open(path, encoding="utf-8") as handle:
      for line_number, line in enumerate(handle):
        line = line.rstrip("\r\n")
        if line:
          yield file_number, line_number, line


class DivlabText(tfds.core.GeneratorBasedBuilder):
  """Token records from local UTF-8 text files, one per non-empty line."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      TextConfig(name="bytes", level="byte",
                 description="UTF-8 bytes, tokens 0..255."),
      TextConfig(name="chars", level="char",
                 description="Unicode characters, tokens = rank in the corpus's "
                 "sorted character set (info.metadata['vocabulary'])."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put UTF-8 *.txt files (any folder depth) in the manual_dir, e.g. "
      "divlab.data.prepare_text(folder, level='byte', data_dir=...).")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=("Local text files as token records, one per non-empty line "
                     f"({self.builder_config.level}-level)."),
        features=tfds.features.FeaturesDict({
            "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32)}),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,  # keep file and line order; loaders shuffle
    )

  def _split_generators(self, dl_manager):
    folder = pathlib.Path(dl_manager.manual_dir)
    files = _text_files(folder)
    if not files:
      raise ValueError(f"divlab_text: no *.txt files under {folder}.")
    if self.builder_config.level == "char":
      characters = set()
      for _, _, line in _lines(files):
        characters.update(line)
      vocabulary = "".join(sorted(characters))
    else:
      vocabulary = None
    self.info.metadata["vocabulary"] = vocabulary
    self.info.metadata["level"] = self.builder_config.level
    return {"train": self._generate_examples(files, vocabulary)}

  def _generate_examples(self, files, vocabulary):
    rank = None if vocabulary is None else {c: i for i, c in enumerate(vocabulary)}
    for file_number, line_number, line in _lines(files):
      if rank is None:
        tokens = np.frombuffer(line.encode("utf-8"), dtype=np.uint8).astype(np.int32)
      else:
        tokens = np.array([rank[c] for c in line], dtype=np.int32)
      yield f"{file_number:06d}_{line_number:09d}", {"tokens": tokens}


def prepare_text(folder: PathLike, *, level: str = "byte",
                 data_dir: PathLike | None = None) -> tfds.core.DatasetBuilder:
  """Writes the ``*.txt`` files under ``folder`` as ``divlab_text/<level>s``.

  Offline and idempotent: a corpus already prepared in ``data_dir`` (for this
  config) is reused as is, so prepare a different corpus into another
  ``data_dir``.

  Args:
    folder: a folder holding UTF-8 ``*.txt`` files (searched recursively).
    level: ``"byte"`` or ``"char"``.
    data_dir: the tfds data dir (default: ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).

  Returns:
    The prepared builder; its dataset name is ``"divlab_text/bytes"`` or
    ``"divlab_text/chars"``.

  Raises:
    ValueError: an unknown ``level``, a missing folder, or no ``*.txt`` files.

  Example::

    prepare_text("corpus/", level="char", data_dir="/tmp/tfds").info.metadata
  """
  if level not in LEVELS:
    raise ValueError(f"`level` must be one of {sorted(LEVELS)}, got {level!r}.")
  folder = pathlib.Path(folder).expanduser()
  if not folder.is_dir():
    raise ValueError(f"`folder`={str(folder)!r} is not a folder.")
  if not _text_files(folder):
    raise ValueError(f"`folder`={str(folder)!r} holds no *.txt files.")
  kwargs = {} if data_dir is None else {"data_dir": os.fspath(data_dir)}
  builder = tfds.builder(f"divlab_text/{LEVELS[level]}", **kwargs)
  builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(folder),
                                                   try_download_gcs=False))
  return builder


def decode(tokens: Sequence[int] | np.ndarray, *, level: str = "byte",
           vocabulary: str | None = None) -> str:
  """Text back from a record's tokens (padding removed by the caller).

  Args:
    tokens: 1-D token ids.
    level: ``"byte"`` or ``"char"``.
    vocabulary: for ``"char"``: the builder's ``info.metadata["vocabulary"]``.

  Returns:
    The text (invalid UTF-8 from a cut multi-byte character is replaced).

  Example::

    decode([104, 105])  # "hi"
  """
  tokens = np.asarray(tokens, dtype=np.int64)
  if level == "byte":
    if tokens.size and (tokens.min() < 0 or tokens.max() > 255):
      raise ValueError("`tokens` must be bytes 0..255 for level='byte'.")
    return tokens.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
  if level == "char":
    if vocabulary is None:
      raise ValueError("`vocabulary` is needed for level='char'.")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= len(vocabulary)):
      raise ValueError(f"`tokens` must be in 0..{len(vocabulary) - 1} for this vocabulary.")
    return "".join(vocabulary[t] for t in tokens)
  raise ValueError(f"`level` must be one of {sorted(LEVELS)}, got {level!r}.")
