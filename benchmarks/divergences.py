"""Forward+backward speed and memory of categorical KL and JS: divlab against optax and floors.

Every variant maps two `[batch, vocab]` logit arrays (of `--dtype`) to the
per-row divergence, sums the rows, and is timed as `jax.jit(jax.value_and_grad(.,
argnums=(0, 1)))`: the forward value plus the gradient with respect to BOTH
logit arrays. Variants:

  * divlab: `divlab.divergences.kl` / `js` as shipped (custom VJPs; on CUDA
    the forward statistics come from one-pass Pallas kernels, elsewhere from
    two fused XLA passes);
  * divlab XLA two-pass: the same functions with the XLA forward forced (shown
    with `--forward_variants`, to measure what the kernels buy on a GPU);
  * divlab kernel BxW: the kernels with B columns per loop step and W warps
    per row (`--kernel_configs 2048x8 4096x8 8192x16`, a sweep for tuning
    `_pallas_stats.BLOCK` / `NUM_WARPS` on a GPU);
  * optax: `optax.losses.kl_divergence_with_log_targets` on
    `jax.nn.log_softmax` inputs; JS composed from the same KL with the
    log-mixture `logaddexp(log b + log p, log(1 - b) + log q)`;
  * naive: log_softmax both inputs, then the textbook sum, plain autodiff;
  * exp floor: one exp-and-sum pass over both inputs (`sum exp(p) + sum exp(q)`
    per row) and its gradient -- a lower bound for any method that has to
    exponentiate every logit, not a divergence.

Columns: median (minimum) time over `--repeats` interleaved rounds after one
warm-up call per variant (compilation excluded), the speed-up against optax
(> 1 means faster), and the compiled program's memory (arguments + outputs +
temporaries, from `compile().memory_analysis()`). On a GPU, a last column gives
the time as a multiple of the HBM floor: reading both inputs once and writing
both gradients once at `--hbm_tbps` TB/s. Before timing, divlab's values and
gradients are checked against optax's on the same inputs.

  python benchmarks/divergences.py [--batch 2048] [--vocab 32000] [--dtype float32]
  python benchmarks/divergences.py --batch 8192 --vocab 128256 --dtype bfloat16  # on a GPU
"""
import argparse
import contextlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from divlab import divergences
from divlab.divergences import _pallas_stats
from divlab.divergences import categorical


def optax_kl(p_logits, q_logits):
  return optax.losses.kl_divergence_with_log_targets(
      jax.nn.log_softmax(q_logits), jax.nn.log_softmax(p_logits))


def optax_js(p_logits, q_logits, beta):
  log_p = jax.nn.log_softmax(p_logits)
  log_q = jax.nn.log_softmax(q_logits)
  log_m = jnp.logaddexp(jnp.log(beta) + log_p, jnp.log1p(-beta) + log_q)
  kl = optax.losses.kl_divergence_with_log_targets
  return beta * kl(log_m, log_p) + (1 - beta) * kl(log_m, log_q)


def naive_kl(p_logits, q_logits):
  log_p = jax.nn.log_softmax(p_logits)
  log_q = jax.nn.log_softmax(q_logits)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def naive_js(p_logits, q_logits, beta):
  log_p = jax.nn.log_softmax(p_logits)
  log_q = jax.nn.log_softmax(q_logits)
  p, q = jnp.exp(log_p), jnp.exp(log_q)
  log_m = jnp.log(beta * p + (1 - beta) * q)
  return (beta * jnp.sum(p * (log_p - log_m), axis=-1)
          + (1 - beta) * jnp.sum(q * (log_q - log_m), axis=-1))


def exp_floor(p_logits, q_logits):
  return (jnp.sum(jnp.exp(p_logits.astype(jnp.float32)), axis=-1)
          + jnp.sum(jnp.exp(q_logits.astype(jnp.float32)), axis=-1))


@contextlib.contextmanager
def forward_mode(mode):
  """Forces divlab's forward statistics while a function is traced."""
  saved = categorical._FORWARD  # pylint: disable=protected-access
  categorical._FORWARD = mode  # pylint: disable=protected-access
  try:
    yield
  finally:
    categorical._FORWARD = saved  # pylint: disable=protected-access


def forced(fn, mode):
  def wrapped(p, q):
    with forward_mode(mode):
      return fn(p, q)
  return wrapped


@contextlib.contextmanager
def kernel_config(block, num_warps):
  """Sets the kernels' columns per step and warps per row while a function is traced."""
  saved = _pallas_stats.BLOCK, _pallas_stats.NUM_WARPS
  _pallas_stats.BLOCK, _pallas_stats.NUM_WARPS = block, num_warps
  try:
    yield
  finally:
    _pallas_stats.BLOCK, _pallas_stats.NUM_WARPS = saved


def with_kernel_config(fn, block, num_warps):
  def wrapped(p, q):
    with kernel_config(block, num_warps):
      return fn(p, q)
  return wrapped


def parse_kernel_config(text):
  try:
    block, num_warps = (int(x) for x in text.lower().split("x"))
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"a kernel config is BLOCKxWARPS such as 4096x8, got {text!r}") from None
  if block < 16 or block & (block - 1) or num_warps not in (1, 2, 4, 8, 16, 32):
    raise argparse.ArgumentTypeError(
        f"BLOCK must be a power of 2 >= 16 and WARPS one of 1..32 (powers of 2), got {text!r}")
  return block, num_warps


def variants(beta, forward_variants, kernel_configs=()):
  table = {
      "kl": {"divlab": divergences.kl},
      "js": {"divlab": lambda p, q: divergences.js(p, q, beta=beta)},
  }
  if forward_variants:
    for mode, label in [("two_pass", "divlab XLA two-pass")]:
      table["kl"][label] = forced(divergences.kl, mode)
      table["js"][label] = forced(lambda p, q: divergences.js(p, q, beta=beta), mode)
  for block, num_warps in kernel_configs:
    label = f"divlab kernel {block}x{num_warps}"
    table["kl"][label] = with_kernel_config(forced(divergences.kl, "pallas"), block, num_warps)
    table["js"][label] = with_kernel_config(
        forced(lambda p, q: divergences.js(p, q, beta=beta), "pallas"), block, num_warps)
  table["kl"].update({"optax": optax_kl, "naive": naive_kl, "exp floor": exp_floor})
  table["js"].update({"optax": lambda p, q: optax_js(p, q, beta),
                      "naive": lambda p, q: naive_js(p, q, beta), "exp floor": exp_floor})
  return table


def fwd_bwd(fn):
  return jax.jit(jax.value_and_grad(lambda p, q: jnp.sum(fn(p, q)), argnums=(0, 1)))


def compiled_bytes(step, p, q):
  """Arguments + outputs + temporaries of the compiled program (None if unknown)."""
  try:
    stats = step.lower(p, q).compile().memory_analysis()
    return (stats.argument_size_in_bytes + stats.output_size_in_bytes
            + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None


def run_once(step, p, q):
  start = time.perf_counter()
  jax.block_until_ready(step(p, q))
  return time.perf_counter() - start


def check_against_optax(steps, p, q):
  """Largest relative value gap and max |gradient gap| (divlab vs optax)."""
  report = {}
  for name, by_variant in steps.items():
    ours = by_variant["divlab"](p, q)
    theirs = by_variant["optax"](p, q)
    value_gap = abs(float(ours[0]) - float(theirs[0])) / max(abs(float(theirs[0])), 1.0)
    grad_gap = max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
                   for a, b in zip(ours[1], theirs[1]))
    report[name] = (value_gap, grad_gap)
  return report


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=2048)
  parser.add_argument("--vocab", type=int, default=32000)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--beta", type=float, default=0.5, help="JS mixture weight")
  parser.add_argument("--scale", type=float, default=3.0, help="logit std")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--hbm_tbps", type=float, default=4.3,
                      help="HBM bandwidth for the floor column (H200: about 4.3 TB/s)")
  parser.add_argument("--forward_variants", action="store_true",
                      help="also time divlab with its XLA two-pass forward forced")
  parser.add_argument("--kernel_configs", type=parse_kernel_config, nargs="+", default=(),
                      metavar="BLOCKxWARPS",
                      help="also time the Pallas kernels with these columns per step "
                      "and warps per row (on a GPU; e.g. 2048x8 4096x8 8192x16)")
  args = parser.parse_args()
  if args.kernel_configs and jax.default_backend() != "gpu":
    parser.error("--kernel_configs times the GPU kernels: it needs a GPU")

  dtype = jnp.dtype(args.dtype)
  key_p, key_q = jax.random.split(jax.random.key(args.seed))
  shape = (args.batch, args.vocab)
  p = (args.scale * jax.random.normal(key_p, shape, jnp.float32)).astype(dtype)
  q = (args.scale * jax.random.normal(key_q, shape, jnp.float32)).astype(dtype)
  jax.block_until_ready((p, q))

  steps = {name: {variant: fwd_bwd(fn) for variant, fn in by_variant.items()}
           for name, by_variant in variants(args.beta, args.forward_variants,
                                            args.kernel_configs).items()}
  memory = {(name, variant): compiled_bytes(step, p, q)
            for name, by_variant in steps.items() for variant, step in by_variant.items()}
  for by_variant in steps.values():  # warm-up: compile and run once
    for step in by_variant.values():
      run_once(step, p, q)
  gaps = check_against_optax(steps, p, q)

  times = {(name, variant): [] for name, by_variant in steps.items()
           for variant in by_variant}
  for _ in range(args.repeats):
    for name, by_variant in steps.items():
      for variant, step in by_variant.items():
        times[(name, variant)].append(run_once(step, p, q))
  median_ms = {key: 1e3 * statistics.median(values) for key, values in times.items()}
  min_ms = {key: 1e3 * min(values) for key, values in times.items()}

  device = jax.devices()[0]
  on_accelerator = device.platform != "cpu"
  floor_ms = 4 * p.size * dtype.itemsize / (args.hbm_tbps * 1e12) * 1e3
  print(f"device: {device.platform} ({device.device_kind}), jax {jax.__version__}, "
        f"optax {optax.__version__}")
  print(f"logits: 2 x [{args.batch}, {args.vocab}] {args.dtype}; fwd+bwd = value and "
        f"gradient w.r.t. both logit arrays; median (min) of {args.repeats} rounds")
  if on_accelerator:
    print(f"HBM floor (read 2 inputs + write 2 gradients at {args.hbm_tbps} TB/s): "
          f"{floor_ms:.2f} ms")
  for name, (value_gap, grad_gap) in gaps.items():
    print(f"check {name}: relative value gap {value_gap:.1e}, "
          f"max gradient gap {grad_gap:.1e} (divlab vs optax)")
  for name in steps:
    print()
    header = (f"| {name.upper()} variant | fwd+bwd median (min) ms | speed-up vs optax, "
              "median (min) | compiled memory GiB |")
    rule = "|---|---:|---:|---:|"
    if on_accelerator:
      header += " x HBM floor (median) |"
      rule += "---:|"
    print(header)
    print(rule)
    for variant in steps[name]:
      med, low = median_ms[(name, variant)], min_ms[(name, variant)]
      mem = memory[(name, variant)]
      cells = [f"{med:.2f} ({low:.2f})" if med < 100 else f"{med:.0f} ({low:.0f})",
               f"{median_ms[(name, 'optax')] / med:.2f}x "
               f"({min_ms[(name, 'optax')] / low:.2f}x)",
               "n/a" if mem is None else f"{mem / 2**30:.2f}"]
      if on_accelerator:
        cells.append(f"{med / floor_ms:.2f}x")
      print(f"| {variant} | " + " | ".join(cells) + " |")
  speedups = {name: median_ms[(name, "optax")] / median_ms[(name, "divlab")]
              for name in steps}
  print()
  print("divlab vs optax (medians): "
        + ", ".join(f"{name.upper()} {ratio:.2f}x" for name, ratio in speedups.items())
        + " (target >= 1.5x)")
  memory_ok = all(memory[(n, "divlab")] is not None and memory[(n, "optax")] is not None
                  and memory[(n, "divlab")] <= memory[(n, "optax")] for n in steps)
  print("divlab compiled memory <= optax's: " + ("yes" if memory_ok else "no"))
  if on_accelerator:
    print("divlab x HBM floor (medians): "
          + ", ".join(f"{n.upper()} {median_ms[(n, 'divlab')] / floor_ms:.2f}x" for n in steps)
          + " (targets: KL <= 2x, JS <= 2.5x)")


if __name__ == "__main__":
  np.set_printoptions(precision=3)
  main()
