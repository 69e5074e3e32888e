"""Forward+backward speed of categorical KL and JS: divlab against optax and floors.

Every variant maps two `[batch, vocab]` float32 logit arrays to the per-row
divergence, sums the rows, and is timed as `jax.jit(jax.value_and_grad(.,
argnums=(0, 1)))`: the forward value plus the gradient with respect to BOTH
logit arrays. Variants:

  * divlab: `divlab.divergences.kl` / `js` (fused passes, custom VJP);
  * optax: `optax.losses.kl_divergence_with_log_targets` on
    `jax.nn.log_softmax` inputs; JS composed from the same KL with the
    log-mixture `logaddexp(log b + log p, log(1 - b) + log q)`;
  * naive: log_softmax both inputs, then the textbook sum, plain autodiff;
  * exp floor: one exp-and-sum pass over both inputs (`sum exp(p) + sum exp(q)`
    per row) and its gradient -- a lower bound for any method that has to
    exponentiate every logit, not a divergence.

Timing: one warm-up call per variant (compilation excluded), then `--repeats`
rounds; each round times every variant once, in turn, so that load from other
processes affects all of them alike. The median per variant is reported with
its ratio to optax (> 1 means faster than optax), and the minimum as well: on
a shared machine the minimum is the steadier estimate of the cost itself.
Before timing, divlab's values and gradients are checked against optax's on
the same inputs.

  python benchmarks/divergences.py [--batch 2048] [--vocab 32000] [--repeats 7]
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from divlab import divergences


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
  return jnp.sum(jnp.exp(p_logits), axis=-1) + jnp.sum(jnp.exp(q_logits), axis=-1)


def variants(beta):
  return {
      "kl": {
          "divlab": divergences.kl,
          "optax": optax_kl,
          "naive": naive_kl,
          "exp floor": exp_floor,
      },
      "js": {
          "divlab": lambda p, q: divergences.js(p, q, beta=beta),
          "optax": lambda p, q: optax_js(p, q, beta),
          "naive": lambda p, q: naive_js(p, q, beta),
          "exp floor": exp_floor,
      },
  }


def fwd_bwd(fn):
  return jax.jit(jax.value_and_grad(lambda p, q: jnp.sum(fn(p, q)), argnums=(0, 1)))


def run_once(step, p, q):
  start = time.perf_counter()
  jax.block_until_ready(step(p, q))
  return time.perf_counter() - start


def check_against_optax(steps, p, q):
  """Largest |divlab - optax| over value and both gradients, per divergence."""
  report = {}
  for name, by_variant in steps.items():
    ours = by_variant["divlab"](p, q)
    theirs = by_variant["optax"](p, q)
    value_gap = abs(float(ours[0]) - float(theirs[0])) / max(abs(float(theirs[0])), 1.0)
    grad_gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(ours[1], theirs[1]))
    report[name] = (value_gap, grad_gap)
  return report


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=2048)
  parser.add_argument("--vocab", type=int, default=32000)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--beta", type=float, default=0.5, help="JS mixture weight")
  parser.add_argument("--scale", type=float, default=3.0, help="logit std")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  key_p, key_q = jax.random.split(jax.random.key(args.seed))
  shape = (args.batch, args.vocab)
  p = args.scale * jax.random.normal(key_p, shape, jnp.float32)
  q = args.scale * jax.random.normal(key_q, shape, jnp.float32)
  jax.block_until_ready((p, q))

  steps = {name: {variant: fwd_bwd(fn) for variant, fn in by_variant.items()}
           for name, by_variant in variants(args.beta).items()}
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
  print(f"device: {device.platform} ({device.device_kind}), jax {jax.__version__}, "
        f"optax {optax.__version__}")
  print(f"logits: 2 x [{args.batch}, {args.vocab}] float32; fwd+bwd = value and "
        f"gradient w.r.t. both logit arrays; median of {args.repeats}")
  for name, (value_gap, grad_gap) in gaps.items():
    print(f"check {name}: relative value gap {value_gap:.1e}, "
          f"max gradient gap {grad_gap:.1e} (divlab vs optax)")
  print()
  print("| variant | KL fwd+bwd median (min) ms | KL speed-up vs optax, median (min) "
        "| JS fwd+bwd median (min) ms | JS speed-up vs optax, median (min) |")
  print("|---|---:|---:|---:|---:|")
  for variant in ["divlab", "optax", "naive", "exp floor"]:
    cells = []
    for name in ["kl", "js"]:
      med, low = median_ms[(name, variant)], min_ms[(name, variant)]
      cells += [f"{med:.0f} ({low:.0f})",
                f"{median_ms[(name, 'optax')] / med:.2f}x "
                f"({min_ms[(name, 'optax')] / low:.2f}x)"]
    print(f"| {variant} | " + " | ".join(cells) + " |")
  targets = {name: median_ms[(name, "optax")] / median_ms[(name, "divlab")]
             for name in ["kl", "js"]}
  met = all(ratio >= 1.5 for ratio in targets.values())
  print()
  print("target (divlab >= 1.5x faster than optax for KL and JS, medians): "
        + ("met" if met else "missed") + " -- "
        + ", ".join(f"{name.upper()} {ratio:.2f}x" for name, ratio in targets.items()))


if __name__ == "__main__":
  np.set_printoptions(precision=3)
  main()
