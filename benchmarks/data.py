"""Data loaders side by side: streaming a large split, and feeding the MNIST-1D step.

Part ``stream`` generates a classification dataset of ``--size_gb`` on disk
(``divlab_bench_records``: ``x`` float32 ``[--features]`` of seeded noise, ``y``
one of 10 labels, array_record via tfds, written under ``--dir``, outside the
repository), then reads one full epoch of it with each loader, each in a
fresh subprocess so that its peak resident memory (VmHWM) is its own:

  * memory: ``divlab.data.open_split(loader="memory")`` (the whole split read
    into arrays) + ``Loader``;
  * grain: ``open_split(loader="grain")`` (a lazy ``TfdsSplit``) +
    ``GrainLoader`` (threads only, and with ``--workers`` processes).

It prints records/s (end to end, and once the first batch is out), the time to
the first batch, and peak RSS (absolute, as a share of the dataset size, and
the import baseline every process pays before reading any record). The
generated data is deleted at the end unless ``--keep``.

Part ``feed`` trains the MNIST-1D CNN and MLP with the real data-parallel
step (``divlab.train.parallel.make_train_step``) fed by each loader, and
reports per step the total time (relative to the memory-fed step of the same
round: the loaders take turns, so a shared machine's load hits them alike)
and the time blocked waiting for the next batch: the grain loader keeps up
when its step is no slower than the memory-fed one and its wait is near zero.
Grain runs reading every batch from the files, and with a decoded-record
cache of ``--cache_mb`` (which holds MNIST-1D's 0.6 MiB after one epoch, 31
batches, so the timed steps gather from memory).

Part ``read`` times one MNIST-1D batch read each way (tfds's source with a
per-record decode, as before; the direct read with a per-record decode; the
batch path; its array_record reads alone; the decoded-record cache), taking
turns.

  python benchmarks/data.py --part stream --dir /tmp/divlab_bench --size_gb 2
  python benchmarks/data.py --part feed --steps 400
  python benchmarks/data.py --part read --steps 300
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow_datasets as tfds

NAME = "divlab_bench_records"
RECORDS_PER_CHUNK = 4096
PART_BYTES = 512 << 20


def _num_parts(num_records: int, features: int) -> int:
  return max(1, -(-num_records * 4 * features // PART_BYTES))


def _split_name(num_records: int, features: int) -> str:
  """All parts as one tfds split string: ``part0+part1+...``."""
  return "+".join(f"part{k}" for k in range(_num_parts(num_records, features)))


def _builder(num_records: int, features: int, data_dir: str):
  """The generating builder, defined only where the data is written: readers
  open the prepared dataset from its files, so they need no class (and grain's
  worker processes, which re-run this script, define none twice)."""

  class DivlabBenchRecords(tfds.core.GeneratorBasedBuilder):
    """Seeded noise records (benchmark data only)."""

    VERSION = tfds.core.Version("1.0.0")
    NUM_RECORDS = num_records
    FEATURES = features

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict({
              # One bytes blob per record (not a float list): fast to write and read.
              "x": tfds.features.Tensor(shape=(self.FEATURES,), dtype=np.float32,
                                        encoding=tfds.features.Encoding.BYTES),
              "y": tfds.features.ClassLabel(num_classes=10)}),
          disable_shuffling=True)

    def _split_generators(self, dl_manager):
      del dl_manager
      # Parts under tfds's 1000 MiB in-memory write buffer: past it, tfds
      # spills to disk through TensorFlow, which divlab does not install.
      bounds = np.linspace(0, self.NUM_RECORDS, _num_parts(self.NUM_RECORDS, self.FEATURES) + 1)
      bounds = bounds.astype(int)
      return {f"part{k}": self._generate_examples(bounds[k], bounds[k + 1])
              for k in range(len(bounds) - 1)}

    def _generate_examples(self, first, stop):
      for start in range(first, stop, RECORDS_PER_CHUNK):
        rng = np.random.default_rng([0, start])
        count = min(RECORDS_PER_CHUNK, stop - start)
        xs = rng.standard_normal((count, self.FEATURES), dtype=np.float32)
        ys = rng.integers(0, 10, count)
        for offset in range(count):
          yield start + offset, {"x": xs[offset], "y": ys[offset]}

  return DivlabBenchRecords(data_dir=data_dir)


def _high_water_mib(pid: int | str = "self") -> float:
  """Peak resident memory of one process (VmHWM), in MiB.

  Not ``getrusage``'s ``ru_maxrss``: Linux carries that across fork + exec, so
  a subprocess would report its parent's peak when the parent was larger.
  """
  try:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
      for line in status:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if pid == "self" else 0.0


def _worker_high_water_mib() -> float:
  """The largest peak among this process's live child processes (grain workers)."""
  import multiprocessing  # pylint: disable=g-import-not-at-top
  return max([_high_water_mib(child.pid) for child in multiprocessing.active_children()]
             or [0.0])


def _dataset_bytes(data_dir: pathlib.Path) -> int:
  return sum(p.stat().st_size for p in (data_dir / NAME).rglob("*.array_record*"))


def _num_records(args) -> int:
  record_bytes = 4 * args.features + 16  # float32 payload + proto/label overhead
  return int(args.size_gb * 2**30 / record_bytes) + 1


def _build(args) -> int:
  """Generates the dataset (if absent); returns its size on disk in bytes."""
  num_records = _num_records(args)
  builder = _builder(num_records, args.features, args.dir)
  if not builder.is_prepared():
    start = time.perf_counter()
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    print(f"generated {num_records} records in {time.perf_counter() - start:.0f} s")
  return _dataset_bytes(pathlib.Path(args.dir))


def _stream_worker(args) -> None:
  """One loader, one process: a full epoch, then timings and peak RSS as JSON."""
  from divlab import data  # pylint: disable=g-import-not-at-top
  baseline = _high_water_mib()
  start = time.perf_counter()
  split = _split_name(_num_records(args), args.features)
  train = data.open_split(NAME, split, loader=args.worker, data_dir=args.dir)
  options = {"num_workers": args.workers} if args.worker == "grain" else {}
  loader = data.make_loader(train, args.batch, seed=0, **options)
  num_batches = len(train["y"] if isinstance(train, dict) else train) // args.batch
  checksum = 0.0
  batch = next(loader)
  first = time.perf_counter()
  for _ in range(num_batches - 1):
    batch = next(loader)
    checksum += float(batch["x"][0, 0])  # touch every batch
  end = time.perf_counter()
  workers_peak = _worker_high_water_mib()
  if hasattr(loader, "close"):
    loader.close()
  records = num_batches * args.batch
  print(json.dumps({
      "loader": args.worker + (f" ({args.workers} workers)" if args.workers else ""),
      "records": records, "first_batch_s": first - start,
      "records_per_s": records / (end - start),
      "steady_records_per_s": (records - args.batch) / max(end - first, 1e-9),
      "import_baseline_mib": baseline, "checksum": checksum,
      "peak_rss_mib": _high_water_mib(), "children_peak_rss_mib": workers_peak}))


def _stream(args) -> None:
  made_dir = args.dir is None
  args.dir = args.dir or tempfile.mkdtemp(prefix="divlab_bench_")
  try:
    size = _build(args)
    print(f"dataset: {size / 2**30:.2f} GiB on disk in {args.dir}")
    rows = []
    variants = [("memory", 0), ("grain", 0)] + ([("grain", args.workers)]
                                                if args.workers else [])
    for kind, workers in variants:
      cmd = [sys.executable, __file__, "--worker", kind, "--workers", str(workers),
             "--dir", args.dir, "--features", str(args.features),
             "--size_gb", str(args.size_gb),
             "--batch", str(args.batch)]
      out = subprocess.run(cmd, capture_output=True, text=True, check=False)
      if out.returncode:
        raise RuntimeError(f"{kind} failed:\n{out.stderr[-3000:]}")
      rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"\none epoch of {rows[0]['records']} records, batch {args.batch}, "
          f"dataset {size / 2**20:.0f} MiB\n")
    print("| loader | records/s (end to end) | records/s (after 1st batch) | "
          "1st batch after s | peak RSS MiB | % of dataset | import baseline MiB | "
          "worker peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
      print(f"| {row['loader']} | {row['records_per_s']:.0f} | "
            f"{row['steady_records_per_s']:.0f} | {row['first_batch_s']:.1f} | "
            f"{row['peak_rss_mib']:.0f} | {100 * row['peak_rss_mib'] * 2**20 / size:.1f} | "
            f"{row['import_baseline_mib']:.0f} | {row['children_peak_rss_mib']:.0f} |")
  finally:
    if not args.keep:
      shutil.rmtree(os.path.join(args.dir, NAME), ignore_errors=True)
      if made_dir:
        shutil.rmtree(args.dir, ignore_errors=True)


# Pause after each loader's turn, untimed: reading threads refill their
# prefetch buffers after a turn ends, and that work must not land in the
# next loader's turn (it is the next turn's batches, already counted).
_SETTLE_S = 0.05


def _turns(num_loaders: int, rounds: int):
  """Yields, per round, the order in which the loaders take their turns: each
  round starts one later, so no loader always follows the same one."""
  for round_index in range(rounds):
    yield [(round_index + k) % num_loaders for k in range(num_loaders)]


def _feed(args) -> None:
  """ms per training step fed by each loader, and each loader's rate alone.

  Dispatch is asynchronous, so time blocked in ``next(loader)`` overlaps the
  previous step's compute; the step is input-bound only when feeding it from
  a loader makes the step slower than feeding it from memory. The machine may
  be shared, so the loaders take turns: ``--rounds`` rounds, each timing
  ``steps / rounds`` steps of every loader in a row (in an order rotated from
  round to round, with a short untimed pause after each turn), and each
  loader's time is compared with the memory-fed time of the same round (the
  median of those ratios is reported, with their range).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from divlab import data  # pylint: disable=g-import-not-at-top
  from divlab import models  # pylint: disable=g-import-not-at-top
  from divlab.losses import softmax_cross_entropy  # pylint: disable=g-import-not-at-top
  from divlab.train import parallel  # pylint: disable=g-import-not-at-top
  from divlab.train import trainer  # pylint: disable=g-import-not-at-top

  mesh = parallel.make_mesh()
  memory = data.open_split("divlab_mnist1d", "train", loader="memory")
  lazy = data.open_split("divlab_mnist1d", "train", loader="grain")
  cache = {"cache_bytes": int(args.cache_mb * 2**20)}
  # (label, split, make_loader options): threads hand batches over for free,
  # worker processes per element, so workers group batches.
  variants = [("memory", memory, {}), ("grain", lazy, {})]
  if args.cache_mb:
    variants.append((f"grain, {args.cache_mb:g} MiB decoded cache", lazy, cache))
  for workers in args.feed_workers:
    options = {"num_workers": workers, "batches_per_element": args.batches_per_element}
    label = f"grain ({workers} workers, {args.batches_per_element} batches/element"
    variants.append((label + ")", lazy, options))
    if args.cache_mb:
      variants.append((label + f", {args.cache_mb:g} MiB cache)", lazy, {**options, **cache}))
  labels = [label for label, _, _ in variants]

  def make_loader(train, seed, options):
    return data.make_loader(train, args.batch, seed=seed, **options)

  per_round = max(1, args.steps // args.rounds)

  def timed_batches(loaders):
    """(wall, CPU) ms per batch of each loader alone, taking turns as the steps
    do; CPU is this process's (its reading threads), not worker processes'."""
    times = [[] for _ in loaders]
    for turns in _turns(len(loaders), args.rounds):
      for k in turns:
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(per_round):
          next(loaders[k])
        times[k].append((1e3 * (time.perf_counter() - start) / per_round,
                         1e3 * (time.process_time() - start_cpu) / per_round))
        time.sleep(_SETTLE_S)
    return [np.median(np.asarray(t), axis=0) for t in times]

  loaders = [make_loader(train, 1, options) for _, train, options in variants]
  for loader in loaders:
    for _ in range(20):
      next(loader)
  alone = timed_batches(loaders)
  for loader in loaders:
    if hasattr(loader, "close"):
      loader.close()

  print(f"\nMNIST-1D step fed by each loader: batch {args.batch}, {args.rounds} rounds "
        f"of {per_round} timed steps per loader after 20 warm-up steps, "
        f"{jax.device_count()} device(s)\n")
  print("| model | loader | ms/step | step time vs memory-fed (range over rounds) | "
        "ms/step waiting in next() | CPU ms/step | loader alone, ms/batch | "
        "loader alone, CPU ms/batch |")
  print("|---|---|---:|---:|---:|---:|---:|---:|")
  for arch in ("cnn1d", "mlp"):
    model = models.build(arch, 10)

    def loss_fn(params, batch, rng, model=model):
      del rng
      logits = model.apply({"params": params}, batch["x"])
      return softmax_cross_entropy(logits, batch["y"], reduction="mean"), {}

    step = parallel.make_train_step(loss_fn, mesh)
    tx = optax.adam(1e-3)
    states, loaders = [], []
    for _, train, options in variants:
      params = trainer.init_params(model, data.first_examples(train)["x"], 0)
      states.append(trainer.create_state(params, tx, 0, mesh))
      loaders.append(make_loader(train, 0, options))

    def run(k, num_steps):
      """Steps of variant k: ms/step of wall time, of this process's CPU time
      (all its threads: the step's and the loader's, not worker processes'),
      and blocked in next(loader)."""
      state, waited = states[k], 0.0
      jax.block_until_ready(state)
      start, start_cpu = time.perf_counter(), time.process_time()
      for _ in range(num_steps):
        before = time.perf_counter()
        batch = next(loaders[k])
        waited += time.perf_counter() - before
        state, _ = step(state, parallel.shard_batch(batch, mesh))
      jax.block_until_ready(state)
      states[k] = state
      per_step = 1e3 / num_steps
      return (per_step * (time.perf_counter() - start),
              per_step * (time.process_time() - start_cpu), per_step * waited)

    for k in range(len(variants)):
      run(k, 20)  # compile, fill the prefetch buffers
    step_ms, cpu_ms, wait_ms = ([[] for _ in variants] for _ in range(3))
    for turns in _turns(len(variants), args.rounds):
      for k in turns:
        took, cpu, waited = run(k, per_round)
        step_ms[k].append(took)
        cpu_ms[k].append(cpu)
        wait_ms[k].append(waited)
        time.sleep(_SETTLE_S)
    for loader in loaders:
      if hasattr(loader, "close"):
        loader.close()
    for k, label in enumerate(labels):
      ratios = np.asarray(step_ms[k]) / np.asarray(step_ms[0])
      print(f"| {arch} | {label} | {np.median(step_ms[k]):.2f} | "
            f"{np.median(ratios):.2f}x ({ratios.min():.2f}-{ratios.max():.2f}) | "
            f"{np.median(wait_ms[k]):.2f} | {np.median(cpu_ms[k]):.2f} | {alone[k][0]:.2f} | "
            f"{alone[k][1]:.2f} |")


def _read(args) -> None:
  """ms (wall and CPU) per MNIST-1D batch for each way of reading it, in turns.

  ``tfds.data_source`` + per record: what the grain loader did before reading
  batches in one pass (tfds's array_record source, then one Example parse and
  numpy conversion per record); ``read_records``: the direct array_record
  read, still decoded per record; ``read``: the batch path; bytes only: its
  array_record reads without decoding (the floor of any path through the
  files); the decoded cache once it holds the split (a gather per feature).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top,redefined-outer-name
  from divlab import data  # pylint: disable=g-import-not-at-top
  from divlab.data import loading  # pylint: disable=g-import-not-at-top

  split = data.TfdsSplit("divlab_mnist1d", "train")
  source = tfds.data_source(
      "divlab_mnist1d", split="train", download=False,
      data_dir=loading._resolve_data_dir(None),  # pylint: disable=protected-access
      deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  decode = split._decode  # pylint: disable=protected-access

  def tfds_per_record(indices):
    raw = source.__getitems__([int(i) for i in indices])
    return data.collate_supervised([decode(record) for record in raw])

  cache = data.DecodedRecordCache(split, 1 << 30)
  cache.read(np.arange(len(split)))  # every record decoded once, then kept
  paths = {"tfds.data_source + per record": tfds_per_record,
           "direct read + per record (read_records)": split.read_records,
           "direct read + batch decode (read)": split.read,
           "direct read, bytes only (no decode)":
               split._read_serialized,  # pylint: disable=protected-access
           "decoded cache, whole split held (DecodedRecordCache.read)": cache.read}
  order = data.Loader({"i": np.arange(len(split))}, args.batch, seed=0,
                      process_index=0, process_count=1)
  per_turn = max(1, args.steps // args.rounds)
  times = {name: [] for name in paths}
  batch_index = 0
  for _ in range(args.rounds):
    for name, read in paths.items():
      start, start_cpu = time.perf_counter(), time.process_time()
      for k in range(per_turn):
        read(order.global_indices(batch_index + k))
      times[name].append((1e3 * (time.perf_counter() - start) / per_turn,
                          1e3 * (time.process_time() - start_cpu) / per_turn))
    batch_index += per_turn
  print(f"\nMNIST-1D batches of {args.batch} shuffled records, {args.rounds} turns of "
        f"{per_turn} batches each\n")
  print("| read path | ms/batch | CPU ms/batch | vs tfds.data_source + per record |")
  print("|---|---:|---:|---:|")
  reference = np.median(times["tfds.data_source + per record"], axis=0)[0]
  for name, rows in times.items():
    wall, cpu = np.median(rows, axis=0)
    print(f"| {name} | {wall:.3f} | {cpu:.3f} | {reference / wall:.1f}x faster |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--part", choices=["stream", "feed", "read"], default="stream")
  parser.add_argument("--dir", default=None,
                      help="tfds data dir for the generated data (default: a new temp dir)")
  parser.add_argument("--size_gb", type=float, default=1.0)
  parser.add_argument("--features", type=int, default=4096)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--workers", type=int, default=0,
                      help="grain worker processes (stream: an extra grain row)")
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--feed_workers", type=int, nargs="*", default=[1],
                      help="feed: extra grain rows with these worker counts")
  parser.add_argument("--batches_per_element", type=int, default=4,
                      help="feed: grain batches per element with worker processes")
  parser.add_argument("--cache_mb", type=float, default=16.0,
                      help="feed: extra grain rows with a decoded-record cache of this "
                           "size (0: none)")
  parser.add_argument("--rounds", type=int, default=5,
                      help="feed: turns each loader takes (the steps are split among them)")
  parser.add_argument("--keep", action="store_true", help="keep the generated data")
  parser.add_argument("--worker", choices=["memory", "grain"], help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    _stream_worker(args)
  elif args.part == "stream":
    _stream(args)
  elif args.part == "read":
    _read(args)
  else:
    _feed(args)


if __name__ == "__main__":
  main()
