"""Anytime-valid confidence sequences and sequential certificate decisions (pure functions).

The fixed-n certificate (:mod:`captum_fvit.certify`) draws ``n`` samples, then computes
Clopper–Pearson bounds. Looking at those bounds after every chunk and stopping when they are
good enough would break them: a fixed-n interval checked repeatedly covers far less often
than advertised. A **confidence sequence** (CS) is a sequence of intervals ``CS_t`` with

    P(for all t >= 1: p in CS_t) >= 1 - alpha,

so it may be checked after every sample or chunk and stopped at *any* data-dependent time;
the interval at the stopping time still covers with probability ``>= 1 - alpha``.

Two confidence sequences for a Bernoulli probability ``p`` are provided, both functions of
the sufficient statistics ``(successes, n)`` only:

``"beta_binomial"`` (default; Robbins 1970, Howard et al. 2021 §3)
    The mixture likelihood ratio
    ``M_t(p) = int q^S (1-q)^(t-S) dBeta(q; a, b) / (p^S (1-p)^(t-S))
    = B(a + S, b + t - S) / (B(a, b) p^S (1-p)^(t-S))``
    is, for the true ``p``, a non-negative martingale with ``M_0 = 1``; Ville's inequality gives
    ``P(exists t: M_t(p) >= 1/alpha) <= alpha``. So ``CS_t = {p : M_t(p) < 1/alpha}`` is
    valid at every ``t`` simultaneously, with no horizon and no look schedule. ``log M_t`` is
    convex in ``p`` with its minimum ``<= 0`` at ``S/t``, so ``CS_t`` is an interval around
    ``S/t``; its ends are found by Newton's method from the outside (every iterate is on the
    conservative side). The
    default prior is Jeffreys' ``Beta(1/2, 1/2)``, the Krichevsky–Trofimov mixture, whose
    price over a fixed-n bound is about ``alpha -> alpha / sqrt(pi t)`` at the extremes
    ``S = 0`` or ``S = t`` where most tokens and confident predictions live.

``"union"`` (Voráček 2024's treatment for randomized smoothing)
    Clopper–Pearson intervals at level ``alpha / J`` at each of at most ``J`` looks whose
    sample sizes are fixed in advance (e.g. :func:`look_schedule`): by the union bound all
    ``J`` intervals hold together. Stopping is still data dependent, but only at the
    declared sample sizes. Tighter than the mixture when ``J`` is small, and valid only for
    the declared looks.

The betting CS of Waudby-Smith & Ramdas (2023) also covers ``[0, 1]``-valued means; for
Bernoulli observations the conjugate mixture above is already a betting CS (a mixture of
constant bets) that needs only the counts, so it can be evaluated per chunk from the vote
counts the smoothing engine accumulates.

**Simultaneity.** As in the fixed-n certificate, the ``T`` token intervals of the explanation
are each at level ``alpha / T`` (Bonferroni, two-sided); the prediction's interval is at
level ``alpha_pred`` (two-sided: the lower end certifies, the upper end rules out). With
probability ``>= 1 - alpha - alpha_pred`` every interval contains its probability at every
look, and then every decision below is correct. The running intersection of the intervals
over the looks is covered on the same event and is used by the driver.

**Decisions at a radius r** (ℓ2, [0, 1] pixel units), with ``m = ceil(beta k)``:

* explanation *certified* when ``R_beta(lo, up) > r`` — at least ``m`` tokens have
  ``r_in > r`` (the closed form of :func:`captum_fvit.certify.radii_in` with CS bounds);
* explanation *not certified* when ``R_beta^opt <= r``, where ``R_beta^opt`` is the m-th
  largest *optimistic* radius ``sigma/2 (Phi^-1(up_i) - Phi^-1(k-th largest lo_j, j != i))``.
  Since ``r_in_i(g')`` increases in ``g'_i`` and decreases in every other ``g'_j``, every ``g'``
  in the box ``[lo, up]`` — on the good event, the true ``g`` — has
  ``R_beta(g', g') <= R_beta^opt``: even infinitely many samples could not certify ``r``;
* prediction *certified* when ``sigma Phi^-1(p_lower) > r``; *not certified* when
  ``sigma Phi^-1(p_upper) <= r``;
* otherwise *undecided* (keep sampling, or abstain at the budget).

"Truth" for these decisions is the certificate with exact probabilities:
``R_beta*(g) = R_beta(g, g)`` and ``R_pred* = sigma Phi^-1(p)``; on the good event
``R_beta(lo, up) <= R_beta* <= R_beta^opt`` and the same for the prediction, so a wrong
decision needs a miss of the confidence sequence.

References
----------
Robbins (1970), "Statistical methods related to the law of the iterated logarithm".
Howard, Ramdas, McAuliffe & Sekhon (2021), "Time-uniform, nonparametric, nonasymptotic
confidence sequences", Ann. Statist.
Waudby-Smith & Ramdas (2023), "Estimating means of bounded random variables by betting",
JRSS-B.
Voráček (2024), "Treatment of statistical estimation problems in randomized smoothing for
adversarial robustness", NeurIPS.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np
import torch
from scipy.special import betaln, xlog1py
from torch import Tensor

from . import certify as cert
from .validation import (
    check_alpha,
    check_choice,
    check_count,
    check_k,
    check_radius,
    check_sigma,
    renamed_argument,
)

__all__ = [
    "CERTIFIED",
    "CONFIDENCE_SEQUENCES",
    "CS_METHODS",
    "DECISION_NAMES",
    "NOT_CERTIFIED",
    "UNDECIDED",
    "ExplanationDecision",
    "PredictionDecision",
    "beta_binomial_cs",
    "combine_decisions",
    "confidence_sequence",
    "decision_name",
    "explanation_decision",
    "look_schedule",
    "optimistic_radii_in",
    "prediction_decision",
    "running_intersection",
    "union_cs",
    "vote_cs",
]

#: Decision codes (int8 tensors): the statement at radius r is proven, disproven, or open.
CERTIFIED, NOT_CERTIFIED, UNDECIDED = 1, 0, -1
DECISION_NAMES = {CERTIFIED: "certified", NOT_CERTIFIED: "not_certified", UNDECIDED: "undecided"}
#: Confidence sequences for a Bernoulli probability (the ``confidence_sequence=`` choices).
CONFIDENCE_SEQUENCES = ("beta_binomial", "union")
#: Deprecated name of :data:`CONFIDENCE_SEQUENCES`.
CS_METHODS = CONFIDENCE_SEQUENCES

_NEWTON_STEPS = 100  # an upper limit; convergence takes ~5-30 steps


def decision_name(code: int) -> str:
    """``"certified"``, ``"not_certified"`` or ``"undecided"`` for a decision code."""
    try:
        return DECISION_NAMES[int(code)]
    except KeyError:
        raise ValueError(f"not a decision code: {code!r} (expected 1, 0 or -1)") from None


def _counts_and_n(counts: Tensor, n: int | Tensor) -> tuple[np.ndarray, np.ndarray, Tensor]:
    like = torch.as_tensor(counts).detach()
    n_t = torch.broadcast_to(cert.as_sample_sizes(n, like), like.shape)
    c = cert.as_counts(like, n_t)
    return c.cpu().numpy(), n_t.cpu().numpy(), c


def beta_binomial_cs(
    counts: Tensor,
    n: int | Tensor,
    alpha: float,
    *,
    simultaneous_over: int = 1,
    prior: tuple[float, float] = (0.5, 0.5),
) -> tuple[Tensor, Tensor]:
    """Robbins' beta-binomial mixture confidence sequence for a Bernoulli probability.

    ``CS_t = {p : B(a + S, b + t - S) / (B(a, b) p^S (1 - p)^(t - S)) < 1 / alpha'}`` with
    ``alpha' = alpha / simultaneous_over``. Valid at every ``t`` at once (anytime): check it
    after any number of samples and stop whenever.

    Parameters
    ----------
    counts : Tensor
        Successes ``S`` among the first ``n`` samples, integers in ``[0, n]``, any shape.
    n : int or Tensor
        Samples so far (broadcastable to ``counts``), ``>= 1``.
    alpha : float
        Failure probability in ``(0, 1)`` over the whole (infinite) sequence.
    simultaneous_over : int, optional
        Number of sequences that must hold together (Bonferroni), default 1.
    prior : (float, float), default (0.5, 0.5)
        Beta prior ``(a, b)`` of the mixture (Jeffreys / Krichevsky–Trofimov by default).

    Returns
    -------
    lower, upper : Tensor
        float64 bounds in ``[0, 1]``, shape of ``counts``, on its device; never inside the
        exact interval (Newton from the outside, then a relative step of 1e-12 outwards).
    """
    level = check_alpha(alpha) / check_count(simultaneous_over, "simultaneous_over")
    a, b = (float(v) for v in prior)
    if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"prior must be two positive Beta parameters (a, b); got {prior!r}")
    s, t, c = _counts_and_n(counts, n)
    f = t - s
    log_level = math.log(level)
    lower = _mixture_lower_end(s, f, a, b, log_level)  # S = 0: every small p is inside
    upper = 1.0 - _mixture_lower_end(f, s, b, a, log_level)  # by symmetry p <-> 1 - p
    as_tensor = lambda x: torch.as_tensor(x, dtype=torch.float64).to(c.device)  # noqa: E731
    return as_tensor(lower), as_tensor(upper)


def _mixture_lower_end(
    s: np.ndarray, f: np.ndarray, a: float, b: float, log_level: float
) -> np.ndarray:
    """Lower end of ``{p : log M(p) < -log_level}``, never above the exact end (0 where ``S = 0``).

    In ``u = log p``, ``h(u) = log M(e^u) + log_level = C - S u - F log(1 - e^u) + log_level``
    (``C`` the log marginal likelihood) is convex and decreasing on ``u <= log(S/t)``. Newton's
    method started left of the root stays left of it (a convex function lies above its
    tangents) and increases monotonically to it, so every iterate is a conservative end.
    The start ``u_0 = min(log(S/t), (C + log_level)/S) - 1`` has ``h(u_0) >= S > 0``.
    """
    out = np.zeros(np.shape(s))
    todo = s > 0
    s, f = s[todo], f[todo]
    log_marginal = betaln(a + s, b + f) - betaln(a, b)
    u = np.minimum(np.log(s / (s + f)), (log_marginal + log_level) / s) - 1.0
    for _ in range(_NEWTON_STEPS):
        p = np.exp(u)
        h = log_marginal - s * u - xlog1py(f, -p) + log_level
        step = h / (-s + f * p / (1.0 - p))  # h >= 0 and slope < 0 left of the root
        u = u - step
        if np.all(np.abs(step) <= 1e-13 * np.maximum(1.0, np.abs(u))):
            break
    # A relative step of 1e-12 outwards keeps the end conservative despite float round-off.
    out[todo] = np.clip(np.exp(u) * (1.0 - 1e-12), 0.0, 1.0)
    return out


def union_cs(
    counts: Tensor, n: int | Tensor, alpha: float, *, looks: int, simultaneous_over: int = 1
) -> tuple[Tensor, Tensor]:
    """Clopper–Pearson at level ``alpha / (looks * simultaneous_over)``: a CS over ``looks``.

    Valid for at most ``looks`` looks at sample sizes fixed before sampling (e.g.
    :func:`look_schedule`), whatever rule decides when to stop among them.

    Parameters
    ----------
    counts, n, alpha, simultaneous_over
        As in :func:`beta_binomial_cs`.
    looks : int
        Number of looks the union bound covers (``>= 1``).

    Returns
    -------
    lower, upper : Tensor
        float64 two-sided bounds.
    """
    looks = check_count(looks, "looks")
    m = check_count(simultaneous_over, "simultaneous_over")
    return cert.clopper_pearson_bounds(counts, n, check_alpha(alpha), simultaneous_over=m * looks)


def confidence_sequence(
    counts: Tensor,
    n: int | Tensor,
    alpha: float,
    *,
    confidence_sequence: str = "beta_binomial",
    simultaneous_over: int = 1,
    looks: int | None = None,
    method: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Two-sided confidence sequence for Bernoulli probabilities (see the module docstring).

    Parameters
    ----------
    counts, n, alpha, simultaneous_over
        As in :func:`beta_binomial_cs`.
    confidence_sequence : {"beta_binomial", "union"}
        Which confidence sequence (:data:`CONFIDENCE_SEQUENCES`).
    looks : int, optional
        Number of pre-declared looks; required by ``"union"``, not accepted otherwise.
    method : str, optional
        Deprecated name of ``confidence_sequence``.
    """
    kind = renamed_argument(
        confidence_sequence, method, "confidence_sequence", "method", "beta_binomial",
        "confidence_sequence",
    )  # fmt: skip
    kind = check_choice(kind, "confidence_sequence", CONFIDENCE_SEQUENCES)
    if kind == "beta_binomial":
        if looks is not None:
            raise ValueError(
                "looks applies to confidence_sequence='union' only (the mixture is anytime)"
            )
        return beta_binomial_cs(counts, n, alpha, simultaneous_over=simultaneous_over)
    if looks is None:
        raise ValueError(
            "confidence_sequence='union' needs looks= (the number of pre-declared looks)"
        )
    return union_cs(counts, n, alpha, looks=looks, simultaneous_over=simultaneous_over)


_confidence_sequence = confidence_sequence  # the function, where a parameter takes its name


def vote_cs(
    votes: Tensor,
    n: int | Tensor,
    alpha: float,
    *,
    confidence_sequence: str = "beta_binomial",
    looks: int | None = None,
    method: str | None = None,
) -> cert.Bounds:
    """Simultaneous anytime bounds on vote-smoothed ``g_i = P(token i in top-k)``.

    Each of the ``T`` token sequences is at level ``alpha / T`` (Bonferroni), so all hold at
    all looks together with probability ``>= 1 - alpha``.

    Parameters
    ----------
    votes : Tensor
        ``(..., T)`` top-k counts over the first ``n`` samples.
    n : int or Tensor
        Samples so far (a tensor of shape ``(..., 1)`` for per-input counts).
    alpha, confidence_sequence, looks
        As in :func:`confidence_sequence`.
    method : str, optional
        Deprecated name of ``confidence_sequence``.

    Returns
    -------
    captum_fvit.certify.Bounds
        ``certified=True``; feed it to :func:`captum_fvit.certify.certify_explanation`.
    """
    kind = renamed_argument(
        confidence_sequence, method, "confidence_sequence", "method", "beta_binomial", "vote_cs"
    )
    v = torch.as_tensor(votes)
    if v.dim() == 0:
        raise ValueError("votes must have a token dimension (..., T)")
    lower, upper = _confidence_sequence(
        v, n, alpha, confidence_sequence=kind, simultaneous_over=v.shape[-1], looks=looks
    )
    return cert.Bounds(lower, upper, certified=True, alpha=float(alpha))


def running_intersection(
    lower_before: Tensor, upper_before: Tensor, lower: Tensor, upper: Tensor
) -> tuple[Tensor, Tensor]:
    """Intersect the newest intervals of a confidence sequence with the earlier ones.

    On the event that the sequence covers at every look (probability ``>= 1 - alpha``) every
    interval contains the parameter, so their intersection does too: the bounds only tighten.
    Where the intersection is empty (possible only off that event) the newest interval is
    kept, so the result is always a valid ``lower <= upper`` pair.

    Returns
    -------
    lower, upper : Tensor
        float64 bounds.
    """
    lower = torch.as_tensor(lower).to(torch.float64)
    upper = torch.as_tensor(upper).to(device=lower.device, dtype=torch.float64)
    lo = torch.maximum(torch.as_tensor(lower_before).to(lower.device, torch.float64), lower)
    up = torch.minimum(torch.as_tensor(upper_before).to(lower.device, torch.float64), upper)
    empty = lo > up
    return torch.where(empty, lower, lo), torch.where(empty, upper, up)


def look_schedule(
    n_max: int,
    samples_per_look: int | None = None,
    growth: float = 1.0,
    *,
    chunk: int | None = None,
) -> list[int]:
    """Cumulative sample sizes of the looks: ``samples_per_look``, then steps growing by
    ``growth``.

    Parameters
    ----------
    n_max : int
        Sample budget (the last look).
    samples_per_look : int
        Samples before the first look (and between looks when ``growth == 1``).
    growth : float, default 1.0
        Each step is ``growth`` times the previous one (1 = equal steps; 2 = doubling).
    chunk : int, optional
        Deprecated name of ``samples_per_look``.

    Returns
    -------
    list of int
        Strictly increasing sample sizes ending at ``n_max``.
    """
    first = renamed_argument(samples_per_look, chunk, "samples_per_look", "chunk", None, "look_schedule")
    if first is None:
        raise TypeError("look_schedule needs samples_per_look (samples before the first look)")
    n_max, first = check_count(n_max, "n_max"), check_count(first, "samples_per_look")
    if isinstance(growth, bool) or not isinstance(growth, numbers.Real):
        raise TypeError(f"growth must be a number >= 1; got {growth!r}")
    if not growth >= 1:
        raise ValueError(f"growth must be a number >= 1; got {growth!r}")
    sizes, step, total = [], float(first), 0
    while total < n_max:
        total = min(n_max, total + max(1, int(round(step))))
        sizes.append(total)
        step *= growth
    return sizes


# --------------------------------------------------------------------------- decisions
def optimistic_radii_in(lower: Tensor, upper: Tensor, k: int, sigma: float) -> Tensor:
    """Largest ``r_in`` any ``g'`` in the box ``[lower, upper]`` can give each token.

    ``sigma/2 (Phi^-1(upper_i) - Phi^-1(k-th largest lower_j, j != i))``, clipped at 0: the
    closed form of :func:`captum_fvit.certify.radii_in` with the roles of the bounds swapped
    (token ``i`` at its best, its competitors at their worst).

    Returns
    -------
    Tensor
        ``(..., T)`` float64 radii, ℓ2 in the units of ``sigma`` ([0, 1] pixel units).
    """
    lo, up = cert.check_bound_pair(lower, upper)
    k, sigma = check_k(k, lo.shape[-1]), check_sigma(sigma)
    return cert.probit_margin(up, cert.kth_largest_of_others(lo, k), sigma)


class ExplanationDecision(NamedTuple):
    """The explanation's decision at a radius, from simultaneous bounds.

    Attributes
    ----------
    decision : Tensor
        ``(...)`` int8 codes :data:`CERTIFIED`, :data:`NOT_CERTIFIED`, :data:`UNDECIDED`.
    radius_beta : Tensor
        ``(...)`` certified ``R_beta`` from the bounds (valid at any stopping time).
    radius_beta_upper : Tensor
        ``(...)`` ``R_beta^opt``: no ``g`` within the bounds has a larger exact ``R_beta``.
    """

    decision: Tensor
    radius_beta: Tensor
    radius_beta_upper: Tensor


class PredictionDecision(NamedTuple):
    """The prediction's decision at a radius.

    Attributes
    ----------
    decision : Tensor
        ``(...)`` int8 decision codes.
    radius_pred : Tensor
        ``(...)`` certified ``sigma Phi^-1(p_lower)`` (0 where ``p_lower <= 1/2``: abstain).
    radius_pred_upper : Tensor
        ``(...)`` ``sigma Phi^-1(p_upper)`` clipped at 0: the largest radius still possible.
    """

    decision: Tensor
    radius_pred: Tensor
    radius_pred_upper: Tensor


def _decide(lower_radius: Tensor, upper_radius: Tensor, radius: float) -> Tensor:
    code = torch.full(lower_radius.shape, UNDECIDED, dtype=torch.int8, device=lower_radius.device)
    code = code.masked_fill(upper_radius <= radius, NOT_CERTIFIED)
    return code.masked_fill(lower_radius > radius, CERTIFIED)


def explanation_decision(
    lower: Tensor, upper: Tensor, k: int, beta: float, sigma: float, radius: float
) -> ExplanationDecision:
    """Is the top-k overlap ``>= beta`` certified at ``radius``, certainly not, or open?

    Parameters
    ----------
    lower, upper : Tensor
        ``(..., T)`` bounds on ``g`` holding for all tokens at once (e.g. :func:`vote_cs`).
    k : int
        Top-k size.
    beta : float
        Required overlap fraction in ``(0, 1]``.
    sigma : float
        Noise std ([0, 1] pixel units).
    radius : float
        ℓ2 radius ``r >= 0`` ([0, 1] pixel units).

    Returns
    -------
    ExplanationDecision
        ``CERTIFIED`` iff ``R_beta(lower, upper) > r``; ``NOT_CERTIFIED`` iff ``R_beta^opt <= r``;
        else ``UNDECIDED`` (the two cannot both hold since ``R_beta <= R_beta^opt``).
    """
    radius = check_radius(radius)
    r_beta = cert.overlap_radius(cert.radii_in(lower, upper, k, sigma), k, beta)
    r_beta_opt = cert.overlap_radius(optimistic_radii_in(lower, upper, k, sigma), k, beta)
    return ExplanationDecision(_decide(r_beta, r_beta_opt, radius), r_beta, r_beta_opt)


def prediction_decision(
    p_lower: Tensor, p_upper: Tensor, sigma: float, radius: float
) -> PredictionDecision:
    """Is the smoothed prediction certified at ``radius`` (Cohen et al.), certainly not, or open?

    Parameters
    ----------
    p_lower, p_upper : Tensor
        Bounds on ``P(f(x + delta) = label)`` for the selected label.
    sigma : float
        Noise std ([0, 1] pixel units).
    radius : float
        ℓ2 radius ``r >= 0``.

    Returns
    -------
    PredictionDecision
        ``CERTIFIED`` iff ``sigma Phi^-1(p_lower) > r``; ``NOT_CERTIFIED`` iff
        ``sigma Phi^-1(p_upper) <= r``.
    """
    radius, sigma = check_radius(radius), check_sigma(sigma)
    lo = cert.as_probabilities(p_lower, "p_lower")
    up = cert.as_probabilities(p_upper, "p_upper")
    if lo.shape != up.shape or bool(torch.any(lo > up + 1e-12)):
        raise ValueError("p_lower and p_upper must have the same shape with p_lower <= p_upper")
    r_lo = (sigma * torch.special.ndtri(lo)).clamp_min(0.0)
    r_up = (sigma * torch.special.ndtri(up)).clamp_min(0.0)
    r_lo = torch.where(lo > 0.5, r_lo, torch.zeros_like(r_lo))  # Cohen: abstain at p <= 1/2
    return PredictionDecision(_decide(r_lo, r_up, radius), r_lo, r_up)


def combine_decisions(explanation: Tensor, prediction: Tensor) -> Tensor:
    """(r, beta, k)-faithful at r: certified iff both are; not iff either is not; else open."""
    e, p = torch.as_tensor(explanation), torch.as_tensor(prediction)
    e, p = torch.broadcast_tensors(e, p)
    code = torch.full(e.shape, UNDECIDED, dtype=torch.int8, device=e.device)
    code = code.masked_fill((e == CERTIFIED) & (p == CERTIFIED), CERTIFIED)
    return code.masked_fill((e == NOT_CERTIFIED) | (p == NOT_CERTIFIED), NOT_CERTIFIED)
