"""DDSAttention and DDS(any Captum attribution): agreement with AttentionMap in the small-σ
limit, an independent per-sample reference, seeding, chunking, Captum integration, and
clear errors that leave the model unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency, visualization
from captum.metrics import infidelity, sensitivity_max
from conftest import make_tiny_unet, model_state

from captum_fvit import DDS, AttentionMap, DDSAttention, DiffusionDenoiser, IdentityDenoiser
from captum_fvit.attr.dds_attention import normalize_maps
from captum_fvit.noise import draw_noise
from captum_fvit.space import resolve_normalization


@pytest.fixture(scope="module")
def tiny_diffusion():
    from diffusers import DDPMScheduler

    unet = make_tiny_unet()
    return DiffusionDenoiser(unet, DDPMScheduler(num_train_timesteps=1000))


@pytest.mark.parametrize("method", ["raw", "rollout", "grad_rollout", "attn_gradcam"])
def test_tiny_sigma_identity_equals_attention_map(timm_vit, images, method):
    """σ = 1e-6 pixel units: every sample is the input up to 1e-6, so the mean map equals the
    normalised AttentionMap to 1e-4 (relative to maps summing to 1)."""
    dds = DDSAttention(timm_vit, IdentityDenoiser(), method, sigma=1e-6, n_samples=4, batch_size=5)
    result = dds.details(images, seed=0)
    plain = AttentionMap(timm_vit, method).token_map(images, target=result.target)
    torch.testing.assert_close(result.mean, normalize_maps(plain), atol=1e-4, rtol=0)
    assert result.std.max() < 1e-4
    if dds.method.class_specific:
        # Without a target the smoothed prediction is explained, which here is the plain one.
        assert torch.equal(result.target, timm_vit(images).argmax(1))


def test_details_match_an_independent_per_sample_loop(timm_vit, images):
    """Mean, std, votes and class counts equal a loop over samples that adds the same seeded
    noise by hand and calls the plain AttentionMap one sample at a time."""
    n, sigma, k = 6, 0.2, 3
    dds = DDSAttention(timm_vit, None, "grad_rollout", sigma=sigma, n_samples=n, batch_size=4, k=k)
    result = dds.details(images, target=[0, 1, 2], seed=11)
    norm = resolve_normalization(timm_vit)
    noise = draw_noise(11, 0, n, tuple(images.shape[1:]), sigma)
    plain = AttentionMap(timm_vit, "grad_rollout")
    for i in range(3):
        maps, classes = [], []
        for s in range(n):
            x = norm.from_pixels(norm.to_pixels(images[i : i + 1]) + noise[s])
            maps.append(plain.token_map(x, target=i)[0].double().numpy())
            classes.append(int(timm_vit(x).argmax()))
        maps = np.stack(maps)
        h = np.clip(maps, 0, None)
        h = h / h.sum(1, keepdims=True)
        np.testing.assert_allclose(result.mean[i].numpy(), h.mean(0), atol=1e-6)
        np.testing.assert_allclose(result.std[i].numpy(), h.std(0, ddof=1), atol=1e-6)
        votes = np.zeros(maps.shape[1], dtype=np.int64)
        for row in maps:
            votes[np.argsort(-row)[:k]] += 1
        np.testing.assert_array_equal(result.votes[i].numpy(), votes)
        np.testing.assert_array_equal(
            result.class_counts[i].numpy(), np.bincount(classes, minlength=5)
        )
    assert result.votes.sum(1).eq(n * k).all()
    assert result.class_counts.sum(1).eq(n).all()


def test_same_seed_same_bits_and_chunking_does_not_matter(timm_vit, images):
    kwargs = dict(method="rollout", sigma=0.1, n_samples=20, k=4)
    a = DDSAttention(timm_vit, batch_size=1, **kwargs).details(images, seed=3)
    b = DDSAttention(timm_vit, batch_size=64, **kwargs).details(images, seed=3)
    c = DDSAttention(timm_vit, batch_size=64, **kwargs).details(images, seed=3)
    assert torch.equal(b.mean, c.mean) and torch.equal(b.votes, c.votes)  # bit for bit
    torch.testing.assert_close(a.mean, b.mean, atol=1e-6, rtol=1e-5)
    assert torch.equal(a.votes, b.votes) and torch.equal(a.class_counts, b.class_counts)
    d = DDSAttention(timm_vit, batch_size=64, **kwargs).details(images, seed=4)
    assert not torch.allclose(d.mean, b.mean)
    # One input alone gets the same samples as inside a batch.
    single = DDSAttention(timm_vit, batch_size=7, **kwargs).details(images[1:2], seed=3)
    torch.testing.assert_close(single.mean[0], b.mean[1], atol=1e-6, rtol=1e-5)


def test_vote_smoothing_and_attribute_shapes(timm_vit, images):
    dds = DDSAttention(timm_vit, method="raw", sigma=0.1, n_samples=8, smoothing="vote", k=5)
    tokens = dds.token_map(images, seed=0)
    assert tokens.shape == (3, 16)
    torch.testing.assert_close(tokens.sum(1), torch.full((3,), 5.0))  # Σ P(in top-k) = k
    attribution = dds.attribute(images, seed=0)
    assert attribution.shape == images.shape and dds.token_grid(images.shape[-2:]) == (4, 4)
    assert dds.details(images, seed=0).layout.grid == (4, 4)
    as_tuple = dds.attribute((images,), seed=0)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], attribution)


def test_diffusion_denoiser_end_to_end(timm_vit, images, tiny_diffusion):
    dds = DDSAttention(timm_vit, tiny_diffusion, "rollout", sigma=0.25, n_samples=4, k=3)
    result = dds.details(images, seed=0)
    assert result.t_star == 145  # THEORY §1 table, linear 1000-step schedule
    assert torch.isfinite(result.mean).all() and result.mean.sum(1).sub(1).abs().max() < 1e-5
    identity = DDSAttention(timm_vit, None, "rollout", sigma=0.25, n_samples=4).details(
        images, seed=0
    )
    assert not torch.allclose(result.mean, identity.mean)  # the denoiser did something


def test_captum_metrics_on_dds_attention(timm_vit, images):
    dds = DDSAttention(timm_vit, None, "grad_rollout", sigma=0.05, n_samples=4)
    attribution = dds.attribute(images, target=1, seed=0)

    def perturb(x):
        noise = torch.randn_like(x) * 0.05
        return noise, x - noise

    infid = infidelity(timm_vit, perturb, images, attribution, target=1, n_perturb_samples=3)
    assert infid.shape == (3,) and torch.isfinite(infid).all()
    sens = sensitivity_max(dds.attribute, images, target=1, seed=0, n_perturb_samples=2)
    assert sens.shape == (3,) and torch.isfinite(sens).all()
    # Zero input perturbation with a fixed seed: the explanation is exactly stable.
    zero = sensitivity_max(
        dds.attribute,
        images,
        target=1,
        seed=0,
        n_perturb_samples=2,
        perturb_func=lambda x, radius: x,
    )
    assert torch.equal(zero, torch.zeros(3))
    tunnel = NoiseTunnel(dds)
    out = tunnel.attribute(images, nt_type="smoothgrad", nt_samples=2, stdevs=0.1, target=1, seed=0)
    assert out.shape == images.shape
    figure, _ = visualization.visualize_image_attr(
        attribution[0].permute(1, 2, 0).numpy(), method="heat_map", sign="positive", use_pyplot=False
    )
    assert figure is not None
    assert dds.get_name() == "DDSAttention"


def test_dds_around_captum_attributions(timm_vit, images):
    dds = DDS(Saliency(timm_vit), IdentityDenoiser(), sigma=1e-6, n_samples=3, batch_size=4)
    smoothed = dds.attribute(images, target=2, seed=0)
    plain = Saliency(timm_vit).attribute(images, target=2)
    torch.testing.assert_close(smoothed, plain, atol=1e-4, rtol=1e-3)
    details = dds.details(images, target=2, seed=0)
    assert details.std.shape == images.shape and torch.equal(details.mean, smoothed)

    noisy = DDS(Saliency(timm_vit), sigma=0.2, n_samples=5, batch_size=2)
    a = noisy.attribute(images, seed=1)  # target = smoothed prediction
    b = DDS(Saliency(timm_vit), sigma=0.2, n_samples=5, batch_size=64).attribute(images, seed=1)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)

    ig = DDS(IntegratedGradients(timm_vit), sigma=0.1, n_samples=2, batch_size=3)
    out = ig.attribute(images, target=0, seed=0, baselines=torch.zeros_like(images), n_steps=3)
    assert out.shape == images.shape

    def perturb(x):
        noise = torch.randn_like(x) * 0.05
        return noise, x - noise

    assert infidelity(timm_vit, perturb, images, a, target=0, n_perturb_samples=2).shape == (3,)
    sens = sensitivity_max(noisy.attribute, images, target=0, seed=0, n_perturb_samples=2)
    assert torch.isfinite(sens).all()


def test_bad_input_gets_clear_errors_and_leaves_the_model_unchanged(timm_vit, images):
    before = model_state(timm_vit)
    with pytest.raises(ValueError, match="sigma"):
        DDSAttention(timm_vit, sigma=0.0)
    with pytest.raises(ValueError, match="sigma"):
        DDSAttention(timm_vit, sigma=-1.0)
    with pytest.raises(ValueError, match="n_samples"):
        DDSAttention(timm_vit, n_samples=0)
    with pytest.raises(ValueError, match="pass k"):
        DDSAttention(timm_vit, smoothing="vote")
    with pytest.raises(ValueError, match="smoothing"):
        DDSAttention(timm_vit, smoothing="median")

    class GrayDenoiser:
        in_channels = 1

        def __call__(self, x, sigma, generator=None):
            return x

    with pytest.raises(ValueError, match="1-channel"):
        DDSAttention(timm_vit, GrayDenoiser(), n_samples=2).attribute(images, seed=0)
    bad = images.clone()
    bad[1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        DDSAttention(timm_vit, n_samples=2).attribute(bad, seed=0)
    with pytest.raises(ValueError, match="k=16 must be smaller than the number of patch tokens"):
        DDSAttention(timm_vit, n_samples=2, k=16).details(images, seed=0)

    class Exploding:
        def __call__(self, x, sigma, generator=None):
            raise RuntimeError("denoiser failed")

    with pytest.raises(RuntimeError, match="denoiser failed"):
        DDSAttention(timm_vit, Exploding(), "grad_rollout", n_samples=2).attribute(images, 0, 0)
    with pytest.raises(TypeError, match="Captum Attribution"):
        DDS(timm_vit)
    assert model_state(timm_vit) == before
