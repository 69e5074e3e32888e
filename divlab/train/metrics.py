"""Metric writers and the results table every experiment ends with.

During training: one JSON object per logged step in ``metrics.jsonl`` (full
float precision) and the same scalars as TensorBoard event files. At the end:
``results.json`` (``{"rows": [...]}``) and ``results.md`` (the same table in
Markdown), where a metric ``m`` with a ``m_std`` column prints as ``mean ± std``.

On several processes (a multi-host job) only process 0 writes these files:
the others hold the same replicated values, and a second writer would
duplicate every ``metrics.jsonl`` line. A table holding NaN or infinite metrics
carries a warning line in ``results.md`` (and ``divlab.run`` exits non-zero).
"""
from __future__ import annotations

import collections
import json
import math
import pathlib
from typing import Any, Iterable, Mapping, Optional, Sequence

import jax
import numpy as np

from divlab.train import files


def is_writer() -> bool:
  """Whether this process writes per-run files (process 0 of the job)."""
  return jax.process_index() == 0


def write_json(path: str | pathlib.Path, value: Any, **dumps_kwargs) -> None:
  """Writes ``json.dumps(value)`` to ``path`` atomically, on process 0 only.

  Args:
    path: the file to (over)write; its folder is created.
    value: anything ``json.dumps`` takes (numpy scalars and arrays too).
    **dumps_kwargs: passed to ``json.dumps`` (e.g. ``indent=2``).
  """
  if not is_writer():
    return
  files.write_atomically(path, json.dumps(value, default=_to_python, **dumps_kwargs))


def write_text(path: str | pathlib.Path, text: str) -> None:
  """Writes ``text`` to ``path`` atomically, on process 0 only (e.g. a results.md).

  Args:
    path: the file to (over)write; its folder is created.
    text: the contents, written as UTF-8.
  """
  if is_writer():
    files.write_atomically(path, text)


def write_npz(path: str | pathlib.Path, **arrays: Any) -> None:
  """Writes ``np.savez(path, **arrays)`` atomically, on process 0 only.

  Args:
    path: the ``.npz`` file to (over)write; its folder is created.
    **arrays: the named arrays (host or device), read back by ``np.load``.
  """
  if not is_writer():
    return
  with files.atomic_output(path) as stream:
    np.savez(stream, **arrays)


class MetricWriter:
  """Writes scalars to ``metrics.jsonl`` and TensorBoard event files.

  Args:
    workdir: the run directory.
    resume_step: when resuming from a checkpoint at this step, lines logged
      after it by the interrupted run are dropped, so the file of a resumed run
      is identical to that of an uninterrupted one.
    tensorboard: also write TensorBoard event files (``tensorboardX``).

  On a process other than 0 every method is a no-op.
  """

  def __init__(self, workdir: str | pathlib.Path, *,
               resume_step: Optional[int] = None, tensorboard: bool = True):
    self.workdir = pathlib.Path(workdir)
    self.path = self.workdir / "metrics.jsonl"
    self._tb = None
    self._enabled = is_writer()
    if not self._enabled:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    if self.path.exists():
      keep = [line for line in self.path.read_text().splitlines()
              if line.strip() and resume_step is not None
              and json.loads(line)["step"] <= resume_step]
      files.write_atomically(self.path, "".join(line + "\n" for line in keep))
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(str(self.workdir / "tensorboard"),
                               purge_step=resume_step)

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self._enabled:
      return
    record = {"step": int(step)}
    record.update({k: _to_python(v) for k, v in scalars.items()})
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for k, v in record.items():
        if k != "step" and isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, global_step=int(step))

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_metrics(workdir: str | pathlib.Path) -> list[dict]:
  """Reads a run's ``metrics.jsonl`` back as a list of dicts, one per line.

  Each line holds ``step`` and the scalars written at that step: training
  scalars from :func:`divlab.train.fit` carry a ``train_`` prefix
  (``train_loss``, ...), evaluation scalars the prefixes ``eval_fn`` gave them
  (``<split>_<metric>`` in :func:`divlab.train.train_model`).

  Args:
    workdir: the run directory (the folder that holds ``metrics.jsonl``).

  Returns:
    The records in the order written; ``[]`` for an existing run directory
    that has not logged yet.

  Raises:
    ValueError: if ``workdir`` does not exist or is a file (for example the
      path of ``metrics.jsonl`` itself).

  Example:
    ``[r["train_loss"] for r in read_metrics(workdir) if "train_loss" in r]``
  """
  workdir = pathlib.Path(workdir)
  if not workdir.exists():
    raise ValueError(f"`workdir`={str(workdir)!r} does not exist.")
  if not workdir.is_dir():
    raise ValueError(f"`workdir`={str(workdir)!r} is a file; pass the run "
                     "directory that holds metrics.jsonl.")
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def _to_python(value: Any) -> Any:
  value = np.asarray(value)
  if value.ndim == 0:
    return value.item()
  return value.tolist()


def aggregate_seeds(records: Iterable[Mapping[str, Any]],
                    keys: Sequence[str],
                    metrics: Sequence[str]) -> list[dict]:
  """Groups per-seed records and returns mean, std and count per group.

  Args:
    records: one dict per (group, seed), e.g. ``{"method": "kd", "seed": 0,
      "test_acc": 0.91}``.
    keys: the fields that identify a group (e.g. ``("method",)``).
    metrics: the numeric fields to average.

  Returns:
    One row per group, in first-seen order: the key fields, each metric's mean,
    ``<metric>_std`` (sample std, ddof=1; 0 for a single seed) and ``seeds``.
  """
  groups: dict[tuple, list] = collections.OrderedDict()
  for r in records:
    groups.setdefault(tuple(r[k] for k in keys), []).append(r)
  rows = []
  for group_key, members in groups.items():
    row = dict(zip(keys, group_key))
    for m in metrics:
      values = np.asarray([float(r[m]) for r in members], np.float64)
      row[m] = float(values.mean())
      row[f"{m}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    row["seeds"] = len(members)
    rows.append(row)
  return rows


def write_results(workdir: str | pathlib.Path, rows: Sequence[Mapping[str, Any]],
                  *, title: str = "Results", columns: Optional[Sequence[str]] = None,
                  notes: str = "", precision: int = 4,
                  filename: str = "results", nan_allowed: Sequence[str] = ()) -> str:
  """Writes ``<filename>.json`` and ``<filename>.md``; returns the Markdown.

  Only process 0 writes (the Markdown is returned on every process). A table
  with NaN or infinite metrics gets a warning line under it naming the cells,
  so a diverged run cannot pass for a result; columns in ``nan_allowed``,
  where NaN is a documented value, are exempt.

  Args:
    workdir: output directory.
    rows: dicts; a metric ``m`` with a matching ``m_std`` prints as ``m ± std``.
    title: the Markdown heading.
    columns: columns to show, in order (default: every non-``_std`` key of the
      first row).
    notes: Markdown text appended below the table.
    precision: decimals in the Markdown table (the JSON keeps full precision).
    filename: base name, for experiments that write several tables.
    nan_allowed: columns whose NaN means something (e.g. "never reached");
      saved in the JSON so that ``find_non_finite_results`` skips them too.

  Returns:
    The Markdown text written to ``<filename>.md``.

  Example:
    >>> import tempfile
    >>> rows = [{"model": "cnn", "acc": float("nan")}]
    >>> text = write_results(tempfile.mkdtemp(), rows)
    >>> "WARNING: non-finite" in text
    True
  """
  workdir = pathlib.Path(workdir)
  rows = [dict(r) for r in rows]
  markdown = format_table(rows, columns=columns, precision=precision)
  text = f"## {title}\n\n{markdown}\n"
  bad = non_finite_cells(rows, allowed=nan_allowed)
  if bad:
    text += (f"\n**WARNING: non-finite metrics ({', '.join(bad[:10])}): the run "
             "that produced them diverged; these are not results.**\n")
  if notes:
    text += f"\n{notes.strip()}\n"
  if is_writer():
    table = {"title": title, "rows": rows}
    if nan_allowed:
      table["nan_allowed"] = list(nan_allowed)
    files.write_atomically(workdir / f"{filename}.json",
                           json.dumps(table, indent=2, default=_to_python))
    files.write_atomically(workdir / f"{filename}.md", text)
  return text


def non_finite_cells(rows: Sequence[Mapping[str, Any]], *,
                     allowed: Sequence[str] = ()) -> list[str]:
  """``"column (row i)"`` for every NaN or infinite number in ``rows``.

  Columns in ``allowed`` (and their ``_std``) are skipped.
  """
  skip = set(allowed) | {f"{c}_std" for c in allowed}
  bad = []
  for i, row in enumerate(rows):
    for key, value in row.items():
      if key not in skip and isinstance(value, (float, np.floating)) and not math.isfinite(value):
        bad.append(f"{key} (row {i})")
  return bad


def find_non_finite_results(workdir: str | pathlib.Path) -> dict[str, list[str]]:
  """The tables (``*.json`` written by :func:`write_results`) holding NaN/inf.

  Args:
    workdir: the run directory; only its top level is searched.

  Returns:
    ``{file name: non_finite_cells(rows)}`` for each offending table.
  """
  found = {}
  for path in sorted(pathlib.Path(workdir).glob("*.json")):
    try:
      table = json.loads(path.read_text())
    except (ValueError, OSError):
      continue
    if isinstance(table, dict) and isinstance(table.get("rows"), list):
      bad = non_finite_cells([r for r in table["rows"] if isinstance(r, dict)],
                             allowed=table.get("nan_allowed") or ())
      if bad:
        found[path.name] = bad
  return found


def format_table(rows: Sequence[Mapping[str, Any]], *,
                 columns: Optional[Sequence[str]] = None,
                 precision: int = 4) -> str:
  """A Markdown table; ``m`` and ``m_std`` are merged into ``m ± std``."""
  if not rows:
    return "(no rows)"
  if columns is None:
    columns = [k for k in rows[0] if not k.endswith("_std")]
  lines = ["| " + " | ".join(columns) + " |",
           "|" + "|".join("---" for _ in columns) + "|"]
  for r in rows:
    cells = []
    for c in columns:
      v = r.get(c, "")
      # A single seed has no spread to show.
      std = r.get(f"{c}_std") if r.get("seeds", 2) > 1 else None
      cells.append(_format_cell(v, std, precision))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _format_cell(value: Any, std: Any, precision: int) -> str:
  if isinstance(value, float):
    if math.isnan(value):
      return "nan"
    text = f"{value:.{precision}f}"
    if std is not None:
      text += f" ± {float(std):.{precision}f}"
    return text
  return str(value)
