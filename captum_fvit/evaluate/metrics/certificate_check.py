"""Certificates checked by attack: try to break every certified statement, adaptively.

For each certified image, :func:`check_certificates` runs the adaptive attacks of
:mod:`captum_fvit.evaluate.attacks.adaptive` *restricted to the ℓ2 ball the certificate covers*:

* the top-k attack on the DDS map (through the denoiser, EOT, not label-constrained) within
  ``R_β``; the certificate claims that every token ``i`` with ``r_in,i > ‖Δ‖`` stays in the
  smoothed top-k at ``x + Δ`` (hence the top-k overlap ≥ β);
* :func:`~captum_fvit.evaluate.attacks.adaptive.smooth_pgd` within ``R_pred``; the certificate (Cohen
  et al.) claims ``P(f(D(x + Δ + δ)) = label) > 1/2``.

A claim is reported **violated** only when fresh samples at the attacked point establish it
beyond Monte-Carlo error: with ``n_verify`` new samples and simultaneous Clopper–Pearson
bounds at level ``alpha_verify`` (vote smoothing; empirical Bernstein for mean smoothing),

* token: some certified token ``i`` has at least ``k`` other tokens ``j`` with
  ``lower_j(x') > upper_i(x')`` — it is out of the smoothed top-k;
* prediction: the one-sided upper bound of ``P(label)`` at ``x'`` is ≤ 1/2.

Each claim is thus wrongly reported violated with probability ≤ ``alpha_verify`` (plus the
certificate's own ``α``). A violation is a bug in the certificate or the pipeline, not a
number to publish. ``radius_scale > 1`` checks the check: far beyond the certified radius the
same attack should find violations (see the tests).

Radii are ℓ2 in [0, 1] pixel units. Images are attacked one at a time (each has its own
radius); all sampling inside is batched.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from scipy.stats import beta as beta_dist

from ... import certify as cert
from ...attr.region import FaithfulRegion
from ...differentiable import DifferentiableDDS
from ...validation import (
    check_alpha,
    check_count,
    check_image_batch,
    check_positive,
    check_seed,
    renamed_argument,
)
from ..attacks.adaptive import adaptive_topk, smooth_pgd

__all__ = ["CertificateCheck", "CertificateCheckReport", "check_certificates"]

#: Seed offset of the verification samples (independent of the certificate's and the attack's).
VERIFY_SEED_OFFSET = 7_919


@dataclass
class CertificateCheck:
    """The check of one image.

    Attributes
    ----------
    image : int
        Index in the batch.
    radius_beta, radius_pred : float
        Certified ℓ2 radii (pixel units); 0 = abstained (nothing to check).
    attack_radius_beta, attack_radius_pred : float
        Radii of the balls attacked (``radius_scale ×`` the certified ones).
    delta_norm_topk, delta_norm_pred : float
        ℓ2 norms of the perturbations found.
    certified_tokens : int
        Tokens the certificate (its radii times ``radius_scale``) claims stay in the top-k at
        the attacked perturbation's norm.
    overlap_estimate : float
        Top-k overlap of the clean certified top-k with the verified estimate at ``x'``.
    token_violation : bool
        A certified token is provably out of the smoothed top-k at ``x'``.
    p_upper : float
        Upper confidence bound of ``P(label)`` at the prediction attack's ``x'``.
    prediction_violation : bool
        ``p_upper ≤ 1/2`` although the certificate covers ``x'``.
    """

    image: int
    radius_beta: float
    radius_pred: float
    attack_radius_beta: float
    attack_radius_pred: float
    delta_norm_topk: float
    delta_norm_pred: float
    certified_tokens: int
    overlap_estimate: float
    token_violation: bool
    p_upper: float
    prediction_violation: bool


@dataclass
class CertificateCheckReport:
    """All checks of a batch, with the settings that make them reproducible."""

    checks: list[CertificateCheck]
    radius_scale: float
    n_verify: int
    alpha_verify: float
    steps: int
    n_eot: int
    seed: int

    @property
    def violations(self) -> int:
        """Established violations (token or prediction); should be 0 at ``radius_scale ≤ 1``."""
        return sum(int(c.token_violation) + int(c.prediction_violation) for c in self.checks)

    def rows(self) -> list[dict]:
        """One plain dict per image (for JSON)."""
        return [asdict(c) for c in self.checks]


def _upper_one_sided(count: int, n: int, alpha: float) -> float:
    """One-sided Clopper–Pearson upper bound on a binomial proportion."""
    if count >= n:
        return 1.0
    return float(beta_dist.ppf(1 - alpha, count + 1, n - count))


@dataclass(frozen=True)
class _Settings:
    steps: int
    n_eot: int
    n_verify: int
    alpha_verify: float
    seed: int


def _attack_topk(dds, twin, x, i, c, rb, radius_scale, s: _Settings):
    """``(‖Δ‖, certified tokens, overlap estimate, violation)`` of the top-k attack in ``rb``."""
    if rb <= 0:
        return 0.0, 0, math.nan, False
    normalization = dds.normalization
    attack = adaptive_topk(
        dds.model, None, x, c.k, rb, dds.sigma, n_eot=s.n_eot, norm="l2", steps=s.steps,
        step_size=rb / 4, random_start=True, target=torch.tensor([c.label]),
        topk_index=c.topk[None], keep_label=False, seed=s.seed + 1 + i, dds=twin, n_clean=1,
    )  # fmt: skip
    x_adv = attack.adversarial
    norm = float((normalization.to_pixels(x_adv) - normalization.to_pixels(x)).flatten().norm())
    # The (possibly inflated) certificate's claim: tokens with scale·r_in > ‖Δ‖ stay.
    certified = (c.r_in * radius_scale > norm).nonzero().flatten()
    target = torch.tensor([c.label]) if dds.method.class_specific else None
    result = dds.details(
        x_adv, target=target, seed=s.seed + VERIFY_SEED_OFFSET, k=c.k, n_samples=s.n_verify
    )
    if c.smoothing == "vote":
        bounds = cert.vote_bounds(result.votes, s.n_verify, s.alpha_verify)
        estimate = result.votes.double()
    else:
        estimate = result.mean.double()
        bounds = cert.mean_bounds(estimate, result.variance, s.n_verify, s.alpha_verify)
    lower, upper = bounds.lower[0], bounds.upper[0]
    violation = False
    if certified.numel():
        above = (lower[None, :] > upper[certified][:, None]).sum(dim=1)
        violation = bool((above >= c.k).any())
    top = estimate[0].topk(c.k).indices
    overlap = len(set(top.tolist()) & set(c.topk.tolist())) / c.k
    return norm, int(certified.numel()), overlap, violation


def _attack_prediction(dds, twin, x, i, c, rp, s: _Settings):
    """``(‖Δ‖, p_upper, violation)`` of the prediction attack within ``rp``."""
    normalization = dds.normalization
    x_adv = smooth_pgd(
        dds.model, None, x, torch.tensor([c.label]), rp, dds.sigma, s.n_eot, norm="l2",
        steps=s.steps, step_size=rp / 4, seed=s.seed + 10_007 + i, dds=twin,
    )  # fmt: skip
    norm = float((normalization.to_pixels(x_adv) - normalization.to_pixels(x)).flatten().norm())
    counts = dds.smoothed_prediction(x_adv, s.n_verify, s.seed + VERIFY_SEED_OFFSET + 1)
    p_upper = _upper_one_sided(int(counts[0, c.label]), s.n_verify, s.alpha_verify)
    return norm, p_upper, p_upper <= 0.5


def check_certificates(
    region: FaithfulRegion,
    inputs: torch.Tensor,
    *,
    seed: int = 0,
    radius_scale: float = 1.0,
    steps: int = 10,
    n_eot: int = 8,
    n_verify: int = 1000,
    alpha_verify: float = 0.001,
    batch_size: int = 32,
    check_prediction: bool = True,
    chunk_size: int | None = None,
) -> CertificateCheckReport:
    """Certify ``inputs`` with ``region``, then attack each certificate inside its radius.

    Parameters
    ----------
    region : FaithfulRegion
        The configured certifier (its DDS pipeline — model, denoiser, method, σ — is attacked
        through a differentiable twin).
    inputs : Tensor
        ``N×C×H×W`` images in the model's normalisation.
    seed : int, default 0
        Seed of the certificate; the attacks and the verification use derived seeds.
    radius_scale : float, default 1
        Attack within ``radius_scale × R`` (ℓ2). 1 checks the certificate (open ball: the
        radius is shrunk by one part in 10⁶); > 1 checks that the check has teeth.
    steps, n_eot : int
        Attack steps and noise samples per step (EOT).
    n_verify : int, default 1000
        Fresh samples establishing a violation at the attacked point.
    alpha_verify : float, default 0.001
        Failure probability of each established violation.
    batch_size : int, default 32
        Images per chunk through the denoiser in the attacks.
    check_prediction : bool, default True
        Also attack ``R_pred`` with :func:`smooth_pgd`.
    chunk_size : int, optional
        Deprecated name of ``batch_size``.

    Returns
    -------
    CertificateCheckReport
    """
    images = check_image_batch(inputs)
    seed = check_seed(seed)
    radius_scale = check_positive(radius_scale, "radius_scale")
    steps = check_count(steps, "steps")
    n_eot = check_count(n_eot, "n_eot")
    n_verify = check_count(n_verify, "n_verify", minimum=2)
    alpha_verify = check_alpha(alpha_verify, "alpha_verify")
    batch_size = renamed_argument(batch_size, chunk_size, "batch_size", "chunk_size", 32,
                                  "check_certificates")  # fmt: skip
    batch_size = check_count(batch_size, "batch_size")
    dds = region.dds
    certificates = region.certify(images, seed=seed)
    twin = DifferentiableDDS(
        dds.model, dds.denoiser, dds.method, dds.sigma,
        normalization=dds.normalization, batch_size=batch_size, noise=dds.engine.noise,
        clamp=dds.engine.clamp,
    )
    shrink = 1 - 1e-6  # open ball: the claims hold for ‖Δ‖ < R
    settings = _Settings(steps, n_eot, n_verify, alpha_verify, seed)
    checks = []
    for i, c in enumerate(certificates):  # one radius per image; sampling inside is batched
        x = images[i : i + 1]
        rb = float(c.radius_beta) * radius_scale * shrink
        rp = 0.0 if c.abstain else float(c.radius_pred) * radius_scale * shrink
        topk = _attack_topk(dds, twin, x, i, c, rb, radius_scale, settings)
        prediction = (0.0, math.nan, False)
        if check_prediction and rp > 0:
            prediction = _attack_prediction(dds, twin, x, i, c, rp, settings)
        checks.append(
            CertificateCheck(
                image=i,
                radius_beta=float(c.radius_beta),
                radius_pred=0.0 if c.abstain else float(c.radius_pred),
                attack_radius_beta=rb,
                attack_radius_pred=rp,
                delta_norm_topk=topk[0],
                delta_norm_pred=prediction[0],
                certified_tokens=topk[1],
                overlap_estimate=topk[2],
                token_violation=topk[3],
                p_upper=prediction[1],
                prediction_violation=prediction[2],
            )
        )
    return CertificateCheckReport(
        checks=checks,
        radius_scale=float(radius_scale),
        n_verify=n_verify,
        alpha_verify=float(alpha_verify),
        steps=steps,
        n_eot=n_eot,
        seed=seed,
    )
