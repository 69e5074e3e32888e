"""Every experiment family's default config, end to end: compile time and run time.

Each config runs twice through ``python -m divlab.run`` in a fresh process and
a fresh workdir: first with an empty compilation cache (cold), then again with
the cache the first run filled (warm). The runner measures its own compile
time (tracing, lowering and XLA compilation, see
``divlab.train.compilation.CompileTimer``) and writes it to ``timing.json``;
this script reads that and adds the process's wall time (imports included).

  python benchmarks/experiments.py                       # all families
  python benchmarks/experiments.py --families=distillation,diffusion_sampling
  python benchmarks/experiments.py --arg=smoke           # seconds, to try it
  python benchmarks/experiments.py --compare_to=DIR      # tables vs an earlier --keep root

The two runs of a family must give the same numbers (every JSON table of the
workdir): the cache only skips compiling. ``--compare_to`` reads the tables an
earlier invocation kept (``--keep=DIR``), e.g. the CPU tables when this one
runs on a GPU, and prints the largest difference of each family's numbers.
"""
import argparse
import json
import math
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

# The first command of each family's README.
FAMILIES = {
    "classify": "configs/classify/mnist1d.py",
    "distillation": "configs/distillation/mnist1d.py",
    "unlearning": "configs/unlearning/mnist1d.py",
    "ib_regression": "configs/ib_regression/regression.py",
    "diffusion_sampling": "configs/diffusion_sampling/gmm.py",
    "alignment": "configs/alignment/enumerable.py",
    "policy_rl": "configs/policy_rl/exact.py",
}


def run_config(config: str, workdir: pathlib.Path, cache: pathlib.Path,
               timeout_s: float) -> dict:
  """One ``divlab.run`` process; its timing.json plus the process wall time."""
  command = [sys.executable, "-m", "divlab.run", f"--config={config}",
             f"--workdir={workdir}", f"--compilation_cache_dir={cache}"]
  start = time.perf_counter()
  proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                        timeout=timeout_s)
  wall = time.perf_counter() - start
  if proc.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n"
                       f"{proc.stderr[-3000:]}")
  timing = json.loads((workdir / "timing.json").read_text())
  timing["process_s"] = wall
  return timing


# Files of a workdir that are not results (nor are timings.json / timing.json,
# wall-clock times some families record).
NOT_RESULTS = ("config.json", "finished.json")


def numbers(value) -> list[float]:
  """Every number in a JSON document, in a fixed order."""
  if isinstance(value, bool) or value is None or isinstance(value, str):
    return []
  if isinstance(value, (int, float)):
    return [float(value)]
  if isinstance(value, dict):
    return [x for key in sorted(value) for x in numbers(value[key])]
  return [x for item in value for x in numbers(item)]


def largest_difference(a: pathlib.Path, b: pathlib.Path) -> str:
  """Largest absolute difference between the numbers of two workdirs' JSON tables.

  Compares every top-level ``*.json`` of ``a`` (the tables, e.g. results.json)
  with the same file in ``b``; "0" when every number is equal.
  """
  worst = 0.0
  for path in sorted(a.glob("*.json")):
    if path.name in NOT_RESULTS or "timing" in path.name:
      continue
    other = b / path.name
    if not other.exists():
      return f"{path.name} missing"
    x = numbers(json.loads(path.read_text()))
    y = numbers(json.loads(other.read_text()))
    if len(x) != len(y):
      return f"{path.name} differs in shape"
    for u, v in zip(x, y):
      if not (math.isnan(u) and math.isnan(v)):
        worst = max(worst, abs(u - v))
  return "0" if worst == 0.0 else f"{worst:.3g}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--families", default=",".join(FAMILIES),
                      help="comma-separated subset of: " + ", ".join(FAMILIES))
  parser.add_argument("--arg", default="", help="config arg, e.g. 'smoke'")
  parser.add_argument("--keep", default=None,
                      help="keep the workdirs (and their tables) under this folder")
  parser.add_argument("--compare_to", default=None,
                      help="a --keep folder of an earlier run to compare tables with")
  parser.add_argument("--timeout_s", type=float, default=3600.0)
  args = parser.parse_args()

  families = [f.strip() for f in args.families.split(",") if f.strip()]
  unknown = [f for f in families if f not in FAMILIES]
  if unknown:
    parser.error(f"--families: unknown {unknown}; choose from {list(FAMILIES)}")
  root = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="divlab_experiments_"))
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  print(f"{len(families)} families, {jax.device_count()} x {device.device_kind} "
        f"({device.platform}), jax {jax.__version__}; workdirs in {root}", flush=True)

  results = {}
  for family in families:
    config = FAMILIES[family] + (f":{args.arg}" if args.arg else "")
    folder = root / family
    if folder.exists():
      shutil.rmtree(folder)
    cache = folder / "compilation_cache"
    runs = {}
    for phase in ("cold", "warm"):
      runs[phase] = run_config(config, folder / phase, cache, args.timeout_s)
      t = runs[phase]
      print(f"{family:>18} {phase}: {t['process_s']:7.1f} s process, compile "
            f"{t['compile_s']:6.1f} s ({t['compiles']} programs, {t['cache_hits']} from "
            f"the cache), run {t['run_s']:6.1f} s", flush=True)
    # Numbers only: some tables' notes quote the run's own wall time.
    runs["same_table"] = largest_difference(folder / "cold", folder / "warm") == "0"
    if args.compare_to:
      other = pathlib.Path(args.compare_to) / family / "cold"
      runs["vs_reference"] = (largest_difference(folder / "cold", other)
                              if other.exists() else "no reference")
    results[family] = runs

  print(f"\n{jax.device_count()} x {device.device_kind} ({device.platform}), "
        f"config arg {args.arg or '(default)'}")
  header = ("| family | config | cold: process s | compile s | run s | warm: process s "
            "| compile s | run s | warm speed-up | same table |")
  if args.compare_to:
    header += " max diff vs reference |"
  print(header)
  print("|" + "---|" * (header.count("|") - 1))
  for family, runs in results.items():
    cold, warm = runs["cold"], runs["warm"]
    line = (f"| {family} | `{FAMILIES[family]}` | {cold['process_s']:.1f} | "
            f"{cold['compile_s']:.1f} | {cold['run_s']:.1f} | {warm['process_s']:.1f} | "
            f"{warm['compile_s']:.1f} | {warm['run_s']:.1f} | "
            f"{cold['process_s'] / warm['process_s']:.2f}x | "
            f"{'yes' if runs['same_table'] else 'NO'} |")
    if args.compare_to:
      line += f" {runs['vs_reference']} |"
    print(line)
  if not args.keep:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  main()
