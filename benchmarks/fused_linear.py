"""Fused-linear distillation against the materialised logits: time and memory of value + gradient.

Both variants compute the token mean of D(softmax(h_t W_t), softmax(h_s W_s))
over ``B*T`` tokens and its gradient with respect to the student's hidden
states and output weight (`jax.jit(jax.value_and_grad(., argnums=(0, 1)))`):

  * fused: `divlab.divergences.fused_linear_divergence` (token chunks in a
    `lax.scan`, gradient formed in the forward pass, no ``[B*T, V]`` array);
  * materialised: ``h_s @ W_s`` and ``h_t @ W_t`` in the input dtype (bf16
    logits for bf16 inputs), then divlab's categorical divergence, then
    `reduce_loss` -- what one writes without the fused function.

The chunks column reads groups x chunks per group x rows per chunk (see
`fused_chunk_plan`). Before timing, the two are checked against each other (value and gradients).
Columns: median time over `--repeats` interleaved rounds after a warm-up call
(compilation excluded, `block_until_ready`), the ratio of medians (and of
minima, which show the undisturbed cost on a shared machine), the compiled
program's memory (arguments + outputs + temporaries, from
`compile().memory_analysis()`; the weights and their gradient count in both,
so the ratio of the temporaries alone, the memory each variant needs beyond
its inputs and outputs, is given too) and, where the device reports it
(GPUs), the runtime peak `peak_bytes_in_use`, each measured in a fresh process
of its own so that one variant's peak cannot hide the other's. Ratios are fused / materialised: below 1 means the fused
function is faster or smaller.

  python benchmarks/fused_linear.py --bt 1024 --hidden 256 --vocab 32000 --dtype float32
  python benchmarks/fused_linear.py   # B*T in {1024, 4096, 8192}, H=4096, V=128256, bf16
  python benchmarks/fused_linear.py --compile_only   # memory only, any machine
  python benchmarks/fused_linear.py --target h200   # the GPU compiler's memory, no GPU

`--target` compiles with XLA's GPU compiler for a described GPU without one
(see `gpu_target.py`; needs JAX's CUDA plugin): the compiled memory of the
real GPU program, no times. `--accumulation_dtype float32` measures the
fused function with a float32 dL/dW sum instead of the weight's dtype.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# Grow device memory on demand instead of taking 75% of it up front: the
# peak of each variant is measured in a child process next to this one.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import jax.numpy as jnp
import numpy as np

from divlab import divergences
from divlab.divergences import fused
from divlab.losses.reductions import reduce_loss

GIB = 2.0**30
CATEGORICAL = {
    "kl": lambda t, s, beta: divergences.kl(t, s),
    "reverse_kl": lambda t, s, beta: divergences.reverse_kl(t, s),
    "js": lambda t, s, beta: divergences.js(t, s, beta=beta),
    "tv": lambda t, s, beta: divergences.total_variation(t, s),
}


def make_inputs(tokens, hidden, vocab, dtype, seed):
  """Hidden states ~ N(0, 1) and weights ~ N(0, 1/H): logits of unit scale."""
  keys = jax.random.split(jax.random.key(seed), 4)
  h_s = jax.random.normal(keys[0], (tokens, hidden), dtype)
  w_s = (jax.random.normal(keys[1], (hidden, vocab), jnp.float32)
         / np.sqrt(hidden)).astype(dtype)
  h_t = jax.random.normal(keys[2], (tokens, hidden), dtype)
  w_t = (2.0 * jax.random.normal(keys[3], (hidden, vocab), jnp.float32)
         / np.sqrt(hidden)).astype(dtype)
  return h_s, w_s, h_t, w_t


def make_steps(divergence, beta, chunk_size, accumulation_dtype=None):
  """The two jitted value-and-gradient functions of (h_s, W_s, h_t, W_t)."""
  def fused_loss(h_s, w_s, h_t, w_t):
    return divergences.fused_linear_divergence(
        h_s, w_s, h_t, w_t, divergence=divergence, beta=beta, chunk_size=chunk_size,
        accumulation_dtype=accumulation_dtype)

  def materialised_loss(h_s, w_s, h_t, w_t):
    student_logits = h_s @ w_s
    teacher_logits = jax.lax.stop_gradient(h_t @ w_t)
    values = CATEGORICAL[divergence](teacher_logits, student_logits, beta)
    return reduce_loss(values, "mean")

  return {name: jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
          for name, loss in (("fused", fused_loss), ("materialised", materialised_loss))}


def compiled_bytes(compiled):
  """(arguments + outputs + temporaries, temporaries alone) of a compiled step."""
  stats = compiled.memory_analysis()
  if stats is None:
    return None, None
  total = (stats.argument_size_in_bytes + stats.output_size_in_bytes
           + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
  return total, stats.temp_size_in_bytes


def device_peak_bytes():
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


@jax.jit
def _max_gap(a, b):
  """max |a - b| / max |b|, on the device (no [H, V] copy to the host)."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  return jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(b)), 1e-30)


def check(results):
  """Relative gaps between the two variants' value and gradients."""
  (value_f, grads_f), (value_m, grads_m) = results["fused"], results["materialised"]
  value_gap = abs(float(value_f) - float(value_m)) / max(abs(float(value_m)), 1e-30)
  return value_gap, [float(_max_gap(g_f, g_m)) for g_f, g_m in zip(grads_f, grads_m)]


def run_child(args):
  """One variant at one size in this fresh process; prints its runtime peak."""
  inputs = make_inputs(args.child_bt, args.hidden, args.vocab, jnp.dtype(args.dtype),
                       args.seed)
  step = make_steps(args.divergence, args.beta, args.chunk_size,
                    args.accumulation_dtype)[args.child_variant]
  jax.block_until_ready(step.lower(*inputs).compile()(*inputs))
  print(json.dumps({"peak_bytes": device_peak_bytes()}))


def child_peak(args, variant, tokens):
  command = [sys.executable, __file__, "--child_variant", variant, "--child_bt",
             str(tokens), "--hidden", str(args.hidden), "--vocab", str(args.vocab),
             "--dtype", args.dtype, "--divergence", args.divergence,
             "--beta", str(args.beta), "--seed", str(args.seed)]
  if args.chunk_size is not None:
    command += ["--chunk_size", str(args.chunk_size)]
  if args.accumulation_dtype is not None:
    command += ["--accumulation_dtype", args.accumulation_dtype]
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    print(f"peak measurement of {variant} at B*T={tokens} failed:\n{done.stderr[-2000:]}")
    return None
  return json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]


def measure(args, tokens):
  dtype = jnp.dtype(args.dtype)
  plan = fused.fused_chunk_plan(tokens, args.hidden, args.vocab, grad_itemsize=dtype.itemsize,
                                chunk_size=args.chunk_size)
  if args.compile_only:
    inputs = [jax.ShapeDtypeStruct(shape, dtype, sharding=args.sharding) for shape in
              ((tokens, args.hidden), (args.hidden, args.vocab)) * 2]
  else:
    inputs = make_inputs(tokens, args.hidden, args.vocab, dtype, args.seed)
  steps = {name: step.lower(*inputs).compile() for name, step in
           make_steps(args.divergence, args.beta, args.chunk_size,
                      args.accumulation_dtype).items()}
  memory, temp = {}, {}
  for name, step in steps.items():
    memory[name], temp[name] = compiled_bytes(step)
  if args.compile_only:
    return dict(tokens=tokens, plan=plan, compiled=memory, temp=temp)
  results = {name: jax.block_until_ready(step(*inputs)) for name, step in steps.items()}
  value_gap, grad_gaps = check(results)
  del results
  times = {name: [] for name in steps}
  for _ in range(args.repeats):
    for name, step in steps.items():
      start = time.perf_counter()
      jax.block_until_ready(step(*inputs))
      times[name].append(time.perf_counter() - start)
  del inputs
  row = dict(tokens=tokens, value_gap=value_gap, grad_gaps=grad_gaps, plan=plan,
             ms={name: 1e3 * statistics.median(t) for name, t in times.items()},
             min_ms={name: 1e3 * min(t) for name, t in times.items()},
             compiled=memory, temp=temp, peak=None)
  if device_peak_bytes() is not None and not args.no_peak:
    row["peak"] = {name: child_peak(args, name, tokens) for name in steps}
  return row


def ratio(a, b):
  return "n/a" if a is None or b is None else f"{a / b:.2f}"


def gib(x):
  return "n/a" if x is None else f"{x / GIB:.2f}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--bt", type=int, nargs="+", default=[1024, 4096, 8192],
                      help="numbers of tokens B*T")
  parser.add_argument("--hidden", type=int, default=4096)
  parser.add_argument("--vocab", type=int, default=128256)
  parser.add_argument("--dtype", default="bfloat16",
                      choices=["bfloat16", "float16", "float32"])
  parser.add_argument("--divergence", default="kl", choices=list(CATEGORICAL))
  parser.add_argument("--beta", type=float, default=0.5, help="JS mixture weight")
  parser.add_argument("--chunk_size", type=int, default=None,
                      help="tokens per chunk (default: from the memory budget)")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--compile_only", action="store_true",
                      help="compiled memory only: nothing is allocated or run "
                      "(full sizes work on any machine)")
  parser.add_argument("--target", default=None, choices=["h200"],
                      help="compile for this GPU without one (implies --compile_only; "
                      "needs JAX's CUDA plugin)")
  parser.add_argument("--accumulation_dtype", default=None, choices=["float32"],
                      help="the fused function's dL/dW sum (default: the weight's dtype)")
  parser.add_argument("--no_peak", action="store_true",
                      help="skip the per-variant runtime peak (child processes)")
  parser.add_argument("--child_variant", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--child_bt", type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  args.sharding = None
  if args.target is not None:
    import gpu_target  # pylint: disable=import-outside-toplevel
    args.sharding = gpu_target.use_target(args.target)
    args.compile_only = True
  if args.child_variant is not None:
    run_child(args)
    return

  device = (f"{args.target} (described, no device)" if args.target else
            f"{jax.devices()[0].device_kind} ({jax.default_backend()})")
  print(f"device: {device}, jax {jax.__version__}; "
        f"H={args.hidden}, V={args.vocab}, {args.dtype}, divergence={args.divergence}"
        + (f", {args.accumulation_dtype} dW sum" if args.accumulation_dtype else "")
        + ("; compiled memory only" if args.compile_only
           else f"; median of {args.repeats} rounds\n"))
  rows = []
  for tokens in args.bt:
    row = measure(args, tokens)
    rows.append(row)
    if args.compile_only:
      continue
    print(f"check B*T={tokens}: relative value gap {row['value_gap']:.1e}, max gradient "
          f"gap (h, W) {row['grad_gaps'][0]:.1e}, {row['grad_gaps'][1]:.1e} (fused vs "
          f"materialised)", flush=True)
  print()
  if args.compile_only:
    print("| B*T | chunks | fused compiled GiB | materialised compiled GiB | memory ratio "
          "| temporaries ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
      rows_, per_group, groups = row["plan"]
      mem, temp = row["compiled"], row["temp"]
      print(f"| {row['tokens']} | {groups} x {per_group} x {rows_} | {gib(mem['fused'])} | "
            f"{gib(mem['materialised'])} | {ratio(mem['fused'], mem['materialised'])} | "
            f"{ratio(temp['fused'], temp['materialised'])} |")
    return
  header = ("| B*T | chunks | fused ms | materialised ms | time ratio (min) | fused compiled GiB "
            "| materialised compiled GiB | memory ratio | temporaries ratio |")
  rule = "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  with_peak = any(row["peak"] for row in rows)
  if with_peak:
    header += " fused peak GiB | materialised peak GiB | peak ratio |"
    rule += "---:|---:|---:|"
  print(header)
  print(rule)
  for row in rows:
    ms, mem = row["ms"], row["compiled"]
    rows, per_group, groups = row["plan"]
    line = (f"| {row['tokens']} | {groups} x {per_group} x {rows} | {ms['fused']:.1f} | "
            f"{ms['materialised']:.1f} | {ms['fused'] / ms['materialised']:.2f} "
            f"({row['min_ms']['fused'] / row['min_ms']['materialised']:.2f}) | "
            f"{gib(mem['fused'])} | {gib(mem['materialised'])} | "
            f"{ratio(mem['fused'], mem['materialised'])} | "
            f"{ratio(row['temp']['fused'], row['temp']['materialised'])} |")
    if with_peak:
      peak = row["peak"] or {"fused": None, "materialised": None}
      line += (f" {gib(peak['fused'])} | {gib(peak['materialised'])} | "
               f"{ratio(peak['fused'], peak['materialised'])} |")
    print(line)


if __name__ == "__main__":
  main()
