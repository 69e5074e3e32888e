"""Bad inputs to every public loss: each raises a ValueError naming the argument.

A catalogue, one row per mistake a user can plausibly make with the public
functions of `divlab.losses` (distillation, unlearning, bottleneck, diffusion,
supervised, reductions, preference, policy, sequence) and
`divlab.divergences.fused`: wrong shapes (mismatched leading axes, wrong rank,
a class mask passed as an example mask), wrong dtypes (integer logits, float
labels, float masks) and options outside their domain (unknown names,
non-positive temperatures, weights out of range, a missing normalizer). Every
row checks that the message names the argument in backticks, as a user reads
it. All checks are static (shapes, dtypes, Python values), so no row needs
`jit`; the last test shows that the same calls still trace under `jit`.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divlab.diffusion import linear_schedule
from divlab.divergences import fused
from divlab.losses import bottleneck
from divlab.losses import diffusion
from divlab.losses import distillation as kd
from divlab.losses import policy
from divlab.losses import preference as po
from divlab.losses import reductions
from divlab.losses import sequence as seq
from divlab.losses import supervised
from divlab.losses import unlearning as ul

F32 = np.float32

# Classification: 2 examples, 3 classes.
S = np.array([[1.0, 0.0, -1.0], [0.5, 0.2, 0.1]], F32)
T = np.array([[0.0, 1.0, 0.5], [0.3, -0.2, 0.4]], F32)
Y = np.array([0, 2], np.int32)
ROW_MASK = np.array([True, False])
# Language models: 2 sequences, 3 tokens, 4 vocabulary entries.
LM = np.linspace(-1.0, 1.0, 24, dtype=F32).reshape(2, 3, 4)
TOKENS = np.array([[0, 1, 2], [3, 2, 1]], np.int32)
TOKEN_MASK = np.array([[True, True, False], [True, False, False]])
# Per-example log-likelihoods and per-token log-probabilities.
LOGP = np.array([-1.0, -2.0], F32)
LOGP2 = np.array([-1.5, -0.5], F32)
TOKEN_LOGP = np.array([[-1.0, -0.5, -2.0], [-0.2, -0.3, -0.4]], F32)
# Bottleneck regression: 4 examples.
PRED = np.array([[0.1], [0.4], [0.2], [0.9]], F32)
TARGET = np.array([[0.0], [0.5], [0.1], [1.0]], F32)
X = np.arange(8, dtype=F32).reshape(4, 2) / 8
Z = np.array([[0.1, 0.2], [0.0, -0.3], [0.5, 0.1], [-0.2, 0.4]], F32)
# Fused linear: 4 tokens, hidden 3, vocabulary 5.
H = np.linspace(-1.0, 1.0, 12, dtype=F32).reshape(4, 3)
W = np.linspace(-0.5, 0.5, 15, dtype=F32).reshape(3, 5)

KEY = jax.random.key(0)


def zero_eps(x, t, labels):
  del t, labels
  return jnp.zeros_like(x)


def grads(value):
  return {"w": jnp.full((2,), value, jnp.float32)}


def gu_update(updates, metric="euclidean"):
  tx = ul.gu_project(metric=metric)
  params = {"w": jnp.zeros(2)}
  return tx.update(updates, tx.init(params), params)


# Each row: (id, call, the argument the message must name).
CASES = [
    # --- reductions.reduce_loss ---------------------------------------------
    ("reduce_loss where shape", lambda: reductions.reduce_loss(
        LOGP, "mean", where=np.ones(3, bool)), "where"),
    ("reduce_loss where float", lambda: reductions.reduce_loss(
        LOGP, "mean", where=np.array([1.0, 0.5], F32)), "where"),
    ("reduce_loss values int", lambda: reductions.reduce_loss(
        np.array([1, 2]), "mean"), "values"),
    ("reduce_loss reduction", lambda: reductions.reduce_loss(LOGP, "avg"), "reduction"),
    ("reduce_loss missing normalizer", lambda: reductions.reduce_loss(
        LOGP, "normalizer"), "normalizer"),
    ("reduce_loss stray normalizer", lambda: reductions.reduce_loss(
        LOGP, "mean", normalizer=4.0), "normalizer"),
    ("reduce_loss normalizer shape", lambda: reductions.reduce_loss(
        LOGP, "normalizer", normalizer=np.ones(2, F32)), "normalizer"),
    ("reduce_loss normalizer zero", lambda: reductions.reduce_loss(
        LOGP, "normalizer", normalizer=0), "normalizer"),
    ("reduce_loss sequence_mean scalar", lambda: reductions.reduce_loss(
        F32(1.0), "sequence_mean"), "values"),
    ("reduce_loss where enlarges values", lambda: reductions.reduce_loss(
        LOGP, "sum", where=np.ones((3, 2), bool)), "where"),
    # --- supervised ---------------------------------------------------------
    ("softmax_cross_entropy labels shape", lambda: supervised.softmax_cross_entropy(
        S, Y[:1]), "labels"),
    ("softmax_cross_entropy labels float", lambda: supervised.softmax_cross_entropy(
        S, Y.astype(F32)), "labels"),
    ("softmax_cross_entropy logits int", lambda: supervised.softmax_cross_entropy(
        S.astype(np.int32), Y), "logits"),
    ("softmax_cross_entropy logits scalar", lambda: supervised.softmax_cross_entropy(
        F32(1.0), np.int32(0)), "logits"),
    ("softmax_cross_entropy class mask as where",
     lambda: supervised.softmax_cross_entropy(S, Y, where=np.ones(3, bool)), "where"),
    ("softmax_cross_entropy where float", lambda: supervised.softmax_cross_entropy(
        S, Y, where=np.ones(2, F32)), "where"),
    ("softmax_cross_entropy reduction", lambda: supervised.softmax_cross_entropy(
        S, Y, reduction="avg"), "reduction"),
    ("squared_error shapes", lambda: supervised.squared_error(PRED, TARGET[:, 0]),
     "targets"),
    ("squared_error scalar", lambda: supervised.squared_error(F32(1.0), F32(2.0)),
     "predictions"),
    ("squared_error int", lambda: supervised.squared_error(
        np.ones((2, 1), np.int32), np.ones((2, 1), np.int32)), "predictions"),
    ("squared_error where shape", lambda: supervised.squared_error(
        PRED, TARGET, where=np.ones(3, bool)), "where"),
    ("squared_error reduction", lambda: supervised.squared_error(
        PRED, TARGET, reduction="avg"), "reduction"),
    ("squared_error where float", lambda: supervised.squared_error(
        PRED, TARGET, where=np.ones(4, F32)), "where"),
    # --- sequence -----------------------------------------------------------
    ("token_log_probs targets shape", lambda: seq.token_log_probs(LM, TOKENS[:, :2]),
     "targets"),
    ("token_log_probs targets float", lambda: seq.token_log_probs(
        LM, TOKENS.astype(F32)), "targets"),
    ("token_log_probs logits int", lambda: seq.token_log_probs(
        LM.astype(np.int32), TOKENS), "logits"),
    ("token_log_probs logits rank", lambda: seq.token_log_probs(LM[0, 0], TOKENS[0, 0]),
     "logits"),
    ("token_log_probs where shape", lambda: seq.token_log_probs(
        LM, TOKENS, where=np.ones((2, 4), bool)), "where"),
    ("token_log_probs where float", lambda: seq.token_log_probs(
        LM, TOKENS, where=TOKEN_MASK.astype(F32)), "where"),
    ("sequence_sum scalar", lambda: seq.sequence_sum(F32(1.0)), "token_values"),
    ("sequence_sum int", lambda: seq.sequence_sum(TOKENS), "token_values"),
    ("sequence_sum where shape", lambda: seq.sequence_sum(
        TOKEN_LOGP, np.ones((3, 3), bool)), "where"),
    ("sequence_mean scalar", lambda: seq.sequence_mean(F32(1.0)), "token_values"),
    ("sequence_mean where float", lambda: seq.sequence_mean(
        TOKEN_LOGP, TOKEN_MASK.astype(F32)), "where"),
    ("sequence_log_likelihood targets shape", lambda: seq.sequence_log_likelihood(
        LM, TOKENS[:1]), "targets"),
    ("sequence_log_likelihood where shape", lambda: seq.sequence_log_likelihood(
        LM, TOKENS, np.ones((2, 2), bool)), "where"),
    ("sequence_mean_log_likelihood targets float",
     lambda: seq.sequence_mean_log_likelihood(LM, TOKENS.astype(F32)), "targets"),
    ("sequence_mean_log_likelihood where shape",
     lambda: seq.sequence_mean_log_likelihood(LM, TOKENS, np.ones((2, 2), bool)),
     "where"),
    ("token_kl shapes", lambda: seq.token_kl(LM, LM[:, :, :3]), "q_logits"),
    ("token_kl rank", lambda: seq.token_kl(LM[0, 0], LM[0, 0]), "p_logits"),
    ("token_kl where shape", lambda: seq.token_kl(LM, LM, np.ones((2, 4), bool)),
     "where"),
    ("token_entropy rank", lambda: seq.token_entropy(LM[0, 0]), "logits"),
    ("token_entropy int", lambda: seq.token_entropy(TOKENS[..., None]), "logits"),
    ("token_entropy where shape", lambda: seq.token_entropy(
        LM, np.ones((2, 4), bool)), "where"),
    ("sequence_sum where enlarges values", lambda: seq.sequence_sum(
        TOKEN_LOGP[0], TOKEN_MASK), "where"),
    ("token_kl int", lambda: seq.token_kl(TOKENS[..., None], TOKENS[..., None]),
     "p_logits"),
    # --- distillation: Hinton KD and its divergence swaps -------------------
    ("kd shapes", lambda: kd.kd(S, T[:, :2]), "teacher_logits"),
    ("kd student int", lambda: kd.kd(S.astype(np.int32), T), "student_logits"),
    ("kd labels float", lambda: kd.kd(S, T, Y.astype(F32), alpha=0.5), "labels"),
    ("kd labels shape", lambda: kd.kd(S, T, Y[:1], alpha=0.5), "labels"),
    ("kd labels missing", lambda: kd.kd(S, T, alpha=0.5), "labels"),
    ("kd class mask as where", lambda: kd.kd(S, T, where=np.ones(3, bool)), "where"),
    ("kd where float", lambda: kd.kd(S, T, where=np.ones(2, F32)), "where"),
    ("kd class_where shape", lambda: kd.kd(S, T, class_where=np.ones(2, bool)),
     "class_where"),
    ("kd class_where float", lambda: kd.kd(S, T, class_where=np.ones(3, F32)),
     "class_where"),
    ("kd temperature 0", lambda: kd.kd(S, T, temperature=0.0), "temperature"),
    ("kd temperature inf", lambda: kd.kd(S, T, temperature=np.inf), "temperature"),
    ("kd alpha > 1", lambda: kd.kd(S, T, Y, alpha=1.5), "alpha"),
    ("kd reduction", lambda: kd.kd(S, T, reduction="avg"), "reduction"),
    ("kd temperature str", lambda: kd.kd(S, T, temperature="2"), "temperature"),
    ("reverse_kl_kd shapes", lambda: kd.reverse_kl_kd(S, T[:1]), "teacher_logits"),
    ("reverse_kl_kd temperature", lambda: kd.reverse_kl_kd(S, T, temperature=-1.0),
     "temperature"),
    ("reverse_kl_kd alpha < 0", lambda: kd.reverse_kl_kd(S, T, Y, alpha=-0.1), "alpha"),
    ("js_kd shapes", lambda: kd.js_kd(S, T[:, :2]), "teacher_logits"),
    ("js_kd beta > 1", lambda: kd.js_kd(S, T, beta=1.5), "beta"),
    ("js_kd beta not scalar", lambda: kd.js_kd(S, T, beta=np.full(2, 0.5, F32)),
     "beta"),
    ("js_kd temperature", lambda: kd.js_kd(S, T, temperature=0.0), "temperature"),
    ("tv_kd shapes", lambda: kd.tv_kd(S, T[:, :2]), "teacher_logits"),
    ("tv_kd alpha", lambda: kd.tv_kd(S, T, Y, alpha=2.0), "alpha"),
    ("tv_kd temperature not scalar", lambda: kd.tv_kd(
        S, T, temperature=np.ones(2, F32)), "temperature"),
    ("kd alpha not scalar", lambda: kd.kd(S, T, Y, alpha=np.full(2, 0.5, F32)),
     "alpha"),
    ("kd missing normalizer", lambda: kd.kd(S, T, reduction="normalizer"), "normalizer"),
    # --- distillation: fused linear -----------------------------------------
    ("fused_linear_distill weight rows", lambda: kd.fused_linear_distill(
        H, W[:2], H, W), "student_weight"),
    ("fused_linear_distill teacher tokens", lambda: kd.fused_linear_distill(
        H, W, H[:3], W), "teacher_hidden"),
    ("fused_linear_distill hidden int", lambda: kd.fused_linear_distill(
        H.astype(np.int32), W, H, W), "student_hidden"),
    ("fused_linear_distill divergence", lambda: kd.fused_linear_distill(
        H, W, H, W, divergence="hellinger"), "divergence"),
    ("fused_linear_distill temperature", lambda: kd.fused_linear_distill(
        H, W, H, W, temperature=0.0), "temperature"),
    ("fused_linear_distill beta", lambda: kd.fused_linear_distill(
        H, W, H, W, divergence="js", beta=-0.5), "beta"),
    ("fused_linear_distill chunk_size", lambda: kd.fused_linear_distill(
        H, W, H, W, chunk_size=0), "chunk_size"),
    ("fused_linear_distill where shape", lambda: kd.fused_linear_distill(
        H, W, H, W, where=np.ones(3, bool)), "where"),
    ("fused_linear_distill missing normalizer", lambda: kd.fused_linear_distill(
        H, W, H, W, reduction="normalizer"), "normalizer"),
    ("fused_linear_distill reduction", lambda: kd.fused_linear_distill(
        H, W, H, W, reduction="avg"), "reduction"),
    ("fused_linear_distill bias shape", lambda: kd.fused_linear_distill(
        H, W, H, W, student_bias=np.zeros(4, F32)), "student_bias"),
    # --- distillation: AlphaNet, Sinkhorn, ranking, DIST, dual head, OFA ----
    ("alpha_kd shapes", lambda: kd.alpha_kd(S, T[:1]), "teacher_logits"),
    ("alpha_kd alpha_min = alpha_max", lambda: kd.alpha_kd(S, T, alpha_min=1.0),
     "alpha_min"),
    ("alpha_kd alpha_max inf", lambda: kd.alpha_kd(S, T, alpha_max=np.inf),
     "alpha_max"),
    ("alpha_kd iw_clip", lambda: kd.alpha_kd(S, T, iw_clip=0.0), "iw_clip"),
    ("alpha_kd where shape", lambda: kd.alpha_kd(S, T, where=np.ones(3, bool)), "where"),
    ("alpha_kd reduction", lambda: kd.alpha_kd(S, T, reduction="avg"), "reduction"),
    ("sinkhorn_kd_plan shapes", lambda: kd.sinkhorn_kd_plan(S, T[:1]),
     "teacher_logits"),
    ("sinkhorn_kd_plan rank", lambda: kd.sinkhorn_kd_plan(LM, LM), "student_logits"),
    ("sinkhorn_kd_plan epsilon", lambda: kd.sinkhorn_kd_plan(S, T, epsilon=0.0),
     "epsilon"),
    ("sinkhorn_kd_plan num_iters", lambda: kd.sinkhorn_kd_plan(S, T, num_iters=0),
     "num_iters"),
    ("sinkhorn_kd_plan num_iters float", lambda: kd.sinkhorn_kd_plan(
        S, T, num_iters=2.5), "num_iters"),
    ("sinkhorn_kd temperature", lambda: kd.sinkhorn_kd(S, T, temperature=0.0),
     "temperature"),
    ("sinkhorn_kd where shape", lambda: kd.sinkhorn_kd(S, T, where=np.ones(3, bool)),
     "where"),
    ("sinkhorn_kd shapes", lambda: kd.sinkhorn_kd(S, T[:, :2]), "teacher_logits"),
    ("sinkhorn_kd weight", lambda: kd.sinkhorn_kd(S, T, weight=-1.0), "weight"),
    ("plackett_luce ranking shape", lambda: kd.plackett_luce(
        S, np.array([[0, 1], [1, 0]]), np.ones((2, 3), F32)), "ranking"),
    ("plackett_luce ranking float", lambda: kd.plackett_luce(
        S, np.array([[0, 1, 2], [2, 1, 0]], F32), np.ones((2, 3), F32)), "ranking"),
    ("plackett_luce weights shape", lambda: kd.plackett_luce(
        S, np.array([[0, 1, 2], [2, 1, 0]]), np.ones((2, 2), F32)), "weights"),
    ("plackett_luce reduction", lambda: kd.plackett_luce(
        S, np.array([[0, 1, 2], [2, 1, 0]]), np.ones((2, 3), F32), reduction="x"),
     "reduction"),
    ("pld labels shape", lambda: kd.pld(S, T, Y[:1]), "labels"),
    ("pld labels float", lambda: kd.pld(S, T, Y.astype(F32)), "labels"),
    ("pld temperature", lambda: kd.pld(S, T, Y, temperature=0.0), "temperature"),
    ("pld shapes", lambda: kd.pld(S, T[:, :2], Y), "teacher_logits"),
    ("listmle labels shape", lambda: kd.listmle(S, T, Y[:1]), "labels"),
    ("listmle shapes", lambda: kd.listmle(S, T[:1], Y), "teacher_logits"),
    ("listmle reduction", lambda: kd.listmle(S, T, Y, reduction="avg"), "reduction"),
    ("dist rank", lambda: kd.dist(LM, LM), "student_logits"),
    ("dist shapes", lambda: kd.dist(S, T[:1]), "teacher_logits"),
    ("dist temperature", lambda: kd.dist(S, T, temperature=0.0), "temperature"),
    ("dist eps", lambda: kd.dist(S, T, eps=-1e-8), "eps"),
    ("dist where shape", lambda: kd.dist(S, T, where=np.ones(3, bool)), "where"),
    ("dist beta", lambda: kd.dist(S, T, beta=-1.0), "beta"),
    ("dual_head_kd shapes", lambda: kd.dual_head_kd(S, T[:, :2], T), "logit_head_logits"),
    ("dual_head_kd logit_loss", lambda: kd.dual_head_kd(S, S, T, logit_loss="l1"),
     "logit_loss"),
    ("dual_head_kd alpha", lambda: kd.dual_head_kd(S, S, T, Y, alpha=1.5), "alpha"),
    ("dual_head_kd temperature", lambda: kd.dual_head_kd(S, S, T, temperature=0.0),
     "temperature"),
    ("dual_head_kd logit_weight", lambda: kd.dual_head_kd(S, S, T, logit_weight=-1.0),
     "logit_weight"),
    ("dual_head_kd labels missing", lambda: kd.dual_head_kd(S, S, T, alpha=0.5),
     "labels"),
    ("ofa_target labels shape", lambda: kd.ofa_target(T, Y[:1]), "labels"),
    ("ofa_target labels float", lambda: kd.ofa_target(T, Y.astype(F32)), "labels"),
    ("ofa_target gamma", lambda: kd.ofa_target(T, Y, 0.0), "gamma"),
    ("ofa_target teacher int", lambda: kd.ofa_target(T.astype(np.int32), Y),
     "teacher_logits"),
    ("ofa_target class_where shape", lambda: kd.ofa_target(
        T, Y, class_where=np.ones(2, bool)), "class_where"),
    ("ofa_kd shapes", lambda: kd.ofa_kd(S, T[:, :2], Y), "teacher_logits"),
    ("ofa_kd gamma", lambda: kd.ofa_kd(S, T, Y, gamma=-1.0), "gamma"),
    ("ofa_kd temperature", lambda: kd.ofa_kd(S, T, Y, temperature=0.0), "temperature"),
    ("ofa_kd where shape", lambda: kd.ofa_kd(S, T, Y, where=np.ones(3, bool)), "where"),
    ("alpha_kd iw_clip not scalar", lambda: kd.alpha_kd(S, T, iw_clip=np.ones(3, F32)),
     "iw_clip"),
    ("sinkhorn_kd epsilon not scalar", lambda: kd.sinkhorn_kd(
        S, T, epsilon=np.ones(3, F32)), "epsilon"),
    ("sinkhorn_kd num_iters bool", lambda: kd.sinkhorn_kd(S, T, num_iters=True),
     "num_iters"),
    ("dist gamma", lambda: kd.dist(S, T, gamma=-1.0), "gamma"),
    ("dual_head_kd prob head shape", lambda: kd.dual_head_kd(S[:1], S, T),
     "prob_head_logits"),
    ("dual_head_kd labels float", lambda: kd.dual_head_kd(
        S, S, T, Y.astype(F32), alpha=0.5), "labels"),
    ("ofa_kd gamma not scalar", lambda: kd.ofa_kd(S, T, Y, gamma=np.ones(3, F32)),
     "gamma"),
    # --- unlearning ---------------------------------------------------------
    ("gradient_ascent int", lambda: ul.gradient_ascent(np.array([1, 2])),
     "forget_logp"),
    ("gradient_ascent where shape", lambda: ul.gradient_ascent(
        LOGP, where=np.ones(3, bool)), "where"),
    ("gradient_ascent where float", lambda: ul.gradient_ascent(
        LOGP, where=np.ones(2, F32)), "where"),
    ("gradient_ascent reduction", lambda: ul.gradient_ascent(LOGP, reduction="avg"),
     "reduction"),
    ("gradient_ascent missing normalizer", lambda: ul.gradient_ascent(
        LOGP, reduction="normalizer"), "normalizer"),
    ("grad_diff shapes", lambda: ul.grad_diff(LOGP, LOGP[:1]), "retain_logp"),
    ("grad_diff retain_weight", lambda: ul.grad_diff(LOGP, LOGP2, retain_weight=-1.0),
     "retain_weight"),
    ("grad_diff retain_where shape", lambda: ul.grad_diff(
        LOGP, LOGP2, retain_where=np.ones(3, bool)), "retain_where"),
    ("grad_diff forget_where shape", lambda: ul.grad_diff(
        LOGP, LOGP2, forget_where=np.ones(3, bool)), "forget_where"),
    ("grad_diff reduction", lambda: ul.grad_diff(LOGP, LOGP2, reduction="avg"),
     "reduction"),
    ("npo shapes", lambda: ul.npo(LOGP, LOGP[:1]), "forget_ref_logp"),
    ("npo beta", lambda: ul.npo(LOGP, LOGP2, beta=0.0), "beta"),
    ("npo beta None", lambda: ul.npo(LOGP, LOGP2, beta=None), "beta"),
    ("npo where shape", lambda: ul.npo(LOGP, LOGP2, where=np.ones(3, bool)), "where"),
    ("npo normalizer stray", lambda: ul.npo(LOGP, LOGP2, normalizer=2.0),
     "normalizer"),
    ("npo_rt shapes", lambda: ul.npo_rt(LOGP, LOGP2[:1], LOGP), "forget_ref_logp"),
    ("npo_rt retain shape", lambda: ul.npo_rt(LOGP, LOGP2, LOGP[:1]), "retain_logp"),
    ("npo_rt beta", lambda: ul.npo_rt(LOGP, LOGP2, LOGP, beta=-1.0), "beta"),
    ("npo_rt retain_weight", lambda: ul.npo_rt(LOGP, LOGP2, LOGP, retain_weight=-1.0),
     "retain_weight"),
    ("npo_kl retain shapes", lambda: ul.npo_kl(LOGP, LOGP2, S, T[:, :2]),
     "retain_ref_logits"),
    ("npo_kl retain rank", lambda: ul.npo_kl(LOGP, LOGP2, S[0], T[0]), "retain_logits"),
    ("npo_kl forget shapes", lambda: ul.npo_kl(LOGP, LOGP2[:1], S, T),
     "forget_ref_logp"),
    ("npo_kl kl_weight", lambda: ul.npo_kl(LOGP, LOGP2, S, T, kl_weight=-1.0),
     "kl_weight"),
    ("npo_kl beta", lambda: ul.npo_kl(LOGP, LOGP2, S, T, beta=0.0), "beta"),
    ("npo_kl retain_where shape", lambda: ul.npo_kl(
        LOGP, LOGP2, S, T, retain_where=np.ones(3, bool)), "retain_where"),
    ("simnpo lengths shape", lambda: ul.simnpo(LOGP, np.ones(3)), "lengths"),
    ("simnpo beta", lambda: ul.simnpo(LOGP, np.ones(2), beta=0.0), "beta"),
    ("simnpo where shape", lambda: ul.simnpo(LOGP, np.ones(2), where=np.ones(3, bool)),
     "where"),
    ("simnpo reduction", lambda: ul.simnpo(LOGP, np.ones(2), reduction="avg"),
     "reduction"),
    ("project_forget_gradient structure", lambda: ul.project_forget_gradient(
        grads(1.0), {"v": jnp.ones((1, 2))}), "retain_directions"),
    ("project_forget_gradient leaf shape", lambda: ul.project_forget_gradient(
        grads(1.0), {"w": jnp.ones((1, 3))}), "retain_directions"),
    ("project_forget_gradient metric_weights shape", lambda: ul.project_forget_gradient(
        grads(1.0), {"w": jnp.ones((1, 2))}, metric_weights={"w": jnp.ones(3)}),
     "metric_weights"),
    ("project_forget_gradient rank_tolerance", lambda: ul.project_forget_gradient(
        grads(1.0), {"w": jnp.ones((1, 2))}, rank_tolerance=0.0), "rank_tolerance"),
    ("gu_inputs no retain", lambda: ul.gu_inputs(grads(1.0)), "retain_grads"),
    ("gu_inputs structure", lambda: ul.gu_inputs(grads(1.0), {"v": jnp.ones(2)}),
     "retain_grads"),
    ("gu_inputs leaf shape", lambda: ul.gu_inputs(grads(1.0), {"w": jnp.ones(3)}),
     "retain_grads"),
    ("gu_project metric", lambda: ul.gu_project(metric="sgd"), "metric"),
    ("gu_project b2", lambda: ul.gu_project(b2=1.0), "b2"),
    ("gu_project eps", lambda: ul.gu_project(eps=0.0), "eps"),
    ("gu_project rank_tolerance", lambda: ul.gu_project(rank_tolerance=-1.0),
     "rank_tolerance"),
    ("gu_project updates", lambda: gu_update(grads(1.0)), "updates"),
    ("npo beta not scalar", lambda: ul.npo(LOGP, LOGP2, beta=np.ones(3, F32)), "beta"),
    ("npo_rt forget_where float", lambda: ul.npo_rt(
        LOGP, LOGP2, LOGP, forget_where=np.ones(2, F32)), "forget_where"),
    ("npo_kl retain int", lambda: ul.npo_kl(
        LOGP, LOGP2, S.astype(np.int32), T.astype(np.int32)), "retain_logits"),
    ("npo_kl forget_where shape", lambda: ul.npo_kl(
        LOGP, LOGP2, S, T, forget_where=np.ones(3, bool)), "forget_where"),
    ("simnpo gamma not scalar", lambda: ul.simnpo(LOGP, np.ones(2), gamma=np.ones(3)),
     "gamma"),
    ("project_forget_gradient empty", lambda: ul.project_forget_gradient({}, {}),
     "forget_grads"),
    ("gu_project retain leaf shape", lambda: gu_update(
        {"forget": grads(1.0), "retain": {"w": jnp.ones((1, 3))}}), "retain"),
    # --- bottleneck ---------------------------------------------------------
    ("mse shapes", lambda: bottleneck.mse(PRED, TARGET[:3]), "targets"),
    ("mse rank", lambda: bottleneck.mse(PRED[:, 0], TARGET[:, 0]), "predictions"),
    ("vib shapes", lambda: bottleneck.vib(PRED, TARGET, Z, Z[:, :1], beta=0.1),
     "log_variance"),
    ("vib batch", lambda: bottleneck.vib(PRED, TARGET, Z[:3], Z[:3], beta=0.1), "mean"),
    ("vib beta", lambda: bottleneck.vib(PRED, TARGET, Z, Z, beta=-0.1), "beta"),
    ("vib decoder_variance", lambda: bottleneck.vib(
        PRED, TARGET, Z, Z, beta=0.1, decoder_variance=0.0), "decoder_variance"),
    ("nib batch", lambda: bottleneck.nib(PRED, TARGET, Z[:3], beta=0.1), "mean"),
    ("nib beta", lambda: bottleneck.nib(PRED, TARGET, Z, beta=-1.0), "beta"),
    ("nib noise_log_variance shape", lambda: bottleneck.nib(
        PRED, TARGET, Z, beta=0.1, noise_log_variance=np.zeros(2, F32)),
     "noise_log_variance"),
    ("squared_nib batch", lambda: bottleneck.squared_nib(PRED, TARGET, Z[:3], beta=0.1),
     "mean"),
    ("squared_nib beta", lambda: bottleneck.squared_nib(PRED, TARGET, Z, beta=-1.0),
     "beta"),
    ("cs_ib batch", lambda: bottleneck.cs_ib(PRED, TARGET, X[:3], Z, beta=0.1), "x"),
    ("cs_ib t batch", lambda: bottleneck.cs_ib(PRED, TARGET, X, Z[:3], beta=0.1), "t"),
    ("cs_ib prediction", lambda: bottleneck.cs_ib(
        PRED, TARGET, X, Z, beta=0.1, prediction="mse"), "prediction"),
    ("cs_ib bandwidth", lambda: bottleneck.cs_ib(
        PRED, TARGET, X, Z, beta=0.1, bandwidth=0.0), "bandwidth"),
    ("cs_ib bandwidth name", lambda: bottleneck.cs_ib(
        PRED, TARGET, X, Z, beta=0.1, bandwidth="silverman"), "bandwidth"),
    ("cs_ib beta", lambda: bottleneck.cs_ib(PRED, TARGET, X, Z, beta=-0.1), "beta"),
    ("hsic_bottleneck batch", lambda: bottleneck.hsic_bottleneck(
        PRED, TARGET, X, Z[:3], beta=0.1), "t"),
    ("hsic_bottleneck lambda_y", lambda: bottleneck.hsic_bottleneck(
        PRED, TARGET, X, Z, beta=0.1, lambda_y=-1.0), "lambda_y"),
    ("hsic_bottleneck beta", lambda: bottleneck.hsic_bottleneck(
        PRED, TARGET, X, Z, beta=-0.1), "beta"),
    ("hsic_bottleneck bandwidth", lambda: bottleneck.hsic_bottleneck(
        PRED, TARGET, X, Z, beta=0.1, bandwidth=-1.0), "bandwidth"),
    ("gaussian_kl_to_standard_normal shapes",
     lambda: bottleneck.gaussian_kl_to_standard_normal(Z, Z[:, :1]), "log_variance"),
    ("gaussian_kl_to_standard_normal int",
     lambda: bottleneck.gaussian_kl_to_standard_normal(np.ones((2, 2), np.int32),
                                                       np.ones((2, 2), np.int32)),
     "mean"),
    ("kde_mutual_information rank", lambda: bottleneck.kde_mutual_information(
        Z[:, 0]), "mean"),
    ("kde_mutual_information noise shape", lambda: bottleneck.kde_mutual_information(
        Z, noise_log_variance=np.zeros(2, F32)), "noise_log_variance"),
    ("reparameterize shapes", lambda: bottleneck.reparameterize(KEY, Z, Z[:3]),
     "log_variance"),
    ("reparameterize int", lambda: bottleneck.reparameterize(
        KEY, np.ones((2, 2), np.int32), np.zeros((2, 2), np.int32)), "mean"),
    ("resolve_bandwidth name", lambda: bottleneck.resolve_bandwidth("scott", Z),
     "bandwidth"),
    ("resolve_bandwidth zero", lambda: bottleneck.resolve_bandwidth(0.0, Z),
     "bandwidth"),
    ("resolve_bandwidth median without samples", lambda: bottleneck.resolve_bandwidth(
        "median"), "samples"),
    ("vib beta not scalar", lambda: bottleneck.vib(
        PRED, TARGET, Z, Z, beta=np.ones(3, F32)), "beta"),
    ("cs_ib x int", lambda: bottleneck.cs_ib(
        PRED, TARGET, X.astype(np.int32), Z, beta=0.1), "x"),
    # --- diffusion ----------------------------------------------------------
    ("eps_prediction_error shapes", lambda: diffusion.eps_prediction_error(
        Z, Z[:3]), "eps"),
    ("eps_prediction_error scalar", lambda: diffusion.eps_prediction_error(
        F32(1.0), F32(1.0)), "eps"),
    ("eps_prediction_error where shape", lambda: diffusion.eps_prediction_error(
        Z, Z, where=np.ones(3, bool)), "where"),
    ("eps_prediction_error where float", lambda: diffusion.eps_prediction_error(
        Z, Z, where=np.ones(4, F32)), "where"),
    ("eps_prediction_error int", lambda: diffusion.eps_prediction_error(
        np.ones((2, 2), np.int32), np.ones((2, 2), np.int32)), "eps_pred"),
    ("eps_prediction_error reduction", lambda: diffusion.eps_prediction_error(
        Z, Z, reduction="avg"), "reduction"),
    ("denoising_score_matching p_uncond", lambda: diffusion.denoising_score_matching(
        zero_eps, Z, KEY, linear_schedule(), p_uncond=1.5), "p_uncond"),
    ("denoising_score_matching labels shape", lambda: diffusion.denoising_score_matching(
        zero_eps, Z, KEY, linear_schedule(), labels=np.zeros(3, np.int32),
        null_label=2), "labels"),
    ("denoising_score_matching labels float", lambda: diffusion.denoising_score_matching(
        zero_eps, Z, KEY, linear_schedule(), labels=np.zeros(4, F32), null_label=2),
     "labels"),
    ("denoising_score_matching null_label missing",
     lambda: diffusion.denoising_score_matching(
         zero_eps, Z, KEY, linear_schedule(), labels=np.zeros(4, np.int32)),
     "null_label"),
    ("denoising_score_matching x0 scalar", lambda: diffusion.denoising_score_matching(
        zero_eps, F32(1.0), KEY, linear_schedule()), "x0"),
    ("denoising_score_matching eps_fn output", lambda: diffusion.denoising_score_matching(
        lambda x, t, y: x[:, :1], Z, KEY, linear_schedule()), "eps_fn"),
    ("denoising_score_matching schedule", lambda: diffusion.denoising_score_matching(
        zero_eps, Z, KEY, "linear"), "schedule"),
    ("denoising_score_matching reduction", lambda: diffusion.denoising_score_matching(
        zero_eps, Z, KEY, linear_schedule(), reduction="avg"), "reduction"),
    ("eps_prediction_error where enlarges", lambda: diffusion.eps_prediction_error(
        Z, Z, where=np.ones((4, 4), bool)), "where"),
    ("denoising_score_matching null_label float",
     lambda: diffusion.denoising_score_matching(
         zero_eps, Z, KEY, linear_schedule(), labels=np.zeros(4, np.int32),
         null_label=1.5), "null_label"),
    ("denoising_score_matching p_uncond not scalar",
     lambda: diffusion.denoising_score_matching(
         zero_eps, Z, KEY, linear_schedule(), p_uncond=np.ones(2, F32)), "p_uncond"),
    # --- preference ---------------------------------------------------------
    ("dpo shapes", lambda: po.dpo(LOGP, LOGP2, LOGP, LOGP2[:1]), "ref_rejected_logp"),
    ("dpo int", lambda: po.dpo(np.array([1, 2]), LOGP2, LOGP, LOGP2), "chosen_logp"),
    ("dpo beta", lambda: po.dpo(LOGP, LOGP2, LOGP, LOGP2, beta=0.0), "beta"),
    ("dpo beta str", lambda: po.dpo(LOGP, LOGP2, LOGP, LOGP2, beta="0.1"), "beta"),
    ("dpo label_smoothing", lambda: po.dpo(
        LOGP, LOGP2, LOGP, LOGP2, label_smoothing=0.6), "label_smoothing"),
    ("dpo where shape", lambda: po.dpo(
        LOGP, LOGP2, LOGP, LOGP2, where=np.ones(3, bool)), "where"),
    ("dpo where float", lambda: po.dpo(
        LOGP, LOGP2, LOGP, LOGP2, where=np.ones(2, F32)), "where"),
    ("dpo reduction", lambda: po.dpo(LOGP, LOGP2, LOGP, LOGP2, reduction="avg"),
     "reduction"),
    ("dpo missing normalizer", lambda: po.dpo(
        LOGP, LOGP2, LOGP, LOGP2, reduction="normalizer"), "normalizer"),
    ("robust_dpo shapes", lambda: po.robust_dpo(
        LOGP, LOGP2[:1], LOGP, LOGP2, epsilon=0.1), "rejected_logp"),
    ("robust_dpo epsilon 0.5", lambda: po.robust_dpo(
        LOGP, LOGP2, LOGP, LOGP2, epsilon=0.5), "epsilon"),
    ("robust_dpo beta", lambda: po.robust_dpo(
        LOGP, LOGP2, LOGP, LOGP2, epsilon=0.1, beta=-1.0), "beta"),
    ("ipo shapes", lambda: po.ipo(LOGP, LOGP2, LOGP[:1], LOGP2), "ref_chosen_logp"),
    ("ipo beta", lambda: po.ipo(LOGP, LOGP2, LOGP, LOGP2, beta=0.0), "beta"),
    ("f_dpo shapes", lambda: po.f_dpo(LOGP, LOGP2, LOGP, LOGP2[:1]), "ref_rejected_logp"),
    ("f_dpo divergence", lambda: po.f_dpo(
        LOGP, LOGP2, LOGP, LOGP2, divergence="tv"), "divergence"),
    ("f_dpo alpha", lambda: po.f_dpo(
        LOGP, LOGP2, LOGP, LOGP2, divergence="alpha", alpha=1.0), "alpha"),
    ("f_dpo beta", lambda: po.f_dpo(LOGP, LOGP2, LOGP, LOGP2, beta=0.0), "beta"),
    ("tdpo tokens shape", lambda: po.tdpo(
        LM, LM, LM, LM, TOKENS[:, :2], TOKENS), "chosen_tokens"),
    ("tdpo tokens float", lambda: po.tdpo(
        LM, LM, LM, LM, TOKENS, TOKENS.astype(F32)), "rejected_tokens"),
    ("tdpo ref shape", lambda: po.tdpo(
        LM, LM, LM[:, :, :3], LM, TOKENS, TOKENS), "ref_chosen_logits"),
    ("tdpo variant", lambda: po.tdpo(LM, LM, LM, LM, TOKENS, TOKENS, variant=3),
     "variant"),
    ("tdpo alpha", lambda: po.tdpo(LM, LM, LM, LM, TOKENS, TOKENS, alpha=0.0), "alpha"),
    ("tdpo chosen_where shape", lambda: po.tdpo(
        LM, LM, LM, LM, TOKENS, TOKENS, chosen_where=np.ones((2, 2), bool)),
     "chosen_where"),
    ("tdpo where shape", lambda: po.tdpo(
        LM, LM, LM, LM, TOKENS, TOKENS, where=np.ones(3, bool)), "where"),
    ("sparse_po reward mask shape", lambda: po.sparse_po(
        LM, LM, LM, LM, TOKENS, TOKENS, chosen_reward_mask=np.ones((2, 2), F32)),
     "chosen_reward_mask"),
    ("sparse_po kl mask shape", lambda: po.sparse_po(
        LM, LM, LM, LM, TOKENS, TOKENS, rejected_kl_mask=np.ones((2, 2), F32)),
     "rejected_kl_mask"),
    ("sparse_po reward_l1", lambda: po.sparse_po(
        LM, LM, LM, LM, TOKENS, TOKENS, reward_l1=-1.0), "reward_l1"),
    ("sparse_po kl_l1", lambda: po.sparse_po(
        LM, LM, LM, LM, TOKENS, TOKENS, kl_l1=-1.0), "kl_l1"),
    ("sparse_po beta", lambda: po.sparse_po(LM, LM, LM, LM, TOKENS, TOKENS, beta=0.0),
     "beta"),
    ("sparse_po logits shape", lambda: po.sparse_po(
        LM, LM[:, :2], LM, LM, TOKENS, TOKENS), "rejected_logits"),
    ("simpo shapes", lambda: po.simpo(LOGP, LOGP2[:1]), "rejected_logp"),
    ("simpo beta", lambda: po.simpo(LOGP, LOGP2, beta=0.0), "beta"),
    ("simpo gamma_beta_ratio", lambda: po.simpo(LOGP, LOGP2, gamma_beta_ratio=-1.0),
     "gamma_beta_ratio"),
    ("simpo label_smoothing", lambda: po.simpo(LOGP, LOGP2, label_smoothing=0.7),
     "label_smoothing"),
    ("orpo shapes", lambda: po.orpo(LOGP, LOGP2[:1]), "rejected_logp"),
    ("orpo odds_ratio_weight", lambda: po.orpo(LOGP, LOGP2, odds_ratio_weight=-1.0),
     "odds_ratio_weight"),
    ("orpo where shape", lambda: po.orpo(LOGP, LOGP2, where=np.ones(3, bool)), "where"),
    ("kto shapes", lambda: po.kto(LOGP, LOGP2[:1], ROW_MASK, reference_point=0.0),
     "ref_logp"),
    ("kto desirable float", lambda: po.kto(
        LOGP, LOGP2, np.ones(2, F32), reference_point=0.0), "desirable"),
    ("kto desirable shape", lambda: po.kto(
        LOGP, LOGP2, np.ones(3, bool), reference_point=0.0), "desirable"),
    ("kto reference_point and mismatched", lambda: po.kto(
        LOGP, LOGP2, ROW_MASK, mismatched_logp=LOGP, mismatched_ref_logp=LOGP2,
        reference_point=0.0), "reference_point"),
    ("kto mismatched alone", lambda: po.kto(
        LOGP, LOGP2, ROW_MASK, mismatched_logp=LOGP), "mismatched_ref_logp"),
    ("kto reference_point shape", lambda: po.kto(
        LOGP, LOGP2, ROW_MASK, reference_point=np.zeros(2, F32)), "reference_point"),
    ("kto beta", lambda: po.kto(LOGP, LOGP2, ROW_MASK, reference_point=0.0, beta=0.0),
     "beta"),
    ("kto desirable_weight", lambda: po.kto(
        LOGP, LOGP2, ROW_MASK, reference_point=0.0, desirable_weight=-1.0),
     "desirable_weight"),
    ("kto mismatched_where shape", lambda: po.kto(
        LOGP, LOGP2, ROW_MASK, mismatched_logp=LOGP, mismatched_ref_logp=LOGP2,
        mismatched_where=np.ones(3, bool)), "mismatched_where"),
    ("mapo shapes", lambda: po.mapo(LOGP ** 2, LOGP2[:1] ** 2), "rejected_mse"),
    ("mapo beta", lambda: po.mapo(LOGP ** 2, LOGP2 ** 2, beta=-1.0), "beta"),
    ("mapo snr", lambda: po.mapo(LOGP ** 2, LOGP2 ** 2, snr=0.0), "snr"),
    ("mapo num_train_timesteps", lambda: po.mapo(
        LOGP ** 2, LOGP2 ** 2, num_train_timesteps=0), "num_train_timesteps"),
    ("log1mexp int", lambda: po.log1mexp(np.array([-1, -2])), "x"),
    ("dpo beta not scalar", lambda: po.dpo(
        LOGP, LOGP2, LOGP, LOGP2, beta=np.ones(3, F32)), "beta"),
    ("ipo where float", lambda: po.ipo(
        LOGP, LOGP2, LOGP, LOGP2, where=np.ones(2, F32)), "where"),
    ("tdpo logits int", lambda: po.tdpo(
        LM.astype(np.int32), LM, LM, LM, TOKENS, TOKENS), "chosen_logits"),
    ("tdpo variant bool", lambda: po.tdpo(LM, LM, LM, LM, TOKENS, TOKENS, variant=True),
     "variant"),
    ("tdpo normalizer shape", lambda: po.tdpo(
        LM, LM, LM, LM, TOKENS, TOKENS, reduction="normalizer", normalizer=np.ones(2)),
     "normalizer"),
    ("sparse_po tokens float", lambda: po.sparse_po(
        LM, LM, LM, LM, TOKENS.astype(F32), TOKENS), "chosen_tokens"),
    ("sparse_po chosen_where float", lambda: po.sparse_po(
        LM, LM, LM, LM, TOKENS, TOKENS, chosen_where=TOKEN_MASK.astype(F32)),
     "chosen_where"),
    ("simpo beta not scalar", lambda: po.simpo(LOGP, LOGP2, beta=np.ones(3, F32)),
     "beta"),
    ("orpo int", lambda: po.orpo(np.array([1, 2]), LOGP), "chosen_logp"),
    ("mapo int", lambda: po.mapo(np.array([1, 2]), np.array([1, 2])), "chosen_mse"),
    # --- policy -------------------------------------------------------------
    ("kl_estimator shapes", lambda: policy.kl_estimator(TOKEN_LOGP, TOKEN_LOGP[:1]),
     "ref_logp"),
    ("kl_estimator kind", lambda: policy.kl_estimator(TOKEN_LOGP, TOKEN_LOGP, kind="k4"),
     "kind"),
    ("kl_estimator clamp", lambda: policy.kl_estimator(
        TOKEN_LOGP, TOKEN_LOGP, clamp=0.0), "clamp"),
    ("kl_estimator int", lambda: policy.kl_estimator(TOKENS, TOKENS), "logp"),
    ("ppo_clip shapes", lambda: policy.ppo_clip(TOKEN_LOGP, TOKEN_LOGP[:, :2],
                                                np.ones((2, 1), F32)), "old_logp"),
    ("ppo_clip advantages shape", lambda: policy.ppo_clip(
        TOKEN_LOGP, TOKEN_LOGP, np.ones(2, F32)), "advantages"),
    ("ppo_clip clip_low", lambda: policy.ppo_clip(
        TOKEN_LOGP, TOKEN_LOGP, np.ones((2, 1), F32), clip_low=1.0), "clip_low"),
    ("ppo_clip clip_high", lambda: policy.ppo_clip(
        TOKEN_LOGP, TOKEN_LOGP, np.ones((2, 1), F32), clip_high=-0.1), "clip_high"),
    ("ppo_clip dual_clip", lambda: policy.ppo_clip(
        TOKEN_LOGP, TOKEN_LOGP, np.ones((2, 1), F32), dual_clip=1.0), "dual_clip"),
    ("ppo_clip log_ratio_clamp", lambda: policy.ppo_clip(
        TOKEN_LOGP, TOKEN_LOGP, np.ones((2, 1), F32), log_ratio_clamp=0.0),
     "log_ratio_clamp"),
    ("group_advantages std", lambda: policy.group_advantages(
        TOKEN_LOGP, std="mad"), "std"),
    ("group_advantages eps", lambda: policy.group_advantages(TOKEN_LOGP, eps=-1.0),
     "eps"),
    ("group_advantages group_ids shape", lambda: policy.group_advantages(
        LOGP, np.zeros(3, np.int32)), "group_ids"),
    ("group_advantages group_ids float", lambda: policy.group_advantages(
        LOGP, np.zeros(2, F32)), "group_ids"),
    ("group_advantages rank", lambda: policy.group_advantages(LOGP), "rewards"),
    ("grpo_loss shapes", lambda: policy.grpo_loss(TOKEN_LOGP, TOKEN_LOGP[:1], LOGP),
     "old_logp"),
    ("grpo_loss advantages shape", lambda: policy.grpo_loss(
        TOKEN_LOGP, TOKEN_LOGP, np.ones(3, F32)), "advantages"),
    ("grpo_loss where shape", lambda: policy.grpo_loss(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, np.ones((2, 2), bool)), "where"),
    ("grpo_loss where float", lambda: policy.grpo_loss(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, TOKEN_MASK.astype(F32)), "where"),
    ("grpo_loss aggregation", lambda: policy.grpo_loss(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, aggregation="mean"), "aggregation"),
    ("grpo_loss kl_in", lambda: policy.grpo_loss(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, kl_in="both"), "kl_in"),
    ("grpo_loss kl_kind", lambda: policy.grpo_loss(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, ref_logp=TOKEN_LOGP, kl_coef=0.1, kl_kind="k9"),
     "kl_kind"),
    ("grpo_loss kl_coef", lambda: policy.grpo_loss(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, kl_coef=-0.1), "kl_coef"),
    ("grpo_loss ref_logp missing", lambda: policy.grpo_loss(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, kl_coef=0.1), "ref_logp"),
    ("grpo_loss ref_logp shape", lambda: policy.grpo_loss(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, ref_logp=TOKEN_LOGP[:1], kl_coef=0.1), "ref_logp"),
    ("grpo_loss max_length", lambda: policy.grpo_loss(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, aggregation="constant", max_length=0),
     "max_length"),
    ("grpo_loss normalizer", lambda: policy.grpo_loss(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, normalizer=0.0), "normalizer"),
    ("grpo_loss clip_low", lambda: policy.grpo_loss(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, clip_low=-0.1), "clip_low"),
    ("grpo_loss rank", lambda: policy.grpo_loss(LOGP, LOGP, LOGP), "logp"),
    ("kdrl teacher shape", lambda: policy.kdrl(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, TOKEN_LOGP[:1]), "teacher_logp"),
    ("kdrl kd_where shape", lambda: policy.kdrl(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, TOKEN_LOGP, kd_where=np.ones((2, 2), bool)),
     "kd_where"),
    ("kdrl kd_coef", lambda: policy.kdrl(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, TOKEN_LOGP, kd_coef=-1.0), "kd_coef"),
    ("kdrl kd_kind", lambda: policy.kdrl(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, TOKEN_LOGP, kd_kind="k7"), "kd_kind"),
    ("kdrl aggregation", lambda: policy.kdrl(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, TOKEN_LOGP, aggregation="sum"), "aggregation"),
    ("returns_to_go where shape", lambda: policy.returns_to_go(
        TOKEN_LOGP, np.ones((2, 2), bool)), "where"),
    ("returns_to_go rank", lambda: policy.returns_to_go(LOGP), "token_rewards"),
    ("returns_to_go int", lambda: policy.returns_to_go(TOKENS), "token_rewards"),
    ("topr shapes", lambda: policy.topr(LOGP, LOGP2[:1], LOGP), "behaviour_logp_seq"),
    ("topr rewards shape", lambda: policy.topr(LOGP, LOGP2, np.ones(3, F32)), "rewards"),
    ("dph_rehearsal shapes", lambda: policy.dph_rehearsal(LOGP, LOGP2[:1]), "ref_logp"),
    ("dph_rehearsal kind", lambda: policy.dph_rehearsal(LOGP, LOGP2, kind="tv"), "kind"),
    ("dph_rehearsal alpha", lambda: policy.dph_rehearsal(
        LOGP, LOGP2, kind="alpha", alpha=1.0), "alpha"),
    ("disco shapes", lambda: policy.disco(
        TOKEN_LOGP, TOKEN_LOGP[:, :2], LOGP, np.array([0, 0])), "old_logp"),
    ("disco rewards shape", lambda: policy.disco(
        TOKEN_LOGP, TOKEN_LOGP, np.ones(3, F32), np.array([0, 0])), "rewards"),
    ("disco group_ids float", lambda: policy.disco(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, np.zeros(2, F32)), "group_ids"),
    ("disco group_ids shape", lambda: policy.disco(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, np.zeros(3, np.int32)), "group_ids"),
    ("disco where shape", lambda: policy.disco(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, np.array([0, 0]), np.ones((2, 2), bool)), "where"),
    ("disco score", lambda: policy.disco(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, np.array([0, 0]), score="ratio"), "score"),
    ("disco tau", lambda: policy.disco(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, np.array([0, 0]), tau=0.0), "tau"),
    ("disco delta", lambda: policy.disco(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, np.array([0, 0]), delta=-1.0), "delta"),
    ("disco beta", lambda: policy.disco(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, np.array([0, 0]), beta=-1.0), "beta"),
    ("kl_estimator clamp < 0", lambda: policy.kl_estimator(
        TOKEN_LOGP, TOKEN_LOGP, clamp=-1.0), "clamp"),
    ("kl_estimator clamp str", lambda: policy.kl_estimator(
        TOKEN_LOGP, TOKEN_LOGP, clamp="10"), "clamp"),
    ("ppo_clip clip_low not scalar", lambda: policy.ppo_clip(
        TOKEN_LOGP, TOKEN_LOGP, np.ones((2, 1), F32), clip_low=np.ones(3, F32)),
     "clip_low"),
    ("group_advantages eps not scalar", lambda: policy.group_advantages(
        TOKEN_LOGP, eps=np.ones(3, F32)), "eps"),
    ("grpo_loss max_length float", lambda: policy.grpo_loss(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, aggregation="constant", max_length=2.5),
     "max_length"),
    ("grpo_loss kl_clamp", lambda: policy.grpo_loss(
        TOKEN_LOGP, TOKEN_LOGP, LOGP, ref_logp=TOKEN_LOGP, kl_coef=0.1, kl_clamp=-1.0),
     "kl_clamp"),
    ("returns_to_go where float", lambda: policy.returns_to_go(
        TOKEN_LOGP, TOKEN_MASK.astype(F32)), "where"),
    ("topr int", lambda: policy.topr(np.array([1, 2]), LOGP, LOGP), "logp_seq"),
    ("dph_rehearsal int", lambda: policy.dph_rehearsal(np.array([1, 2]), LOGP), "logp"),
    ("disco logp rank", lambda: policy.disco(LOGP, LOGP, LOGP, np.array([0, 0])),
     "logp"),
    # --- divergences.fused --------------------------------------------------
    ("fused_linear_divergence weight rank", lambda: fused.fused_linear_divergence(
        H, W[0], H, W), "student_weight"),
    ("fused_linear_divergence classes", lambda: fused.fused_linear_divergence(
        H, W, H, W[:, :4]), "teacher_weight"),
    ("fused_linear_divergence teacher tokens", lambda: fused.fused_linear_divergence(
        H, W, H[:2], W), "teacher_hidden"),
    ("fused_linear_divergence hidden scalar", lambda: fused.fused_linear_divergence(
        F32(1.0), W, H, W), "student_hidden"),
    ("fused_linear_divergence weight int", lambda: fused.fused_linear_divergence(
        H, W.astype(np.int32), H, W), "student_weight"),
    ("fused_linear_divergence teacher_bias shape", lambda: fused.fused_linear_divergence(
        H, W, H, W, teacher_bias=np.zeros((1, 5), F32)), "teacher_bias"),
    ("fused_linear_divergence divergence", lambda: fused.fused_linear_divergence(
        H, W, H, W, divergence="chi2"), "divergence"),
    ("fused_linear_divergence temperature", lambda: fused.fused_linear_divergence(
        H, W, H, W, temperature=-1.0), "temperature"),
    ("fused_linear_divergence temperature str", lambda: fused.fused_linear_divergence(
        H, W, H, W, temperature="1"), "temperature"),
    ("fused_linear_divergence temperature shape", lambda: fused.fused_linear_divergence(
        H, W, H, W, temperature=np.ones(2, F32)), "temperature"),
    ("fused_linear_divergence beta", lambda: fused.fused_linear_divergence(
        H, W, H, W, divergence="js", beta=1.5), "beta"),
    ("fused_linear_divergence chunk_size", lambda: fused.fused_linear_divergence(
        H, W, H, W, chunk_size=-2), "chunk_size"),
    ("fused_linear_divergence chunk_size float", lambda: fused.fused_linear_divergence(
        H, W, H, W, chunk_size=2.0), "chunk_size"),
    ("fused_linear_divergence where shape", lambda: fused.fused_linear_divergence(
        H, W, H, W, where=np.ones(3, bool)), "where"),
    ("fused_linear_divergence where float", lambda: fused.fused_linear_divergence(
        H, W, H, W, where=np.ones(4, F32)), "where"),
    ("fused_linear_divergence missing normalizer", lambda: fused.fused_linear_divergence(
        H, W, H, W, reduction="normalizer"), "normalizer"),
    ("fused_linear_divergence normalizer shape", lambda: fused.fused_linear_divergence(
        H, W, H, W, reduction="normalizer", normalizer=np.ones(4, F32)), "normalizer"),
    ("fused_linear_divergence reduction", lambda: fused.fused_linear_divergence(
        H, W, H, W, reduction="token_mean"), "reduction"),
    ("fused_linear_divergence accumulation_dtype", lambda: fused.fused_linear_divergence(
        H, W, H, W, accumulation_dtype=jnp.int32), "accumulation_dtype"),
    ("fused_linear_divergence normalizer zero", lambda: fused.fused_linear_divergence(
        H, W, H, W, reduction="normalizer", normalizer=0), "normalizer"),
    ("fused_linear_divergence teacher int", lambda: fused.fused_linear_divergence(
        H, W, H.astype(np.int32), W), "teacher_hidden"),
    ("fused_chunk_plan num_tokens", lambda: fused.fused_chunk_plan(-1, 3, 5),
     "num_tokens"),
    ("fused_chunk_plan hidden_size", lambda: fused.fused_chunk_plan(4, 0, 5),
     "hidden_size"),
    ("fused_chunk_plan vocab_size", lambda: fused.fused_chunk_plan(4, 3, 0),
     "vocab_size"),
    ("fused_chunk_plan grad_itemsize", lambda: fused.fused_chunk_plan(
        4096, 3, 5, grad_itemsize=0), "grad_itemsize"),
    ("fused_chunk_plan chunk_size", lambda: fused.fused_chunk_plan(
        4096, 3, 5, chunk_size=0), "chunk_size"),
    ("fused_chunk_plan platform", lambda: fused.fused_chunk_plan(
        4096, 3, 5, platform=0), "platform"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_value_error_naming_the_argument(case):
  _, call, name = case
  with pytest.raises(ValueError, match=f"`{name}`"):
    call()


def softmax64(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_traced_hyperparameters_are_not_checked_and_give_the_reference_values():
  # The checks read shapes, dtypes and concrete numbers only, so a traced
  # temperature, beta or normalizer passes them (under jit they are tracers).
  temperature = 2.0
  p, q = softmax64(T / temperature), softmax64(S / temperature)
  want_kd = temperature ** 2 * np.sum(p * np.log(p / q), -1)
  got_kd = jax.jit(lambda t: kd.kd(S, T, temperature=t))(jnp.float32(temperature))
  np.testing.assert_allclose(got_kd, want_kd, rtol=1e-5)

  beta = 0.5
  margin = (LOGP.astype(np.float64) - LOGP2) - (LOGP2 - LOGP.astype(np.float64))
  want_dpo = np.log1p(np.exp(-beta * margin))
  got_dpo = jax.jit(lambda b: po.dpo(LOGP, LOGP2, LOGP2, LOGP, beta=b))(
      jnp.float32(beta))
  np.testing.assert_allclose(got_dpo, want_dpo, rtol=1e-5)

  got_sum = jax.jit(lambda n: reductions.reduce_loss(
      LOGP, "normalizer", normalizer=n))(jnp.float32(4.0))
  np.testing.assert_allclose(got_sum, LOGP.astype(np.float64).sum() / 4.0, rtol=1e-6)


@pytest.mark.parametrize("mask_dtype", [bool, np.int32], ids=["bool", "int"])
def test_boolean_and_integer_masks_are_accepted_alike(mask_dtype):
  # Only float masks are refused; a 0/1 integer mask means the same as a boolean one.
  got = reductions.reduce_loss(LOGP, "mean", where=np.array([1, 0], mask_dtype))
  np.testing.assert_allclose(got, LOGP[0], rtol=1e-6)
