"""Instructions per logit in the GPU programs of categorical KL and JS, without a GPU.

Compiles `jax.value_and_grad` of `divlab.divergences.kl` / `js` (both logit
arrays) for a described GPU (`gpu_target.py`; needs JAX's CUDA plugin) with
XLA's PTX dumped, and counts, for each of divlab's Pallas kernels and XLA's
large elementwise fusions, the PTX instructions of its hottest loop body (or
of the whole kernel where there is no loop). In bf16 these programs already
move the minimum number of bytes (each input read once per pass, each
gradient written once), so what separates them from the HBM floor is
instructions: the counts show that part of the cost, statically. They are
not times.

  python benchmarks/kernel_instructions.py --target h200 --dtype bfloat16
"""
import argparse
import glob
import os
import re
import tempfile


def _instructions(lines):
  return [x for x in lines if x and not x.startswith(("$", "//", ".", "{", "}", ")"))]


def kernel_counts(ptx_text):
  """{entry name: (instructions in the kernel, in its longest loop body or None)}."""
  counts = {}
  for match in re.finditer(r"\.entry (\w+)", ptx_text):
    body = ptx_text[match.start():]
    body = body[:body.index("\n}\n")] if "\n}\n" in body else body
    lines = [line.strip() for line in body.splitlines()]
    labels = {line[:-1]: i for i, line in enumerate(lines) if re.match(r"^\$L__\w+:$", line)}
    loop = None
    for i, line in enumerate(lines):
      branch = re.search(r"bra(?:\.uni)?\s+(\$L__\w+);", line)
      if branch and branch.group(1) in labels and labels[branch.group(1)] < i:
        size = len(_instructions(lines[labels[branch.group(1)]:i + 1]))
        loop = max(loop or 0, size)
    counts[match.group(1)] = (len(_instructions(lines)), loop)
  return counts


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--target", default="h200", choices=["h200"])
  parser.add_argument("--batch", type=int, default=8192)
  parser.add_argument("--vocab", type=int, default=128256)
  parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  parser.add_argument("--min_instructions", type=int, default=40,
                      help="leave out kernels smaller than this (row reductions, scalars)")
  args = parser.parse_args()
  dump = tempfile.mkdtemp(prefix="divlab_ptx_")
  # Read when the GPU compiler starts, so set before anything is compiled.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_dump_to={dump} --xla_gpu_dump_llvmir")
  import gpu_target  # pylint: disable=import-outside-toplevel
  sharding = gpu_target.use_target(args.target)
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from divlab import divergences  # pylint: disable=import-outside-toplevel
  logits = jax.ShapeDtypeStruct((args.batch, args.vocab), jnp.dtype(args.dtype),
                                sharding=sharding)
  print(f"{args.target} (described, no device), jax {jax.__version__}; "
        f"2 x [{args.batch}, {args.vocab}] {args.dtype}, value and gradient w.r.t. both")
  print()
  print("| function | kernel | instructions | loop body |")
  print("|---|---|---:|---:|")
  for name, fn in (("kl", divergences.kl), ("js", divergences.js)):
    before = set(glob.glob(os.path.join(dump, "*.ptx")))
    step = jax.jit(jax.value_and_grad(lambda p, q: jnp.sum(fn(p, q)), argnums=(0, 1)))
    step.lower(logits, logits).compile()
    for path in sorted(set(glob.glob(os.path.join(dump, "*.ptx"))) - before):
      with open(path) as f:
        for kernel, (total, loop) in kernel_counts(f.read()).items():
          if total >= args.min_instructions:
            print(f"| {name} | {kernel} | {total} | {'-' if loop is None else loop} |")


if __name__ == "__main__":
  main()
