"""The fast paths give the same answers as the plain fp32 path, within stated tolerances:
bf16 autocast (forced on CPU here; the GPU default), channels-last UNet inputs, and
``torch.compile`` plumbing of the denoiser."""

from __future__ import annotations

import pytest
import torch
from conftest import make_timm_vit, make_tiny_unet
from diffusers import DDPMScheduler

from captum_fvit import DDSAttention, DiffusionDenoiser
from captum_fvit.evaluate import topk_overlap


def _unet():
    return make_tiny_unet().eval()


def test_bf16_autocast_matches_fp32(images):
    """bf16 has an 8-bit mantissa: token maps (each summing to 1 over 16 tokens) may move by
    up to 0.02, the top-4 sets overlap by at least 3/4, and predictions agree. The ViT has
    structured attention (scaled position embeddings) so that its top-k is well defined."""
    timm_vit = make_timm_vit(depth=2)
    with torch.no_grad():
        timm_vit.pos_embed.mul_(12.0)
    denoiser = DiffusionDenoiser(_unet(), DDPMScheduler())
    common = dict(method="rollout", sigma=0.1, n_samples=8, batch_size=12, k=4)
    fp32 = DDSAttention(timm_vit, denoiser, autocast=False, **common).details(images, seed=0)
    bf16 = DDSAttention(timm_vit, denoiser, autocast=torch.bfloat16, **common).details(images, seed=0)
    assert fp32.mean.dtype == bf16.mean.dtype == torch.float32
    difference = (fp32.mean - bf16.mean).abs().max()
    assert 0 < difference < 0.02  # bf16 really ran, and stayed close
    assert topk_overlap(fp32.mean, bf16.mean, 4).min() >= 0.75
    assert torch.equal(fp32.predicted, bf16.predicted)
    # The CPU default (autocast=True) is full fp32: bit-identical to autocast=False.
    default = DDSAttention(timm_vit, denoiser, **common).details(images, seed=0)
    assert torch.equal(default.mean, fp32.mean)


def test_channels_last_denoiser_matches(images):
    pixels = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    noisy = pixels + 0.25 * torch.randn(pixels.shape, generator=torch.Generator().manual_seed(1))
    plain = DiffusionDenoiser(_unet(), DDPMScheduler())(noisy, 0.25)
    fast = DiffusionDenoiser(_unet(), DDPMScheduler(), channels_last=True)(noisy, 0.25)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_compile_option_routes_the_unet_through_torch_compile(monkeypatch):
    calls = []
    real = torch.compile

    def recording_compile(module, **options):
        calls.append(options)
        return real(module, backend="eager")

    monkeypatch.setattr(torch, "compile", recording_compile)
    unet = _unet()
    noisy = torch.rand(2, 3, 32, 32)
    reference = DiffusionDenoiser(unet, DDPMScheduler())(noisy, 0.25)
    compiled = DiffusionDenoiser(unet, DDPMScheduler(), compile={"mode": "reduce-overhead"})
    torch.testing.assert_close(compiled(noisy, 0.25), reference, atol=1e-6, rtol=1e-6)
    assert calls == [{"mode": "reduce-overhead"}]
    assert compiled.unet is unet


@pytest.mark.parametrize("autocast", [True, False, torch.bfloat16])
def test_autocast_settings_are_accepted(timm_vit, images, autocast):
    dds = DDSAttention(timm_vit, None, "raw", sigma=0.1, n_samples=2, autocast=autocast)
    assert dds.attribute(images, seed=0).dtype == images.dtype
