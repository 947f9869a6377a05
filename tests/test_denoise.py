"""Tests for captum_fvit.denoise: t* rule, one-shot/multi-step diffusion denoising, identity."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_tiny_unet
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from captum_fvit.denoise import (
    Denoiser,
    DiffusionDenoiser,
    IdentityDenoiser,
    denoiser_in_channels,
    max_sigma,
    timestep_for_sigma,
)

PUBLISHED_T_STAR = {0.12: 70, 0.25: 145, 0.5: 259, 1.0: 396}


# --------------------------------------------------------------------------- helpers
def linear_scheduler(**kwargs) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", **kwargs
    )


def loop_t_star(alphas_cumprod, sigma: float) -> int | None:
    """Independent reference: scan t upwards in plain Python."""
    for t, a in enumerate(float(v) for v in alphas_cumprod):
        if math.sqrt((1.0 - a) / a) >= 2.0 * sigma:
            return t
    return None


def clean_batch(n=4, c=3, h=16, w=16, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.05 + 0.9 * torch.rand(n, c, h, w, generator=g)  # strictly inside (0, 1)


class OracleUNet(torch.nn.Module):
    """Knows the clean image x0 (in [-1, 1]) and returns the exact target.

    For input ``x_t`` at timestep ``t`` the exact noise is
    ``eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)``; the oracle returns
    eps, ``v = sqrt(abar) eps - sqrt(1 - abar) x0`` or x0, as asked.
    """

    def __init__(self, x0_pm1, alphas_cumprod, prediction_type, learned_variance=False, sample_size=None):
        super().__init__()
        c = x0_pm1.shape[1]
        self.config = SimpleNamespace(
            in_channels=c, out_channels=2 * c if learned_variance else c, sample_size=sample_size
        )
        self.x0 = x0_pm1.double()
        self.abar = torch.as_tensor(alphas_cumprod).double()
        self.prediction_type = prediction_type
        self.learned_variance = learned_variance
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x_t, timesteps):
        self.calls.append((x_t.clone(), timesteps.clone()))
        a = self.abar[timesteps].view(-1, 1, 1, 1)
        xt = x_t.double()
        eps = (xt - a.sqrt() * self.x0) / (1 - a).sqrt()
        if self.prediction_type == "epsilon":
            out = eps
        elif self.prediction_type == "v_prediction":
            out = a.sqrt() * eps - (1 - a).sqrt() * self.x0
        else:
            out = self.x0.expand_as(xt)
        if self.learned_variance:  # garbage variance channels must be ignored
            out = torch.cat([out, 100.0 * torch.ones_like(out)], dim=1)
        return SimpleNamespace(sample=out.to(x_t.dtype))


class RecordingZeroEps(torch.nn.Module):
    """Predicts eps = 0 and records its inputs."""

    def __init__(self, channels=3, sample_size=None):
        super().__init__()
        self.config = SimpleNamespace(in_channels=channels, out_channels=channels, sample_size=sample_size)
        self.inputs: list[torch.Tensor] = []
        self.timesteps: list[torch.Tensor] = []

    def forward(self, x_t, timesteps):
        self.inputs.append(x_t.clone())
        self.timesteps.append(timesteps.clone())
        return (torch.zeros_like(x_t),)


def tiny_unet() -> UNet2DModel:
    return make_tiny_unet()


# --------------------------------------------------------------------------- t* rule
def test_t_star_matches_published_table():
    abar = linear_scheduler().alphas_cumprod
    got = {s: timestep_for_sigma(abar, s) for s in PUBLISHED_T_STAR}
    assert got == PUBLISHED_T_STAR


def test_t_star_matches_guided_diffusion_schedule():
    """ADM's own float64 linear schedule gives the same table."""
    from guided_diffusion.gaussian_diffusion import get_named_beta_schedule

    abar = np.cumprod(1.0 - get_named_beta_schedule("linear", 1000))
    assert {s: timestep_for_sigma(abar, s) for s in PUBLISHED_T_STAR} == PUBLISHED_T_STAR


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2", "scaled_linear"])
def test_t_star_matches_python_loop(beta_schedule):
    abar = DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule).alphas_cumprod
    limit = max_sigma(abar)
    sigmas = np.concatenate([np.geomspace(1e-3, 0.999 * limit, 60), list(PUBLISHED_T_STAR)])
    for s in sigmas:
        s = float(s)
        if s >= limit:
            continue
        assert timestep_for_sigma(abar, s) == loop_t_star(abar, s), s
    assert timestep_for_sigma(abar, 1e-6) == 0  # ratio at t = 0 already exceeds 2 sigma


def test_t_star_boundaries_are_inclusive():
    abar = linear_scheduler().alphas_cumprod.double()
    ratio = ((1 - abar) / abar).sqrt()
    t = 259
    half_ratio = float(ratio[t]) / 2
    assert timestep_for_sigma(abar, half_ratio) == t  # ratio_t >= 2 sigma holds with equality
    assert timestep_for_sigma(abar, half_ratio * (1 + 1e-9)) == t + 1


def test_t_star_rejects_bad_inputs():
    abar = linear_scheduler().alphas_cumprod
    with pytest.raises(ValueError, match="too large"):
        timestep_for_sigma(abar, 100.0)
    with pytest.raises(ValueError, match="too large"):
        timestep_for_sigma(abar, max_sigma(abar) * 1.001)
    assert timestep_for_sigma(abar, max_sigma(abar) * 0.999) == 999
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma"):
            timestep_for_sigma(abar, bad)
    with pytest.raises(ValueError, match="non-increasing"):
        timestep_for_sigma(torch.flip(abar, [0]), 0.25)


# --------------------------------------------------------------------------- one-shot oracle
@pytest.mark.parametrize(
    "prediction_type,scheduler_cls,learned",
    [
        ("epsilon", DDPMScheduler, False),
        ("v_prediction", DDIMScheduler, False),
        ("sample", DDPMScheduler, False),
        ("epsilon", DDPMScheduler, True),
    ],
)
@pytest.mark.parametrize("sigma", [0.12, 0.5])
def test_one_shot_oracle_recovers_clean_image(prediction_type, scheduler_cls, learned, sigma):
    scheduler = scheduler_cls(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        prediction_type=prediction_type,
    )
    x = clean_batch()
    g = torch.Generator().manual_seed(1)
    x_noisy = x + sigma * torch.randn(x.shape, generator=g)
    oracle = OracleUNet(2 * x - 1, scheduler.alphas_cumprod, prediction_type, learned_variance=learned)
    den = DiffusionDenoiser(oracle, scheduler)
    assert den.learned_variance is learned
    out = den(x_noisy, sigma)

    torch.testing.assert_close(out, x, atol=2e-5, rtol=0)
    # exactly one UNet call, at the published t*, with x_t = sqrt(abar)(2 x_noisy - 1)
    assert len(oracle.calls) == 1
    x_t, t = oracle.calls[0]
    assert t.dtype == torch.long and t.tolist() == [PUBLISHED_T_STAR[sigma]] * x.shape[0]
    abar = float(scheduler.alphas_cumprod[PUBLISHED_T_STAR[sigma]])
    torch.testing.assert_close(x_t, math.sqrt(abar) * (2 * x_noisy - 1))


def test_clip_bounds_output_and_off_switch_keeps_range():
    sched = linear_scheduler()
    x = clean_batch()
    x_noisy = x + 0.25 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    zero = RecordingZeroEps()  # eps = 0  =>  x0_hat = 2 x_noisy - 1, leaves [-1, 1]
    clipped = DiffusionDenoiser(zero, sched)(x_noisy, 0.25)
    raw = DiffusionDenoiser(zero, sched, clip=False)(x_noisy, 0.25)
    torch.testing.assert_close(raw, x_noisy)
    torch.testing.assert_close(clipped, x_noisy.clamp(0, 1))
    assert raw.min() < 0 and raw.max() > 1


def test_output_keeps_dtype_and_float64_path():
    sched = linear_scheduler()
    x = clean_batch().double()
    oracle = OracleUNet(2 * x - 1, sched.alphas_cumprod, "epsilon")
    oracle.dtype = torch.float64  # the UNet's dtype decides what it is fed
    out = DiffusionDenoiser(oracle, sched)(x + 0.01, 0.25)
    assert out.dtype == torch.float64 and oracle.calls[0][0].dtype == torch.float64
    torch.testing.assert_close(out, x, atol=1e-10, rtol=0)
    out32 = DiffusionDenoiser(OracleUNet(2 * x - 1, sched.alphas_cumprod, "epsilon"), sched)(x + 0.01, 0.25)
    assert out32.dtype == torch.float64  # float32 UNet: output still in the input's dtype
    torch.testing.assert_close(out32, x, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- exact noise match
def test_exact_noise_match_adds_the_missing_variance():
    sched = linear_scheduler()
    sigma = 0.25
    t = PUBLISHED_T_STAR[sigma]
    abar = float(sched.alphas_cumprod[t])
    rec = RecordingZeroEps()
    den = DiffusionDenoiser(rec, sched, exact_noise_match=True)
    x = torch.full((16, 3, 32, 32), 0.5)  # 2x - 1 = 0, so x_t is pure added noise

    den(x, sigma, generator=torch.Generator().manual_seed(0))  # delta = 0: only the match noise
    added = rec.inputs[-1]
    expected = math.sqrt((1 - abar) - 4 * sigma**2 * abar)
    assert abs(added.std().item() / expected - 1) < 0.02
    assert abs(added.mean().item()) < 0.01 * expected * 10

    delta = sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    den(x + delta, sigma, generator=torch.Generator().manual_seed(2))  # delta + match noise
    assert abs(rec.inputs[-1].std().item() / math.sqrt(1 - abar) - 1) < 0.02

    DiffusionDenoiser(rec, sched)(x + delta, sigma)  # no match: std 2 sigma sqrt(abar)
    assert abs(rec.inputs[-1].std().item() / (2 * sigma * math.sqrt(abar)) - 1) < 0.02


def test_exact_noise_match_is_reproducible_with_generator():
    sched = linear_scheduler()
    x = clean_batch()
    den = DiffusionDenoiser(RecordingZeroEps(), sched, exact_noise_match=True, clip=False)
    a = den(x, 0.25, generator=torch.Generator().manual_seed(7))
    b = den(x, 0.25, generator=torch.Generator().manual_seed(7))
    c = den(x, 0.25, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_exact_noise_match_with_oracle_still_recovers_image():
    sched = linear_scheduler()
    x = clean_batch()
    oracle = OracleUNet(2 * x - 1, sched.alphas_cumprod, "epsilon")
    den = DiffusionDenoiser(oracle, sched, exact_noise_match=True)
    out = den(x + 0.1 * torch.randn(x.shape), 0.25, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x, atol=2e-5, rtol=0)


# --------------------------------------------------------------------------- resizing
def test_resize_to_sample_size_and_back():
    sched = linear_scheduler()
    rec = RecordingZeroEps(sample_size=32)
    x = clean_batch(h=24, w=24)
    x_noisy = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    out = DiffusionDenoiser(rec, sched, clip=False)(x_noisy, 0.1)
    assert out.shape == (4, 3, 24, 24)
    assert rec.inputs[-1].shape == (4, 3, 32, 32)
    # eps = 0 makes the denoiser the resize round trip; compare to torch directly
    up = F.interpolate(x_noisy, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    reference = F.interpolate(up, size=(24, 24), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)


def test_resize_never_runs_at_input_size_and_tuple_sample_size():
    sched = linear_scheduler()
    rec = RecordingZeroEps(sample_size=32)
    x = clean_batch(h=24, w=24)
    assert DiffusionDenoiser(rec, sched, resize="never")(x, 0.1).shape == x.shape
    assert rec.inputs[-1].shape[-2:] == (24, 24)
    rec2 = RecordingZeroEps(sample_size=(16, 32))
    assert DiffusionDenoiser(rec2, sched, interpolation="bicubic")(x, 0.1).shape == x.shape
    assert rec2.inputs[-1].shape[-2:] == (16, 32)


def test_resize_with_real_unet():
    den = DiffusionDenoiser(tiny_unet(), linear_scheduler())
    x = clean_batch(n=2, h=24, w=24)
    out = den(x, 0.25)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


# --------------------------------------------------------------------------- multi-step
def test_multistep_timesteps_and_oracle_recovery():
    sched = linear_scheduler()
    x = clean_batch()
    for eta in (0.0, 1.0):
        oracle = OracleUNet(2 * x - 1, sched.alphas_cumprod, "epsilon")
        den = DiffusionDenoiser(oracle, sched, num_steps=4, eta=eta)
        assert den.timesteps(0.25) == [145, 97, 48, 0]
        out = den(x + 0.25 * torch.randn(x.shape), 0.25, generator=torch.Generator().manual_seed(0))
        assert [int(t[0]) for _, t in oracle.calls] == [145, 97, 48, 0]
        torch.testing.assert_close(out, x, atol=2e-5, rtol=0)
        # intermediate samples follow the forward process: x_s = sqrt(abar_s) x0 + noise
        x_s = oracle.calls[1][0]
        abar_s = float(sched.alphas_cumprod[97])
        resid = (x_s - math.sqrt(abar_s) * (2 * x - 1)) / math.sqrt(1 - abar_s)
        assert 0.7 < resid.std().item() < 1.3


def test_multistep_one_step_equals_one_shot_and_dedups():
    sched = linear_scheduler()
    unet = tiny_unet()
    x = clean_batch(n=2, h=16, w=16)
    x_noisy = x + 0.25 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    one_shot = DiffusionDenoiser(unet, sched, resize="never")(x_noisy, 0.25)
    also_one = DiffusionDenoiser(unet, sched, num_steps=1, eta=1.0, resize="never")(x_noisy, 0.25)
    assert torch.equal(one_shot, also_one)
    many = DiffusionDenoiser(unet, sched, num_steps=50)
    steps = many.timesteps(0.005)  # t* is tiny: fewer distinct steps than requested
    assert steps == sorted(set(steps), reverse=True) and steps[-1] == 0
    assert len(steps) == timestep_for_sigma(sched.alphas_cumprod, 0.005) + 1


def test_multistep_real_unet_shape_and_seeded_determinism():
    unet = tiny_unet()
    den = DiffusionDenoiser(
        unet, linear_scheduler(), num_steps=2, eta=0.5, exact_noise_match=True, resize="never"
    )
    x = clean_batch(n=2, h=16, w=16)
    a = den(x, 0.25, generator=torch.Generator().manual_seed(3))
    b = den(x, 0.25, generator=torch.Generator().manual_seed(3))
    c = den(x, 0.25, generator=torch.Generator().manual_seed(4))
    assert a.shape == x.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert not a.requires_grad


def test_differentiable_flag_lets_gradients_through():
    unet = tiny_unet()
    den = DiffusionDenoiser(unet, linear_scheduler(), differentiable=True, resize="never")
    x = clean_batch(n=1, h=16, w=16).requires_grad_(True)
    den(x, 0.25).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    x2 = clean_batch(n=1, h=16, w=16).requires_grad_(True)
    assert not DiffusionDenoiser(unet, linear_scheduler(), resize="never")(x2, 0.25).requires_grad


# --------------------------------------------------------------------------- from_pretrained
def test_from_pretrained_pipeline_and_root_layouts(tmp_path):
    unet = tiny_unet()
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    unet.save_pretrained(tmp_path / "pipe" / "unet")
    sched.save_pretrained(tmp_path / "pipe" / "scheduler")
    unet.save_pretrained(tmp_path / "root")
    sched.save_pretrained(tmp_path / "root")

    x = clean_batch(n=2, h=32, w=32)
    reference = DiffusionDenoiser(unet, sched, exact_noise_match=True)(
        x, 0.25, generator=torch.Generator().manual_seed(0)
    )
    for path, sub in ((tmp_path / "pipe", "unet"), (tmp_path / "root", None)):
        loaded = DiffusionDenoiser.from_pretrained(
            str(path), subfolder=sub, local_files_only=True, exact_noise_match=True
        )
        assert isinstance(loaded.unet, UNet2DModel)
        assert loaded.exact_noise_match
        torch.testing.assert_close(loaded.scheduler.alphas_cumprod, sched.alphas_cumprod)
        out = loaded(x, 0.25, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out, reference)

    explicit = DiffusionDenoiser.from_pretrained(
        str(tmp_path / "root"), scheduler=linear_scheduler(), local_files_only=True
    )
    assert explicit.timestep(0.25) == 145


def test_from_pretrained_missing_folder_raises(tmp_path):
    with pytest.raises((OSError, EnvironmentError)):
        DiffusionDenoiser.from_pretrained(str(tmp_path / "nope"), local_files_only=True)


# --------------------------------------------------------------------------- identity + protocol
def test_identity_denoiser():
    x = clean_batch() + 0.5 * torch.randn(4, 3, 16, 16)
    den = IdentityDenoiser()
    assert den(x, 0.5) is x
    torch.testing.assert_close(IdentityDenoiser(clamp=True)(x, 0.5), x.clamp(0, 1))
    assert denoiser_in_channels(den) is None
    assert den(torch.rand(2, 5, 4, 4), 0.1).shape == (2, 5, 4, 4)  # any channel count


def test_protocol_and_channels():
    den = DiffusionDenoiser(RecordingZeroEps(channels=3), linear_scheduler())
    assert isinstance(den, Denoiser) and isinstance(IdentityDenoiser(), Denoiser)
    assert denoiser_in_channels(den) == 3 and den.in_channels == 3
    assert denoiser_in_channels(lambda x, s, generator=None: x) is None
    assert den.max_sigma == pytest.approx(max_sigma(linear_scheduler().alphas_cumprod))


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("make", [lambda: IdentityDenoiser(), lambda: DiffusionDenoiser(RecordingZeroEps(), linear_scheduler())])
def test_bad_inputs_raise_clear_errors(make):
    den = make()
    x = torch.rand(2, 3, 16, 16)
    for bad in (0.0, -0.25, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite float > 0"):
            den(x, bad)
    with pytest.raises(ValueError, match="sigma must be a float"):
        den(x, "0.25")
    with pytest.raises(ValueError, match="4-D batch"):
        den(torch.rand(3, 16, 16), 0.25)
    with pytest.raises(TypeError, match="floating-point"):  # TypeError, as validation raises
        den(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), 0.25)
    with pytest.raises(TypeError, match="torch.Tensor"):
        den(x.numpy(), 0.25)
    with pytest.raises(TypeError, match="torch.Generator"):
        den(x, 0.25, generator=123)


def test_diffusion_specific_errors():
    den = DiffusionDenoiser(RecordingZeroEps(channels=3), linear_scheduler())
    with pytest.raises(ValueError, match="expects images with 3 channel"):
        den(torch.rand(2, 1, 16, 16), 0.25)
    with pytest.raises(ValueError, match="too large for this diffusion schedule"):
        den(torch.rand(2, 3, 16, 16), 100.0)
    with pytest.raises(ValueError, match="num_steps"):
        DiffusionDenoiser(RecordingZeroEps(), linear_scheduler(), num_steps=0)
    with pytest.raises(ValueError, match="resize"):
        DiffusionDenoiser(RecordingZeroEps(), linear_scheduler(), resize="yes")
    with pytest.raises(ValueError, match="prediction_type"):
        DiffusionDenoiser(RecordingZeroEps(), SimpleNamespace(
            alphas_cumprod=linear_scheduler().alphas_cumprod,
            config=SimpleNamespace(prediction_type="score")))
    with pytest.raises(TypeError, match="alphas_cumprod"):
        DiffusionDenoiser(RecordingZeroEps(), object())
    cond = RecordingZeroEps()
    cond.config.num_class_embeds = 10
    with pytest.raises(ValueError, match="class-conditional"):
        DiffusionDenoiser(cond, linear_scheduler())
    odd = RecordingZeroEps()
    odd.config.out_channels = 4
    with pytest.raises(ValueError, match="out_channels"):
        DiffusionDenoiser(odd, linear_scheduler())
