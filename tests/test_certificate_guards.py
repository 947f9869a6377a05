"""Tests that guard the certificate (issue 11, item 10): each would fail if the certificate
code were subtly wrong in a way the rest of the suite does not notice, and each verifies its
own teeth with a mutation applied inside the test (monkeypatch).

1. **Selection stream.** Cohen's CERTIFY selects the class from ``n_select`` samples that
   are independent of the ``n`` estimation samples. The selection counts, the certificate's
   label and its ``p_lower`` are recomputed here with plain loops over the noise of
   :func:`captum_fvit.noise.draw_noise` on stream ``SELECTION_STREAM`` (selection) and stream
   0 (estimation), and must equal what :class:`FaithfulRegion` reports. Mutation: drawing the
   selection samples from the estimation stream (``SELECTION_STREAM`` → 0 in
   :mod:`captum_fvit.attr.selection`) must break the check.
2. **Sharp end-to-end soundness.** A model whose smoothed top-k boundary is linear-Gaussian
   (``tests/guard_models.py``: the Lipschitz lemma is tight for it), certified by
   :class:`FaithfulRegion`, attacked by a boundary-swap EOT ℓ2-PGD at 0.999·R_β and checked
   with fresh samples and simultaneous Clopper–Pearson bounds: no violation with the real
   radii, a violation for every image when ``r_in`` is inflated 1.5× or 2×
   (``captum_fvit.certify.radii_in`` wrapped inside the test).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pytest
import torch
from guard_models import ADAPTER, FAR, ProbitViT
from scipy.stats import beta as beta_dist
from scipy.stats import norm

import captum_fvit.attr.selection as selection_module
import captum_fvit.certify as certify_module
from captum_fvit import DDSAttention, FaithfulRegion
from captum_fvit.attention import AttentionRecorder
from captum_fvit.noise import draw_noise
from captum_fvit.smoothing import SELECTION_STREAM

# The guard models take [0, 1] pixels: identity normalisation, given explicitly.
PIXELS = dict(input_mean=(0.0,), input_std=(1.0,), adapter=ADAPTER)


# =============================================================================== 1. selection
def _reference_class_counts(model, images, seed, n, sigma, stream) -> torch.Tensor:
    """``N×K`` class counts over noise samples ``0..n-1`` of ``stream``: a plain loop over
    samples (identity denoiser, identity normalisation)."""
    noise = draw_noise(seed, 0, n, tuple(images.shape[1:]), sigma, stream=stream)
    counts = None
    with torch.no_grad():
        for s in range(n):
            logits = model(images + noise[s])
            if counts is None:
                counts = torch.zeros(logits.shape, dtype=torch.int64)
            for i, label in enumerate(logits.argmax(dim=1).tolist()):
                counts[i, label] += 1
    return counts


def _lowest_argmax(row: torch.Tensor) -> int:
    values = row.numpy()
    return int(np.flatnonzero(values == values.max())[0])


def _selection_mismatches(region: FaithfulRegion, model, images, seed) -> list[str]:
    """Every way FaithfulRegion's selection and prediction certificate differ from the
    reference: selection counts from stream ``SELECTION_STREAM``, label = their (lowest)
    majority class, ``p_lower`` = one-sided Clopper–Pearson on that label's count among the
    ``n`` fresh stream-0 samples, ``radius_pred = σ Φ⁻¹(p_lower)`` (0 when abstaining)."""
    sigma, n, alpha = region.sigma, region.n_samples, region.alpha_pred
    selection = _reference_class_counts(
        model, images, seed, region.n_select, sigma, SELECTION_STREAM
    )
    fresh = _reference_class_counts(model, images, seed, n, sigma, 0)
    problems = []
    counts = region.select(images, seed).counts
    if not torch.equal(counts.cpu(), selection):
        problems.append(f"selection counts {counts.tolist()} != reference {selection.tolist()}")
    explained = region.dds.select(images, seed).tolist()  # DDSAttention's routine, same class
    for i, c in enumerate(region.certify(images, seed=seed)):
        label = _lowest_argmax(selection[i])
        count = int(fresh[i, label])
        p_lower = beta_dist.ppf(alpha, count, n - count + 1) if count > 0 else 0.0
        radius = sigma * norm.ppf(p_lower) if p_lower > 0.5 else 0.0
        if c.label != label or explained[i] != label:
            problems.append(f"input {i}: label {c.label}/{explained[i]} != reference {label}")
        if not math.isclose(c.p_lower, p_lower, rel_tol=1e-9, abs_tol=1e-12):
            problems.append(f"input {i}: p_lower {c.p_lower} != reference {p_lower}")
        if c.abstain != (p_lower <= 0.5) or not math.isclose(
            c.radius_pred, radius, rel_tol=1e-9, abs_tol=1e-12
        ):
            problems.append(f"input {i}: radius_pred {c.radius_pred} != reference {radius}")
    return problems


@pytest.fixture(scope="module")
def undecided_classifier():
    """A ProbitViT (all attention biases 0) whose noisy predictions split between classes,
    and 4 random images: different noise streams select different classes."""
    model = ProbitViT(torch.zeros(16), seed=2)
    images = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    return model, images


def test_selection_uses_its_own_stream(undecided_classifier, monkeypatch):
    """Selection counts, label and p_lower equal the independent recomputation; the same
    check fails when the selection samples come from the estimation stream."""
    model, images = undecided_classifier
    n_select, n, sigma = 15, 64, 0.5
    region = FaithfulRegion(
        model, None, "raw", k=3, alpha=0.01, n_samples=n, n_select=n_select, sigma=sigma, **PIXELS
    )
    # Teeth: a seed at which the two streams' first n_select samples select different
    # classes for some input (searched, not assumed), so using the wrong stream changes the
    # certificate's label, p_lower and radius — not only the counts.
    seed = None
    for candidate in range(50):
        own = _reference_class_counts(model, images, candidate, n_select, sigma, SELECTION_STREAM)
        estimation = _reference_class_counts(model, images, candidate, n_select, sigma, 0)
        if any(_lowest_argmax(a) != _lowest_argmax(b) for a, b in zip(own, estimation)):
            seed = candidate
            break
    assert seed is not None, "the test model must make the two streams select different classes"
    assert SELECTION_STREAM != 0 and not torch.equal(own, estimation)

    assert _selection_mismatches(region, model, images, seed) == []

    # Mutation: selection samples drawn from the estimation stream → the check must fail,
    # on the counts and on the certified label.
    monkeypatch.setattr(selection_module, "SELECTION_STREAM", 0)
    problems = _selection_mismatches(region, model, images, seed)
    assert any("selection counts" in p for p in problems), problems
    assert any("label" in p for p in problems), problems


# =============================================================================== 2. soundness
K, BETA, SIGMA, ALPHA = 3, 1.0, 0.25, 0.001
N_CERT, N_CHECK, ALPHA_CHECK = 2000, 2000, 0.001
SURE, CONTESTED_IN, CONTESTED_OUT = (0, 15), 5, 10  # token indices on the 4×4 grid
MARGINS = (1.0, 1.4, 1.8, 2.2)  # Φ⁻¹(g_A(x)) of the four images


def _patch(index: int, patch: int = 4, grid: int = 4):
    row, col = divmod(index, grid)
    rows, cols = slice(patch * row, patch * (row + 1)), slice(patch * col, patch * (col + 1))
    return (slice(None), slice(None), rows, cols)


@pytest.fixture(scope="module")
def linear_gaussian():
    """ProbitViT with k−1 = 2 tokens always in the top-3 (bias +FAR), the contested pair
    A = 5, B = 10 (bias 0) and the rest always out (bias −FAR); 4 images in [0, 1] whose
    contested margin is set so that the exact smoothed vote is g_A(x) = Φ(t), t in MARGINS.

    With pixel noise N(0, σ²I), ``s_A − s_B = κ(u·(p_A − p_B) + u·(δ_A − δ_B))`` and
    ``u·(δ_A − δ_B) ~ N(0, 2σ²)`` (``u`` a unit vector on disjoint patches), so
    ``g_A = Φ(u·(p_A − p_B) / (σ√2))``: an image with ``u·(p_A − p_B) = tσ√2`` has
    ``Φ⁻¹(g_A) = t``, and moving ``‖Δ‖ = R`` along ``−(u_A − u_B)`` lowers it by exactly
    ``R/σ``. The true β=1 radius is ``σt``, the certificate's (exact bounds) also ``σt``.
    """
    biases = torch.full((16,), -FAR)
    biases[list(SURE)] = FAR
    biases[[CONTESTED_IN, CONTESTED_OUT]] = 0.0
    model = ProbitViT(biases, seed=0)
    u = model.u
    images = 0.25 + 0.5 * torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    current = (images[_patch(CONTESTED_IN)] * u).sum((1, 2, 3)) - (
        images[_patch(CONTESTED_OUT)] * u
    ).sum((1, 2, 3))
    target = torch.tensor(MARGINS) * SIGMA * math.sqrt(2.0)
    shift = ((target - current) / 2).view(-1, 1, 1, 1)
    images[_patch(CONTESTED_IN)] += shift * u
    images[_patch(CONTESTED_OUT)] -= shift * u
    assert images.min() >= 0 and images.max() <= 1
    return model, images


class _KeepAttention:
    """Listener keeping the recorded attention with its autograd graph."""

    def __init__(self) -> None:
        self.probs = None

    def on_attention(self, layer: int, probs: torch.Tensor) -> None:
        self.probs = probs

    def on_gradient(self, layer: int, grad: torch.Tensor) -> None:
        pass


def _boundary_swap_attack(model, x, token_in, token_out, radius, *, steps=30, eot=64, seed=0):
    """ℓ2 PGD with EOT over the Gaussian noise on ``δ`` (``‖δ‖ ≤ radius`` per image) that
    pushes the smoothed vote of ``token_in`` (the k-th token) down and that of ``token_out``
    (the (k+1)-th) up: it minimises ``E_ξ[sigmoid(z / s)]``, ``z = log a_in − log a_out``
    of the recorded class-token attention at ``x + δ + ξ``, ``ξ ~ N(0, σ²I)`` (fresh each
    step), ``s`` the EOT spread of ``z`` — a smooth surrogate of ``g_in − g_out``."""
    listener = _KeepAttention()
    generator = torch.Generator().manual_seed(seed)
    n = len(x)
    rows = torch.arange(n).repeat_interleave(eot)
    radius = radius.to(x.dtype).view(-1, 1, 1, 1)
    delta = torch.zeros_like(x)
    with AttentionRecorder(model, listener, adapter=ADAPTER):
        for _ in range(steps):
            delta.requires_grad_(True)
            noise = SIGMA * torch.randn((n * eot, *x.shape[1:]), generator=generator)
            model(x[rows] + delta[rows] + noise)
            attention = listener.probs[:, :, 0, 1:].mean(1)  # raw map: class-token row
            log_in = attention.gather(1, token_in[rows, None])[:, 0].log()
            log_out = attention.gather(1, token_out[rows, None])[:, 0].log()
            z = (log_in - log_out).view(n, eot)
            loss = torch.sigmoid(z / z.std(dim=1, keepdim=True).detach().clamp(min=1e-6))
            (grad,) = torch.autograd.grad(loss.mean(1).sum(), delta)
            with torch.no_grad():
                grad_norm = grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
                delta = delta - 0.25 * radius * grad / grad_norm
                norms = delta.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
                delta = delta * torch.clamp(radius / norms, max=1.0)
    return delta.detach()


def _simultaneous_bounds(votes: np.ndarray, n: int, alpha: float):
    """Two-sided Clopper–Pearson bounds (scipy) holding for all entries at once (Bonferroni)."""
    level = alpha / votes.size
    lower = beta_dist.ppf(level / 2, np.maximum(votes, 1), n - votes + 1)
    upper = beta_dist.ppf(1 - level / 2, votes + 1, np.maximum(n - votes, 1))
    return np.where(votes > 0, lower, 0.0), np.where(votes < n, upper, 1.0)


def _established_violations(model, clean, attacked, k, beta, seed):
    """Inputs where the smoothed top-k overlap at ``attacked`` is *established* below β.

    Rule (sound with probability ≥ 1 − ALPHA_CHECK): fresh vote counts at ``clean`` and
    ``attacked`` (N_CHECK samples each, a seed the certificate did not use) give
    Clopper–Pearson bounds holding for every token of every point at once. Token ``i`` is
    established *in* the top-k of ``g(clean)`` when fewer than ``k`` others have
    ``upper_j ≥ lower_i``, and established *out* of the top-k of ``g(attacked)`` when at
    least ``k`` others have ``lower_j > upper_i``. On the bounds' event the true overlap is
    at most ``k − #(in ∩ out)`` whatever the tie-breaking; a violation is declared only when
    that is below ``βk``.

    Returns
    -------
    violations : list of int
        The inputs with an established violation.
    lower, upper : ndarray
        ``2N×T`` simultaneous bounds on ``g`` at the clean points, then the attacked ones.
    """
    dds = DDSAttention(
        model, None, "raw", sigma=SIGMA, k=k, smoothing="vote", batch_size=1024, **PIXELS
    )
    points = torch.cat([clean, attacked])
    votes = dds.details(points, seed=seed, n_samples=N_CHECK).votes.numpy().astype(float)
    lower, upper = _simultaneous_bounds(votes, N_CHECK, ALPHA_CHECK)
    n = len(clean)
    others = ~np.eye(votes.shape[1], dtype=bool)  # j != i
    # [input, i, j]: could j reach i at the clean point / is j surely above i when attacked?
    reach = (upper[:n, None, :] >= lower[:n, :, None]) & others
    above = (lower[n:, None, :] > upper[n:, :, None]) & others
    established_in = reach.sum(-1) < k
    established_out = above.sum(-1) >= k
    overlap_at_most = k - (established_in & established_out).sum(-1)
    violations = [i for i in range(n) if overlap_at_most[i] / k < beta]
    return violations, lower, upper


class _Outcome(NamedTuple):
    radii: torch.Tensor  # R_β per image (float64)
    token_in: torch.Tensor  # the attacked k-th token
    token_out: torch.Tensor  # its best challenger
    delta: torch.Tensor  # the attack
    violations: list  # inputs with an established violation
    lower: np.ndarray  # 2N×T simultaneous bounds: clean points, then attacked points
    upper: np.ndarray


def _certify_and_attack(model, images, seed=1) -> _Outcome:
    region = FaithfulRegion(
        model, None, "raw", k=K, beta=BETA, alpha=ALPHA, n_samples=N_CERT, n_select=16, sigma=SIGMA,
        batch_size=1024, **PIXELS,
    )
    certificates = region.certify(images, seed=seed)
    radii = torch.tensor([c.radius_beta for c in certificates], dtype=torch.float64)
    token_in, token_out = [], []
    for c in certificates:  # the k-th token (smallest r_in of the top-k) and the best challenger
        top = c.topk.tolist()
        token_in.append(top[int(c.r_in[top].argmin())])
        rest = [t for t in range(len(c.estimate)) if t not in top]
        token_out.append(rest[int(c.estimate[rest].argmax())])
    token_in, token_out = torch.tensor(token_in), torch.tensor(token_out)
    delta = _boundary_swap_attack(model, images, token_in, token_out, 0.999 * radii)
    violations, lower, upper = _established_violations(
        model, images, images + delta, K, BETA, seed=seed + 100
    )
    return _Outcome(radii, token_in, token_out, delta, violations, lower, upper)


def test_soundness_against_boundary_swap_attack(linear_gaussian):
    """No established violation at 0.999·R_β on the linear-Gaussian ProbitViT, although the
    attack is sharp there.

    Construction (``linear_gaussian``, ``tests/guard_models.py``): the class-token attention
    logits are ``κ(u·p_i + b_i)``, two tokens always in the top-3, two contested tokens A, B,
    the rest always out, so the vote-smoothed ``g_A(x) = Φ(u·(p_A − p_B)/(σ√2))`` exactly and
    ``Φ⁻¹(g_A)`` drops by exactly ``R/σ`` along ``−(u_A − u_B)``: the true β = 1 radius is
    ``σ Φ⁻¹(g_A(x))`` and the Lipschitz bound is tight. The boundary-swap EOT-PGD finds that
    direction from the recorded attention alone.
    """
    model, images = linear_gaussian
    outcome = _certify_and_attack(model, images)
    n = len(images)
    assert (outcome.token_in == CONTESTED_IN).all() and (outcome.token_out == CONTESTED_OUT).all()
    # The construction: the closed-form g_A(x) = Φ(t) lies in the check's confidence bounds.
    closed_form = norm.cdf(MARGINS)
    assert (outcome.lower[:n, CONTESTED_IN] <= closed_form).all()
    assert (closed_form <= outcome.upper[:n, CONTESTED_IN]).all()
    # The certificate is below the closed-form true radius σt, and not far below it.
    true_radii = SIGMA * torch.tensor(MARGINS, dtype=torch.float64)
    radii = outcome.radii
    assert (radii < true_radii).all() and (radii > 0.8 * true_radii).all(), (radii, true_radii)
    assert torch.allclose(outcome.delta.flatten(1).norm(dim=1).double(), 0.999 * radii, rtol=1e-4)
    assert outcome.violations == [], f"certified perturbations broke the top-k: {outcome}"
    # Sharpness: at the attacked point the k-th token keeps less than half of its probit
    # margin Φ⁻¹(g_A) (g_B = 1 − g_A, so the swap happens at 0): an upper bound at x + δ
    # against a lower bound at x.
    kept = norm.ppf(outcome.upper[n:, CONTESTED_IN])
    margin = norm.ppf(outcome.lower[:n, CONTESTED_IN])
    assert (kept < 0.5 * margin).all(), (kept, margin)


@pytest.mark.parametrize("factor", [1.5, 2.0])
def test_boundary_swap_attack_breaks_inflated_radii(linear_gaussian, monkeypatch, factor):
    """Mutation: every r_in inflated (``captum_fvit.certify.radii_in`` × factor) → the same
    attack and check establish a violation for every image."""
    model, images = linear_gaussian
    real_radii_in = certify_module.radii_in
    monkeypatch.setattr(
        certify_module,
        "radii_in",
        lambda lower, upper, k, sigma: factor * real_radii_in(lower, upper, k, sigma),
    )
    outcome = _certify_and_attack(model, images)
    true_radii = SIGMA * torch.tensor(MARGINS, dtype=torch.float64)
    assert (outcome.radii > true_radii).all(), "the mutation must inflate R_β past the truth"
    assert outcome.violations == list(range(len(images))), outcome.violations
