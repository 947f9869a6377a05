"""FaithfulRegion: its numbers equal the certificate formulas recomputed independently from
the same samples; the certificate survives random and PGD attacks at its radius (while the
same attack breaks the top-k far beyond it); bad input gets clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_timm_vit, model_state
from scipy import stats as sps

from captum_fvit import DDSAttention, FaithfulRegion
from captum_fvit.attention import AttentionRecorder
from captum_fvit.attr.dds_attention import normalize_maps
from captum_fvit.space import resolve_normalization


@pytest.fixture(scope="module")
def stable_vit():
    """A 2-layer ViT whose attention depends on position *and* content: its top-k tokens are
    stable under small noise, and can be moved by larger perturbations."""
    model = make_timm_vit(depth=2, embed_dim=48, num_heads=3)
    with torch.no_grad():
        model.pos_embed.mul_(12.0)
        model.patch_embed.proj.weight.mul_(4.0)
    return model


def _reference_vote_radii(votes, n, alpha, k, sigma):
    """Per-token r_in from scipy Clopper–Pearson bounds and plain loops."""
    tokens = len(votes)
    level = alpha / tokens
    lower = np.array([sps.beta.ppf(level / 2, c, n - c + 1) if c > 0 else 0.0 for c in votes])
    upper = np.array([sps.beta.ppf(1 - level / 2, c + 1, n - c) if c < n else 1.0 for c in votes])
    radii = []
    for i in range(tokens):
        others = np.sort(np.delete(upper, i))[::-1]
        margin = sps.norm.ppf(lower[i]) - sps.norm.ppf(others[k - 1])
        radii.append(max(0.0, sigma / 2 * margin) if np.isfinite(margin) else 0.0)
    return np.array(radii), lower, upper


def test_certificate_equals_independent_recomputation(stable_vit, images):
    k, beta, alpha, n, n0, sigma = 3, 2 / 3, 0.01, 300, 20, 0.1
    region = FaithfulRegion(
        stable_vit, None, "rollout", k=k, beta=beta, alpha=alpha, n_select=n0, n_samples=n,
        sigma=sigma,
    )
    certificates = region.certify(images, seed=5)
    dds = DDSAttention(stable_vit, None, "rollout", sigma=sigma, k=k)
    details = dds.details(images, seed=5, n_samples=n)
    counts_n0 = dds.smoothed_prediction(images, n0, 5)
    d = 3 * 32 * 32
    for i, c in enumerate(certificates):
        votes = details.votes[i].numpy()
        r_in, lower, upper = _reference_vote_radii(votes, n, alpha, k, sigma)
        np.testing.assert_allclose(c.lower.numpy(), lower, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(c.upper.numpy(), upper, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(c.r_in.numpy(), r_in, rtol=1e-7, atol=1e-12)
        m = math.ceil(beta * k - 1e-12)
        assert c.radius_beta == pytest.approx(np.sort(r_in)[::-1][m - 1], rel=1e-7, abs=1e-12)
        label = int(counts_n0[i].argmax())
        fresh = int(details.class_counts[i, label])
        p_lower = sps.beta.ppf(alpha, fresh, n - fresh + 1) if fresh > 0 else 0.0
        assert c.label == label and c.p_lower == pytest.approx(p_lower, rel=1e-9)
        expected_pred = sigma * sps.norm.ppf(p_lower) if p_lower > 0.5 else 0.0
        assert c.abstain == (p_lower <= 0.5)
        assert c.radius_pred == pytest.approx(expected_pred, rel=1e-9, abs=1e-12)
        assert c.radius == pytest.approx(min(c.radius_beta, c.radius_pred))
        assert c.radius_linf == pytest.approx(c.radius / math.sqrt(d))
        assert c.certified and c.confidence == pytest.approx(1 - 2 * alpha)
        assert set(c.topk.tolist()) == set(np.argsort(-votes, kind="stable")[:k].tolist()) or (
            np.sort(votes)[::-1][k - 1] == np.sort(votes)[::-1][k]
        )
    assert any(c.radius_beta > 0 for c in certificates), "the test model must be certifiable"


def test_mean_smoothing_uses_empirical_bernstein(stable_vit, images):
    region = FaithfulRegion(stable_vit, None, "raw", k=2, n_samples=200, n_select=10, sigma=0.1, smoothing="mean")
    c = region.certify(images[:1], seed=0)[0]
    dds = DDSAttention(stable_vit, None, "raw", sigma=0.1)
    details = dds.details(images[:1], seed=0, n_samples=200)
    mean = details.mean[0].double().numpy()
    var = details.variance[0].numpy()
    tokens = len(mean)
    log_term = math.log(4 * tokens / 0.001)
    width = np.sqrt(2 * var * log_term / 200) + 7 * log_term / (3 * 199)
    np.testing.assert_allclose(c.lower.numpy(), np.clip(mean - width, 0, 1), atol=1e-6)
    np.testing.assert_allclose(c.upper.numpy(), np.clip(mean + width, 0, 1), atol=1e-6)


class _DifferentiableRollout:
    """Rollout with the autograd graph kept (the test's own surrogate for PGD)."""

    def __init__(self, model):
        self.model = model
        self.probs = {}

    def on_attention(self, layer, probs):
        self.probs[layer] = probs

    def on_gradient(self, layer, grad):
        pass

    def __call__(self, x):
        with AttentionRecorder(self.model, self):
            self.model(x)
        product = None
        for layer in sorted(self.probs):
            a = self.probs[layer].mean(1)
            a = (a + torch.eye(a.shape[-1])) / 2
            a = a / a.sum(-1, keepdim=True)
            product = a if product is None else a @ product
        self.probs = {}
        return product[:, 0, 1:]


def _smoothed_topk(model, x_pixels, sigma, k, n, seed, norm):
    dds = DDSAttention(model, None, "rollout", sigma=sigma, k=k, batch_size=256)
    votes = dds.details(norm.from_pixels(x_pixels), seed=seed, n_samples=n).votes
    return votes.topk(k, dim=1).indices


def _overlap(a, b, k):
    return (a[:, :, None] == b[:, None, :]).any(-1).sum(1).double() / k


def _pgd_against_topk(model, x_pixels, top, radius, sigma, norm, steps=10, eot=16, seed=0):
    """ℓ2 PGD on Δ (‖Δ‖ ≤ radius) lowering the smoothed mass of the current top-k tokens."""
    surrogate = _DifferentiableRollout(model)
    generator = torch.Generator().manual_seed(seed)
    delta = torch.zeros_like(x_pixels)
    noise = sigma * torch.randn((eot, *x_pixels.shape[1:]), generator=generator)
    for _ in range(steps):
        delta.requires_grad_(True)
        noisy = (x_pixels + delta).repeat_interleave(eot, 0) + noise.repeat(len(x_pixels), 1, 1, 1)
        maps = normalize_maps(surrogate(norm.from_pixels(noisy)))
        maps = maps.view(len(x_pixels), eot, -1).mean(1)
        loss = maps.gather(1, top).sum()
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            step = grad / grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
            delta = delta - 0.25 * radius * step
            norms = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            delta = delta * torch.clamp(radius / norms.clamp(min=1e-12), max=1.0)
    return delta.detach()


def test_soundness_under_random_and_pgd_perturbations(stable_vit):
    """No perturbation with ‖Δ‖ < R_β brings the smoothed top-k overlap below β; the same
    PGD with 25× the radius does, so the attack is not toothless."""
    k, beta, sigma, n_check = 3, 2 / 3, 0.12, 1000
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 32, 32, generator=generator) * 0.5
    region = FaithfulRegion(stable_vit, None, "rollout", k=k, beta=beta, alpha=0.001, n_samples=800, n_select=16, sigma=sigma)
    certificates = region.certify(images, seed=1)
    radii = torch.tensor([c.radius_beta for c in certificates])
    assert (radii > 0).sum() >= 3, f"test model should be certifiable, got {radii}"
    norm = resolve_normalization(stable_vit)
    pixels = norm.to_pixels(images)[radii > 0]
    radii = radii[radii > 0]
    top_clean = _smoothed_topk(stable_vit, pixels, sigma, k, n_check, 7, norm)

    violations, trials = 0, 0
    # Random directions just inside the certified ball.
    for trial in range(2):
        direction = torch.randn(pixels.shape, generator=generator)
        direction = direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        shifted = pixels + 0.999 * radii.view(-1, 1, 1, 1) * direction
        top = _smoothed_topk(stable_vit, shifted, sigma, k, n_check, 8 + trial, norm)
        violations += int((_overlap(top_clean, top, k) < beta).sum())
        trials += len(pixels)
    # PGD lowering the smoothed mass of the top-k tokens.
    delta = _pgd_against_topk(stable_vit, pixels, top_clean, 0.999 * radii.view(-1, 1, 1, 1), sigma, norm)
    top = _smoothed_topk(stable_vit, pixels + delta, sigma, k, n_check, 20, norm)
    violations += int((_overlap(top_clean, top, k) < beta).sum())
    trials += len(pixels)
    assert violations == 0, f"{violations} of {trials} certified perturbations broke the top-k"

    # The same attack far outside the certificate does change the top-k.
    big = _pgd_against_topk(stable_vit, pixels, top_clean, 25 * radii.view(-1, 1, 1, 1), sigma, norm)
    top_big = _smoothed_topk(stable_vit, pixels + big, sigma, k, n_check, 21, norm)
    assert (_overlap(top_clean, top_big, k) < beta).any()


def test_attribute_region_and_estimates(stable_vit, images):
    before = model_state(stable_vit)
    region = FaithfulRegion(stable_vit, None, "rollout", k=3, n_samples=200, n_select=10, sigma=0.1)
    attribution = region.attribute(images, seed=0)
    assert attribution.shape == images.shape and (attribution >= 0).all()
    certificates = region.certify(images, seed=0)
    r_in = torch.stack([c.r_in for c in certificates])
    mask = region.region(images, radius=0.01, seed=0)
    assert torch.equal(mask, r_in > 0.01)
    pixel_mask = region.region(images, radius=0.01, seed=0, pixels=True)
    assert pixel_mask.shape == (3, 1, 32, 32) and pixel_mask.dtype == torch.bool
    assert torch.equal(pixel_mask[:, 0, ::8, ::8].reshape(3, -1), mask)
    estimate = FaithfulRegion(stable_vit, None, "rollout", k=3, n_samples=200, n_select=10, sigma=0.1, alpha=None)
    c = estimate.certify(images, seed=0)[0]
    assert not c.certified and c.confidence is None and "NOT certified" in c.summary()
    assert c.radius_beta >= certificates[0].radius_beta  # estimates are never smaller
    assert "certified with confidence" in certificates[0].summary()
    dds = DDSAttention(stable_vit, None, "grad_rollout", sigma=0.1, n_select=10)
    from_dds = FaithfulRegion(dds, k=2, n_samples=50)
    assert len(from_dds.certify(images, seed=0)) == 3
    assert model_state(stable_vit) == before


def test_bad_input_gets_clear_errors(stable_vit, images):
    with pytest.raises(ValueError, match="smaller than the number of patch tokens"):
        FaithfulRegion(stable_vit, k=16, n_samples=10, n_select=5).certify(images, seed=0)
    with pytest.raises(ValueError, match="beta"):
        FaithfulRegion(stable_vit, beta=0.0)
    with pytest.raises(ValueError, match="beta"):
        FaithfulRegion(stable_vit, beta=1.5)
    with pytest.raises(ValueError, match="alpha"):
        FaithfulRegion(stable_vit, alpha=1.0)
    with pytest.raises(ValueError, match="alpha"):
        FaithfulRegion(stable_vit, alpha=0.0)
    with pytest.raises(ValueError, match="n_select"):
        FaithfulRegion(stable_vit, n_select=0)
    with pytest.raises(ValueError, match="n_samples must"):
        FaithfulRegion(stable_vit, n_samples=0)
    with pytest.raises(ValueError, match="n must"), pytest.warns(DeprecationWarning):
        FaithfulRegion(stable_vit, n=0)  # the deprecated name is checked under its own name
    with pytest.raises(ValueError, match="[Gg]aussian"):
        FaithfulRegion(stable_vit, noise="laplace")
    with pytest.raises(ValueError, match="k must"):
        FaithfulRegion(stable_vit, k=0)
    with pytest.raises(ValueError, match="radius"):
        FaithfulRegion(stable_vit, k=2, n_samples=5, n_select=5).decide(images, -1.0, seed=0)
    with pytest.raises(ValueError, match="radius"), pytest.warns(DeprecationWarning):
        FaithfulRegion(stable_vit, k=2, n_samples=5, n_select=5).certify(images, seed=0, radius=-1.0)


def test_attribute_puts_the_target_in_captums_slot(stable_vit, images):
    """attribute(inputs, target=None, additional_forward_args=None, *, seed=...) as in Captum
    (NoiseTunnel passes target= and the rest by keyword): the target is the explained class
    of class-specific methods, the seed keyword only; the old positional seed warns."""
    import inspect

    from captum.attr import NoiseTunnel, Saliency

    ours = list(inspect.signature(FaithfulRegion.attribute.__wrapped__).parameters.values())
    captum = list(inspect.signature(Saliency.attribute.__wrapped__).parameters)
    assert [p.name for p in ours[:3]] == captum[:3] == ["self", "inputs", "target"]
    assert ours[-1].name == "seed" and ours[-1].kind is inspect.Parameter.KEYWORD_ONLY
    region = FaithfulRegion(stable_vit, None, "grad_rollout", k=3, n_samples=40, n_select=8, sigma=0.1)
    for target in (1, 4):
        attribution = region.attribute(images, target=target, seed=2)
        r_in = torch.stack([c.r_in for c in region.certify(images, seed=2, target=target)])
        expected = torch.nan_to_num(r_in.float(), posinf=0.0).view(3, 1, 4, 4)
        expected = expected.repeat_interleave(8, 2).repeat_interleave(8, 3).expand(-1, 3, -1, -1)
        torch.testing.assert_close(attribution, expected, rtol=0, atol=0)
    assert not torch.equal(region.attribute(images, target=1, seed=2),
                           region.attribute(images, target=4, seed=2))  # fmt: skip
    default = region.attribute(images, seed=2)
    assert torch.equal(default, region.attribute(images, target=None, seed=2))
    with pytest.warns(DeprecationWarning, match="seed=..."):
        region.attribute(images, 2)  # the old positional seed now is the target
    smooth = NoiseTunnel(region).attribute(
        images, nt_type="smoothgrad", nt_samples=2, stdevs=0.01, target=1, seed=2
    )
    assert smooth.shape == images.shape and bool(torch.isfinite(smooth).all())


def test_deprecated_n_gives_the_same_certificate(stable_vit, images):
    new = FaithfulRegion(stable_vit, None, "rollout", k=3, n_samples=60, n_select=8, sigma=0.1)
    with pytest.warns(DeprecationWarning, match="n= is deprecated"):
        old = FaithfulRegion(stable_vit, None, "rollout", k=3, n=60, n_select=8, sigma=0.1)
    a, b = new.certify(images, seed=3), old.certify(images, seed=3)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.r_in, y.r_in) and torch.equal(x.lower, y.lower)
        assert (x.radius, x.label, x.n_samples) == (y.radius, y.label, 60)
        with pytest.warns(DeprecationWarning, match="n_samples"):
            assert x.n == 60
