"""Preference optimisation on an enumerable autoregressive policy, exactly.

The setting (`experiments.alignment.enumerable_policy` holds the policy, the
exact metrics and the closed forms):

* one prompt; the completions are all ``V^L`` token sequences (default
  4^3 = 64); policy and reference are tabular autoregressive models;
* each seed draws a reference (logits ~ N(0, reference_scale^2)) and a
  reward ``r(y) ~ N(0, reward_scale^2)`` per completion;
* preference pairs are drawn from the reference and labelled by
  Bradley-Terry: ``P(y_w = y, y_l = y') = pi_ref(y) pi_ref(y') sigma(r(y) - r(y'))``
  for ``y != y'``. Every loss of `divlab.losses.preference` is trained on its
  **exact expectation** over this pair distribution (a weighted sum over all
  ``N^2`` ordered pairs), so there is no sampling noise anywhere.

Reported, exact by enumeration: expected reward, entropy, ``KL(pi || pi_ref)``,
coverage ``min_y pi(y) / pi_ref(y)``, and TDPO's SeqKL averaged over the chosen
and the rejected answers. f-DPO's trained policies are compared with the
closed-form population optimum pi*_f; the closed forms over a grid of beta give
the coverage-vs-reward curves on which "more diverse at matched reward" is
checked, and DPO's closed form at a given reward is the reference point for
TDPO's "lower SeqKL at similar reward".

Training: full-batch Adam on the exact loss, all seeds at once (``vmap``), the
whole run one ``lax.scan`` per method. The seeds are independent problems
(reference and reward), not re-runs of one problem.
"""
from __future__ import annotations

import pathlib
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from divlab.losses import preference
from divlab.train import figures
from divlab.train import metrics as metrics_lib
from experiments.alignment.enumerable_policy import (
    Task,
    make_task,
    token_logits,
    sequence_log_probs,
    sequence_probs,
    table_from_sequence_probs,
    make_problem,
    pair_weights,
    exact_metrics,
    closed_form_optimum,
    closed_form_curve,
    dpo_optimum_at_reward,
    matched_reward_coverage,
)

# Rows of the table: name -> (label, group). Reference-based methods need
# pi_ref; reference-free ones (SimPO, ORPO, MaPO) do not.
METHODS = {
    "dpo": "DPO",
    "cdpo": "cDPO (e=0.2)",
    "robust_dpo": "robust DPO (e=0.1)",
    "ipo": "IPO",
    "f_dpo_reverse_kl": "f-DPO reverse KL",
    "f_dpo_js": "f-DPO JS",
    "f_dpo_alpha": "f-DPO alpha=0.5",
    "f_dpo_forward_kl": "f-DPO forward KL",
    "tdpo1": "TDPO1",
    "tdpo2": "TDPO2",
    "sparse_po": "SparsePO",
    "simpo": "SimPO",
    "orpo": "ORPO",
    "kto": "KTO",
    "mapo": "MaPO (NLL as MSE)",
    "npo": "NPO (rejected only)",
}

# Exact metrics in the table (plus `tv_closed_form` for the f-DPO rows).
METRIC_NAMES = ("reward", "kl", "kl_half", "entropy", "coverage", "seq_kl_chosen",
                "seq_kl_rejected")

# f-DPO rows and the divergence each one trains.
F_DPO_ROWS = {"f_dpo_reverse_kl": "reverse_kl", "f_dpo_js": "js",
              "f_dpo_alpha": "alpha", "f_dpo_forward_kl": "forward_kl"}


# ----------------------------------------------------------------------------
# The losses, as exact expectations over the pair distribution.
# ----------------------------------------------------------------------------


def _pairwise(values: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-completion values as ``[N, N]`` (chosen = row, rejected = column)."""
  n = values.shape[0]
  return (jnp.broadcast_to(values[:, None], (n, n) + values.shape[1:]),
          jnp.broadcast_to(values[None, :], (n, n) + values.shape[1:]))


def make_loss_fn(method: str, hparams: Mapping[str, Any], task: Task
                 ) -> Callable[[dict, dict], jax.Array]:
  """``loss(params, problem)``: the method's expected loss over all pairs.

  ``params = {"logits": [P, V]}`` (SparsePO adds its two mask tables);
  ``problem = {"ref_table", "reward", "beta"}`` (beta traced, so a beta
  grid can be vmapped). Sequence-level losses see summed log-probabilities
  and the per-token means their papers use (every completion has L tokens).
  """
  length = float(task.length)
  h = dict(hparams)

  def loss_fn(params: dict, problem: dict) -> jax.Array:
    table = params["logits"]
    ref_table = jax.lax.stop_gradient(problem["ref_table"])
    reward, beta = problem["reward"], problem["beta"]
    logp = sequence_log_probs(table, task)
    ref_logp = sequence_log_probs(ref_table, task)
    weights = pair_weights(ref_logp, reward)
    chosen_weights, rejected_weights = weights.sum(1), weights.sum(0)
    lw, ll = _pairwise(logp)
    rw, rl = _pairwise(ref_logp)
    expect = lambda values: jnp.sum(weights * values)

    if method in ("dpo", "cdpo"):
      smoothing = h.get("label_smoothing", 0.0) if method == "cdpo" else 0.0
      return expect(preference.dpo(lw, ll, rw, rl, beta=beta, label_smoothing=smoothing))
    if method == "robust_dpo":
      return expect(preference.robust_dpo(lw, ll, rw, rl, beta=beta,
                                          epsilon=h["epsilon"]))
    if method == "ipo":
      return expect(preference.ipo(lw / length, ll / length, rw / length, rl / length,
                                   beta=beta))
    if method in F_DPO_ROWS:
      return expect(preference.f_dpo(lw, ll, rw, rl, divergence=F_DPO_ROWS[method],
                                     alpha=h.get("alpha", 0.5), beta=beta))
    if method in ("tdpo1", "tdpo2", "sparse_po"):
      # Chosen [N, 1] against rejected [1, N]: the token statistics are
      # computed once per completion and broadcast to the N x N pairs.
      as_chosen = lambda x: x[:, None]
      as_rejected = lambda x: x[None, :]
      policy_logits, reference_logits = token_logits(table, task), token_logits(
          ref_table, task)
      logits_w, logits_l = as_chosen(policy_logits), as_rejected(policy_logits)
      ref_w, ref_l = as_chosen(reference_logits), as_rejected(reference_logits)
      tokens = jnp.asarray(task.tokens)
      tokens_w, tokens_l = as_chosen(tokens), as_rejected(tokens)
      if method == "sparse_po":
        masks = {}
        for kind in ("reward", "kl"):
          per_token = jax.nn.sigmoid(jnp.take_along_axis(
              params[f"{kind}_mask"][task.prefix_index], task.tokens[..., None],
              axis=-1)[..., 0])
          masks[f"chosen_{kind}_mask"] = as_chosen(per_token)
          masks[f"rejected_{kind}_mask"] = as_rejected(per_token)
        return expect(preference.sparse_po(
            logits_w, logits_l, ref_w, ref_l, tokens_w, tokens_l, **masks,
            reward_l1=h["l1"], kl_l1=h["l1"], beta=beta))
      return expect(preference.tdpo(logits_w, logits_l, ref_w, ref_l, tokens_w,
                                    tokens_l, variant=1 if method == "tdpo1" else 2,
                                    alpha=h.get("alpha", 0.5), beta=beta))
    if method == "simpo":
      return expect(preference.simpo(lw / length, ll / length, beta=h["beta"],
                                     gamma_beta_ratio=h["gamma_beta_ratio"]))
    if method == "orpo":
      return expect(preference.orpo(lw / length, ll / length,
                                    odds_ratio_weight=h["odds_ratio_weight"]))
    if method == "kto":
      # A pair gives one desirable (chosen) and one undesirable (rejected)
      # example. The "mismatched" completions of a one-prompt task are draws
      # from the data, i.e. the reference: z0 = max(0, E_ref[log u]) = 0.
      z_estimate = jnp.sum(jnp.exp(ref_logp) * (logp - ref_logp))
      desirable = preference.kto(logp, ref_logp, jnp.ones_like(logp, bool),
                                 reference_point=z_estimate, beta=beta)
      undesirable = preference.kto(logp, ref_logp, jnp.zeros_like(logp, bool),
                                   reference_point=z_estimate, beta=beta)
      return (jnp.sum(chosen_weights * desirable)
              + jnp.sum(rejected_weights * undesirable))
    if method == "mapo":
      # A diffusion model's denoising MSE bounds its negative log-likelihood;
      # the analogue here is the per-token NLL.
      return expect(preference.mapo(-lw / length, -ll / length, beta=h["beta"],
                                    snr=h["snr"],
                                    num_train_timesteps=h["num_train_timesteps"]))
    if method == "npo":
      return jnp.sum(rejected_weights * preference.npo(logp, ref_logp, beta=beta))
    raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}.")

  return loss_fn


def initial_params(method: str, ref_table: np.ndarray,
                   hparams: Mapping[str, Any]) -> dict:
  """The policy starts at the reference; SparsePO's masks at sigmoid(init)."""
  params = {"logits": jnp.asarray(ref_table)}
  if method == "sparse_po":
    init = jnp.full(ref_table.shape, float(hparams["mask_init"]), ref_table.dtype)
    params.update(reward_mask=init, kl_mask=init)
  return params


# ----------------------------------------------------------------------------
# Training: full-batch Adam under lax.scan, vmapped over problems.
# ----------------------------------------------------------------------------


def make_trainer(method: str, hparams: Mapping[str, Any], task: Task, *,
                 learning_rate: float, num_steps: int, eval_every: int):
  """A jitted ``train(params, problem) -> (params, trajectory)`` for stacked members.

  The trajectory holds `exact_metrics` every ``eval_every`` steps (step 0
  first), each ``[num_evals + 1, members]``.
  """
  if num_steps % eval_every:
    raise ValueError(f"`train.num_steps`={num_steps} must be a multiple of "
                     f"`train.eval_every`={eval_every}.")
  loss_fn = make_loss_fn(method, hparams, task)
  tx = optax.adam(learning_rate)

  def train_one(params, problem):
    def step(carry, _):
      params, opt_state = carry
      grads = jax.grad(loss_fn)(params, problem)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    def chunk(carry, _):
      carry, _ = jax.lax.scan(step, carry, None, length=eval_every)
      metrics = exact_metrics(carry[0]["logits"], problem["ref_table"],
                              problem["reward"], task)
      return carry, metrics

    start = exact_metrics(params["logits"], problem["ref_table"], problem["reward"], task)
    (params, _), trajectory = jax.lax.scan(chunk, (params, tx.init(params)), None,
                                           length=num_steps // eval_every)
    trajectory = jax.tree.map(lambda s, t: jnp.concatenate([s[None], t]), start,
                              trajectory)
    return params, trajectory

  return jax.jit(jax.vmap(train_one, out_axes=(0, 1)))


def _stack(members: Sequence[dict]) -> dict:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *members)


# ----------------------------------------------------------------------------
# The experiment.
# ----------------------------------------------------------------------------


def _hparams(config: ml_collections.ConfigDict, method: str) -> dict:
  return dict(config.hparams.get(method, {}))


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[dict]:
  """Trains every method on every seed's exact pair distribution; writes the table."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  cfg = config.task
  task = make_task(cfg.vocab_size, cfg.length)
  seeds = [config.seed + i for i in range(config.num_seeds)]
  problems = [make_problem(s, task, cfg) for s in seeds]
  beta = float(config.beta)
  train_cfg = config.train
  timings = {}

  def train(method: str):
    """Trains every seed at once; returns final params and trajectories."""
    hparams = _hparams(config, method)
    params = _stack([initial_params(method, p["ref_table"], hparams) for p in problems])
    stacked = _stack([_problem_arrays(p, beta) for p in problems])
    trainer = make_trainer(method, hparams, task,
                           learning_rate=float(config.optimizer.learning_rate),
                           num_steps=int(train_cfg.num_steps),
                           eval_every=int(train_cfg.eval_every))
    start = time.perf_counter()
    final, trajectory = jax.device_get(trainer(params, stacked))
    timings[method] = time.perf_counter() - start
    return final, trajectory

  records, trajectories = [], {}
  for method in config.methods:
    if config.progress:
      print(f"[alignment/enumerable] training {METHODS[method]} on {len(seeds)} seeds",
            flush=True)
    final, trajectory = train(method)
    trajectories[method] = {k: np.asarray(v) for k, v in trajectory.items()}
    if method in F_DPO_ROWS or method == "dpo":
      check = jax.jit(jax.value_and_grad(make_loss_fn(method, _hparams(config, method),
                                                      task)))
    for i, seed in enumerate(seeds):
      record = {"method": METHODS[method], "seed": seed}
      record.update({k: float(v[-1, i]) for k, v in trajectory.items()})
      record["kl_half"] = float(trajectory["kl"][(trajectory["kl"].shape[0] - 1) // 2, i])
      if method in F_DPO_ROWS or method == "dpo":
        record.update(closed_form_check(
            check, F_DPO_ROWS.get(method, "reverse_kl"),
            float(_hparams(config, method).get("alpha", 0.5)), problems[i],
            final["logits"][i], beta, task))
      if method in ("tdpo1", "tdpo2"):
        # DPO's optimum (the reverse-KL closed form) at the same expected reward.
        frontier = dpo_optimum_at_reward(problems[i], record["reward"], task)
        record.update({f"dpo_matched_{k}": v for k, v in frontier.items()})
      records.append(record)

  rows = metrics_lib.aggregate_seeds(records, keys=("method",), metrics=METRIC_NAMES)
  for row in rows:  # Only f-DPO rows (and DPO) have a closed form to compare with.
    for key in ("tv_closed_form", "loss_gap"):
      values = [r[key] for r in records if r["method"] == row["method"] and key in r]
      if values:
        row[key] = float(np.mean(values))
        row[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
  reference_row = _reference_row(problems, task)
  rows.insert(0, reference_row)

  # Coverage at matched reward, on the closed-form curves of every seed.
  claim_divergences = tuple(config.coverage_divergences)
  betas_grid = np.geomspace(config.frontier.beta_min, config.frontier.beta_max,
                            int(config.frontier.num_betas))
  curves_per_seed = []
  for problem in problems:
    ref_probs = sequence_probs(problem["ref_table"], task)
    curves_per_seed.append({
        d: closed_form_curve(ref_probs, problem["reward"], betas_grid, d,
                             float(config.frontier.alpha))
        for d in claim_divergences})
  matched = [matched_reward_coverage(c, int(config.frontier.num_levels))
             for c in curves_per_seed]

  claims = judge_claims(records, matched, claim_divergences, config)
  plot(workdir / "reward_vs_kl.png", trajectories, curves_per_seed, records,
       title=(f"Enumerable task (V={cfg.vocab_size}, L={cfg.length}, beta={beta:g}; "
              f"{len(seeds)} seeds)"))
  metrics_lib.write_npz(workdir / "trajectories.npz",
                        **{f"{m}/{k}": v for m, t in trajectories.items() for k, v in t.items()})
  metrics_lib.write_json(workdir / "claims.json", claims, indent=2)
  metrics_lib.write_json(workdir / "timings.json", timings, indent=2)
  notes = _notes(config, seeds, claims)
  text = metrics_lib.write_results(
      workdir, rows, title="Preference optimisation on an enumerable policy (exact)",
      columns=("method", "reward", "kl", "kl_half", "entropy", "coverage",
               "seq_kl_chosen", "seq_kl_rejected", "tv_closed_form", "loss_gap",
               "seeds"),
      notes=notes)
  print(text)
  return rows


def _reference_row(problems: Sequence[dict], task: Task) -> dict:
  """The reference policy's own metrics (KL 0, coverage 1)."""
  values = [jax.device_get(exact_metrics(jnp.asarray(p["ref_table"]),
                                         jnp.asarray(p["ref_table"]),
                                         jnp.asarray(p["reward"]), task))
            for p in problems]
  records = [{"method": "reference", **{k: float(v) for k, v in m.items()},
              "kl_half": 0.0} for m in values]
  return metrics_lib.aggregate_seeds(records, keys=("method",),
                                     metrics=METRIC_NAMES)[0]


def _problem_arrays(problem: dict, beta: float) -> dict:
  return {"ref_table": jnp.asarray(problem["ref_table"]),
          "reward": jnp.asarray(problem["reward"]),
          "beta": jnp.asarray(beta, jnp.float32)}


def closed_form_check(value_and_grad_fn, divergence: str, alpha: float, problem: dict,
                      trained_table: np.ndarray, beta: float, task: Task) -> dict:
  """How a trained f-DPO policy compares with pi*_f on one problem.

  Returns the total variation between them, the trained policy's excess
  population loss over pi*_f's (negative would mean pi*_f is not the
  optimum), and the gradient norm of the population loss at pi*_f (0 at a
  stationary point).
  """
  target = closed_form_optimum(sequence_probs(problem["ref_table"], task),
                               problem["reward"], beta, divergence, alpha)
  arrays = _problem_arrays(problem, beta)
  star_table = jnp.asarray(table_from_sequence_probs(target, task), jnp.float32)
  loss_star, grad_star = value_and_grad_fn({"logits": star_table}, arrays)
  loss_trained, _ = value_and_grad_fn({"logits": jnp.asarray(trained_table)}, arrays)
  probs = sequence_probs(trained_table, task)
  return {"tv_closed_form": 0.5 * float(np.abs(probs - target).sum()),
          "loss_gap": float(loss_trained - loss_star),
          "grad_norm_at_closed_form": float(jnp.linalg.norm(grad_star["logits"]))}


def judge_claims(records: Sequence[dict], matched: Sequence[dict],
                 coverage_divergences: Sequence[str],
                 config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Marks each claim reproduced or not, with the numbers behind the verdict."""
  by = {}
  for r in records:
    by.setdefault(r["method"], {})[r["seed"]] = r
  seeds = sorted({r["seed"] for r in records})
  claims = {}
  tolerance = float(config.claims.closed_form_tv)

  f_rows = [METHODS[m] for m in F_DPO_ROWS if METHODS[m] in by]
  if f_rows:
    worst = lambda key, pick: {name: pick(by[name][s][key] for s in seeds)
                               for name in f_rows}
    min_gap = worst("loss_gap", min)
    max_grad = worst("grad_norm_at_closed_form", max)
    converged = {name: int(sum(by[name][s]["tv_closed_form"] < tolerance for s in seeds))
                 for name in f_rows}
    # The claim is about the optimum: pi*_f is stationary and no trained policy
    # has a lower population loss. Whether training reached it is reported.
    claims["f_dpo_closed_form"] = {
        "reproduced": (all(g >= -float(config.claims.loss_gap_tolerance)
                           for g in min_gap.values())
                       and all(g < float(config.claims.grad_norm_tolerance)
                               for g in max_grad.values())),
        "min_loss_gap_trained_minus_closed_form": min_gap,
        "max_grad_norm_at_closed_form": max_grad,
        "seeds_trained_within_tv": converged, "tv_tolerance": tolerance,
        "max_tv_per_divergence": worst("tv_closed_form", max)}

  # Coverage order at matched reward: each divergence above the next one.
  pairs_ok, total = 0, 0
  for m in matched:
    for a, b in zip(coverage_divergences[:-1], coverage_divergences[1:]):
      pairs_ok += int(np.sum(m[a] > m[b]))
      total += m[a].size
  claims["coverage_order_at_matched_reward"] = {
      "reproduced": pairs_ok == total,
      "order": list(coverage_divergences),
      "fraction_of_levels_and_seeds_in_order": pairs_ok / max(total, 1),
      "levels_per_seed": int(config.frontier.num_levels)}

  if METHODS["dpo"] in by:
    dpo = by[METHODS["dpo"]]
    for tdpo_name in ("tdpo1", "tdpo2"):
      name = METHODS[tdpo_name]
      if name not in by:
        continue
      below = [by[name][s]["seq_kl_rejected"] < dpo[s]["seq_kl_rejected"] for s in seeds]
      # "At similar reward": against DPO's optimum at TDPO's expected reward.
      matched_below = [by[name][s]["seq_kl_rejected"]
                       < by[name][s]["dpo_matched_seq_kl_rejected"] for s in seeds]
      claims[f"{tdpo_name}_seq_kl_rejected_below_dpo"] = {
          "reproduced": all(matched_below),
          "seeds_below_dpo_optimum_at_matched_reward": int(sum(matched_below)),
          "seeds_below_dpo_at_same_beta": int(sum(below)),
          "seeds": len(seeds),
          "reward_gap_to_dpo_at_same_beta": float(np.mean(
              [by[name][s]["reward"] - dpo[s]["reward"] for s in seeds])),
          "seq_kl_rejected_mean": float(np.mean(
              [by[name][s]["seq_kl_rejected"] for s in seeds])),
          "dpo_matched_seq_kl_rejected_mean": float(np.mean(
              [by[name][s]["dpo_matched_seq_kl_rejected"] for s in seeds]))}
    for free in ("simpo", "orpo"):
      name = METHODS[free]
      if name not in by:
        continue
      further = [by[name][s]["kl"] > dpo[s]["kl"] for s in seeds]
      growing = [by[name][s]["kl"] > by[name][s]["kl_half"] * (1 + 1e-3) for s in seeds]
      claims[f"{free}_kl_drifts_beyond_dpo"] = {
          "reproduced": all(further), "seeds_above_dpo": int(sum(further)),
          "seeds_still_growing": int(sum(growing)), "seeds": len(seeds)}
  return claims


def _notes(config, seeds, claims) -> str:
  lines = [
      f"Exact expectations over all {config.task.vocab_size}^{config.task.length} "
      f"completions; mean ± std over {len(seeds)} seeds (independent references and "
      f"rewards, seeds {seeds[0]}..{seeds[-1]}). Full-batch Adam "
      f"(lr {config.optimizer.learning_rate:g}) for {config.train.num_steps} steps from "
      f"the reference; beta = {config.beta:g} for every reference-based loss. "
      "`kl` is KL(pi || pi_ref) at the end, `kl_half` half-way; `coverage` is "
      "min_y pi(y)/pi_ref(y); `seq_kl_*` is TDPO's SeqKL averaged over the chosen / "
      "rejected answers of the pair distribution; `tv_closed_form` is the total "
      "variation to f-DPO's closed-form optimum pi*_f (DPO: the reverse-KL one) and "
      "`loss_gap` the trained policy's population loss minus pi*_f's.",
      "", "Claims:"]
  for name, claim in claims.items():
    verdict = "reproduced" if claim["reproduced"] else "NOT reproduced"
    details = ", ".join(f"{k}={_short(v)}" for k, v in claim.items() if k != "reproduced")
    lines.append(f"* {name}: **{verdict}** ({details})")
  lines.append("")
  lines.append("Plot: reward_vs_kl.png.")
  return "\n".join(lines)


def _short(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.3g}"
  if isinstance(value, dict):
    return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
  return str(value)


def plot(path: pathlib.Path, trajectories: Mapping[str, Mapping[str, np.ndarray]],
         curves_per_seed: Sequence[Mapping[str, Mapping[str, np.ndarray]]],
         records: Sequence[dict], *, title: str) -> None:
  """Seed 0. Left: expected reward vs KL(pi || pi_ref) along training, with DPO's
  optima over beta (the most reward any policy gets at a given KL). Right:
  coverage vs expected reward of each pi*_f over beta, and the trained policies."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
  colours = plt.get_cmap("tab20")
  seed0 = min(r["seed"] for r in records)
  first = curves_per_seed[0]
  if "reverse_kl" in first:
    frontier = first["reverse_kl"]
    left.plot(frontier["kl"], frontier["reward"], color="k", linewidth=1,
              label="DPO optimum over beta")
  linestyles = ["-", "--", ":", "-."]
  for index, (divergence, curve) in enumerate(first.items()):
    right.plot(curve["reward"], np.maximum(curve["coverage"], 1e-9), color="k",
               linestyle=linestyles[index % 4], label=f"pi*_f {divergence}")
  for index, (method, t) in enumerate(trajectories.items()):
    colour = colours(index)
    left.plot(t["kl"][:, 0], t["reward"][:, 0], color=colour, linewidth=0.8,
              alpha=0.6)
    r = next(r for r in records if r["method"] == METHODS[method] and r["seed"] == seed0)
    left.scatter(r["kl"], r["reward"], color=colour, s=20, zorder=3, label=METHODS[method])
    right.scatter(r["reward"], max(r["coverage"], 1e-9), color=colour, s=20, zorder=3)
  left.set_xlabel("KL(pi || pi_ref)")
  left.set_ylabel("expected reward")
  left.set_title("trained policies (lines: training, every eval)")
  left.legend(fontsize=6, ncol=2)
  right.set_yscale("log")
  right.set_ylim(5e-10, 2.0)
  right.set_xlabel("expected reward")
  right.set_ylabel("coverage  min pi / pi_ref  (floored at 1e-9)")
  right.set_title("closed-form optima over beta; dots: trained")
  right.legend(fontsize=7)
  fig.suptitle(title + ", seed 0")
  fig.tight_layout()
  figures.save_figure(fig, path, dpi=120)
