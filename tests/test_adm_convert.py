"""ADM (guided-diffusion) -> diffusers conversion, checked against guided_diffusion itself."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from guided_diffusion.script_util import create_gaussian_diffusion
from guided_diffusion.unet import UNetModel

from captum_fvit.denoise import (
    ADM_256_UNCOND,
    ADMConfig,
    DiffusionDenoiser,
    adm_scheduler_kwargs,
    adm_unet_kwargs,
    convert_adm_state_dict,
    load_guided_diffusion,
)

ADM_256_UNCOND_PARAMS = 552_814_086  # OpenAI's 256x256_diffusion_uncond.pt

# reduced-width 32x32 config (about 1.4 M parameters with one res block per level)
SMALL = ADMConfig(
    image_size=32,
    in_channels=3,
    model_channels=32,
    out_channels=6,
    num_res_blocks=1,
    attention_ds=(2, 4),
    channel_mult=(1, 2, 2),
    num_head_channels=8,
    use_scale_shift_norm=True,
    resblock_updown=True,
    use_new_attention_order=False,
)


def build_adm(cfg: ADMConfig, seed: int = 0) -> UNetModel:
    """guided_diffusion's UNetModel for cfg with EVERY parameter re-drawn.

    ADM zero-initialises the last conv of each ResBlock, attention proj_out and
    the output conv, which would hide mapping bugs. Here weights are
    N(0, 1/fan_in), biases N(0, 0.1^2) and GroupNorm scales 1 + N(0, 0.1^2),
    so activations stay O(1) and every tensor (attention included) matters.
    """
    model = UNetModel(
        image_size=cfg.image_size,
        in_channels=cfg.in_channels,
        model_channels=cfg.model_channels,
        out_channels=cfg.out_channels,
        num_res_blocks=cfg.num_res_blocks,
        attention_resolutions=cfg.attention_ds,
        dropout=0.0,
        channel_mult=cfg.channel_mult,
        conv_resample=cfg.conv_resample,
        num_classes=cfg.num_classes,
        num_heads=cfg.num_heads,
        num_head_channels=cfg.num_head_channels,
        num_heads_upsample=cfg.num_heads_upsample,
        use_scale_shift_norm=cfg.use_scale_shift_norm,
        resblock_updown=cfg.resblock_updown,
        use_new_attention_order=cfg.use_new_attention_order,
    ).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=g)
                if isinstance(module, torch.nn.GroupNorm) and name == "weight":
                    p.copy_(1.0 + 0.1 * noise)
                elif p.dim() == 1:
                    p.copy_(0.1 * noise)
                else:
                    p.copy_(noise / math.sqrt(p[0].numel()))
    assert all(p.abs().sum() > 0 for p in model.parameters())  # no zero-initialised tensor left
    return model


def compare(adm: UNetModel, unet: UNet2DModel, cfg: ADMConfig, seed: int = 1) -> float:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.tensor([0, 259, 999])
    y = torch.tensor([0, 3, 7]) if cfg.num_classes else None
    with torch.no_grad():
        ref = adm(x, t, y) if y is not None else adm(x, t)
        out = unet(x, t, class_labels=y).sample
    assert out.shape == ref.shape == (3, cfg.out_channels, cfg.image_size, cfg.image_size)
    assert ref.std() > 0.1  # the comparison is not between two near-zero outputs
    return (out - ref).abs().max().item()


# --------------------------------------------------------------------------- numerical equivalence
@pytest.mark.parametrize(
    "changes",
    [
        {},  # the 256-uncond layout at small width: legacy attention, scale-shift, resblock up/down
        {"use_new_attention_order": True},
        {"num_res_blocks": 2},
        {"resblock_updown": False, "use_scale_shift_norm": False, "out_channels": 3},
        {"num_classes": 10, "num_head_channels": -1, "num_heads": 4},  # num_heads mode, 16-wide heads
    ],
    ids=["legacy", "new-order", "two-res-blocks", "conv-resample-no-film", "class-cond-num-heads"],
)
def test_converted_model_matches_guided_diffusion(changes):
    cfg = dataclasses.replace(SMALL, **changes)
    adm = build_adm(cfg)
    unet, scheduler = load_guided_diffusion(adm.state_dict(), cfg)
    assert isinstance(unet, UNet2DModel) and isinstance(scheduler, DDPMScheduler)
    assert not unet.training
    n_adm = sum(p.numel() for p in adm.parameters())
    assert sum(p.numel() for p in unet.parameters()) == n_adm
    if not changes:
        assert 1_300_000 < n_adm < 1_500_000
    assert compare(adm, unet, cfg) <= 1e-4


def test_wrong_attention_order_is_detected():
    """The equivalence check is sensitive to the qkv layout (the conversion is not vacuous)."""
    adm = build_adm(SMALL)
    wrong = dataclasses.replace(SMALL, use_new_attention_order=True)
    unet, _ = load_guided_diffusion(adm.state_dict(), wrong)
    assert compare(adm, unet, SMALL) > 0.1


def test_converted_weights_do_not_alias_the_source_and_load_from_file(tmp_path):
    adm = build_adm(SMALL)
    path = tmp_path / "adm.pt"
    torch.save(adm.state_dict(), path)
    unet, _ = load_guided_diffusion(path, SMALL)
    assert compare(adm, unet, SMALL) <= 1e-4
    unet2, _ = load_guided_diffusion(adm.state_dict(), SMALL)
    source = {p.data_ptr() for p in adm.parameters()}
    assert not source & {p.data_ptr() for p in unet2.parameters()}
    with pytest.raises(FileNotFoundError, match="256x256_diffusion_uncond"):
        load_guided_diffusion(tmp_path / "missing.pt", SMALL)


def test_denoiser_on_converted_model_matches_guided_diffusion_pred_xstart():
    """End to end: DiffusionDenoiser(ADM) == guided_diffusion's own clipped x0 prediction."""
    adm = build_adm(SMALL)
    denoiser = DiffusionDenoiser(*load_guided_diffusion(adm.state_dict(), SMALL))
    diffusion = create_gaussian_diffusion(steps=1000, learn_sigma=True, noise_schedule="linear")
    sigma = 0.25
    t_star = 145
    assert denoiser.timestep(sigma) == t_star

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    x_noisy = x + sigma * torch.randn(x.shape, generator=g)
    out = denoiser(x_noisy, sigma)

    x_t = math.sqrt(diffusion.alphas_cumprod[t_star]) * (2 * x_noisy - 1)
    with torch.no_grad():
        pred = diffusion.p_mean_variance(adm, x_t, torch.full((2,), t_star), clip_denoised=True)
    reference = (pred["pred_xstart"] + 1) / 2
    assert (out - reference).abs().max().item() <= 1e-4


# --------------------------------------------------------------------------- full 256 model, meta device
def adm_256_on_meta() -> UNetModel:
    cfg = ADM_256_UNCOND
    with torch.device("meta"):
        return UNetModel(
            image_size=cfg.image_size,
            in_channels=cfg.in_channels,
            model_channels=cfg.model_channels,
            out_channels=cfg.out_channels,
            num_res_blocks=cfg.num_res_blocks,
            attention_resolutions=cfg.attention_ds,
            dropout=0.0,
            channel_mult=cfg.channel_mult,
            num_head_channels=cfg.num_head_channels,
            use_scale_shift_norm=cfg.use_scale_shift_norm,
            resblock_updown=cfg.resblock_updown,
            use_new_attention_order=cfg.use_new_attention_order,
        )


def test_full_256_uncond_converts_on_meta_device():
    adm = adm_256_on_meta()
    assert sum(p.numel() for p in adm.parameters()) == ADM_256_UNCOND_PARAMS

    with torch.device("meta"):
        bare = UNet2DModel(**adm_unet_kwargs(ADM_256_UNCOND))
    assert sum(p.numel() for p in bare.parameters()) == ADM_256_UNCOND_PARAMS

    converted = convert_adm_state_dict(adm.state_dict())
    expected = bare.state_dict()
    assert set(converted) == set(expected)
    assert all(converted[k].shape == v.shape for k, v in expected.items())
    assert sum(v.numel() for v in converted.values()) == ADM_256_UNCOND_PARAMS

    unet, scheduler = load_guided_diffusion(adm.state_dict(), device="meta")
    assert sum(p.numel() for p in unet.parameters()) == ADM_256_UNCOND_PARAMS
    assert unet.config.sample_size == 256 and unet.config.out_channels == 6
    # the middle attention keeps its GroupNorm (the 2,048 parameters a naive config misses)
    assert unet.mid_block.attentions[0].group_norm.weight.shape == (1024,)
    assert scheduler.config.variance_type == "learned_range"


def test_every_tensor_is_accounted_for():
    state = adm_256_on_meta().state_dict()
    extra = dict(state, **{"input_blocks.1.0.surprise": torch.empty(3, device="meta")})
    with pytest.raises(KeyError, match="unconverted 1"):
        convert_adm_state_dict(extra)
    short = dict(state)
    del short["middle_block.1.norm.weight"]
    with pytest.raises(KeyError, match="missing 1"):
        convert_adm_state_dict(short)
    wrong_config = dataclasses.replace(ADM_256_UNCOND, num_res_blocks=3)
    with pytest.raises(KeyError, match="does not match the config"):
        convert_adm_state_dict(state, wrong_config)
    wrong_width = dataclasses.replace(ADM_256_UNCOND, num_head_channels=32)
    bad_shapes = {k: torch.empty(v.shape, device="meta") for k, v in state.items()}
    bad_shapes["out.2.bias"] = torch.empty(3, device="meta")  # a 3-channel output head
    with pytest.raises(ValueError, match="shape mismatches"):
        load_guided_diffusion(bad_shapes, wrong_width, device="meta")


# --------------------------------------------------------------------------- configs and schedule
def test_flags_preset_and_unsupported_configs():
    flags = ADMConfig.from_flags(
        image_size=256,
        num_channels=256,
        num_res_blocks=2,
        attention_resolutions="32,16,8",
        learn_sigma=True,
        num_head_channels=64,
        resblock_updown=True,
        use_scale_shift_norm=True,
    )
    assert flags == ADM_256_UNCOND
    assert ADM_256_UNCOND.learn_sigma and ADM_256_UNCOND.attention_ds == (8, 16, 32)
    kwargs = adm_unet_kwargs(ADM_256_UNCOND)
    assert kwargs["block_out_channels"] == (256, 256, 512, 512, 1024, 1024)
    assert kwargs["down_block_types"][:3] == ("ResnetDownsampleBlock2D",) * 3
    assert kwargs["down_block_types"][3:] == ("AttnDownBlock2D",) * 3
    assert kwargs["up_block_types"] == ("AttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",) * 3
    assert kwargs["attention_head_dim"] == 64 and kwargs["attn_norm_num_groups"] == 32
    assert kwargs["resnet_time_scale_shift"] == "scale_shift" and kwargs["norm_eps"] == 1e-5
    assert kwargs["flip_sin_to_cos"] is True and kwargs["freq_shift"] == 0

    with pytest.raises(NotImplementedError, match="channel_mult"):
        adm_unet_kwargs(ADMConfig.from_flags(image_size=512, num_channels=256, num_res_blocks=2))
    with pytest.raises(NotImplementedError, match="head width"):
        # attention at widths 32 and 64 with 2 heads: 16- and 32-wide heads
        adm_unet_kwargs(dataclasses.replace(SMALL, attention_ds=(1, 2), num_head_channels=-1, num_heads=2))
    with pytest.raises(NotImplementedError, match="conv_resample"):
        adm_unet_kwargs(dataclasses.replace(SMALL, resblock_updown=False, conv_resample=False))


@pytest.mark.parametrize("schedule,steps", [("linear", 1000), ("cosine", 1000), ("linear", 250)])
def test_scheduler_matches_guided_diffusion(schedule, steps):
    cfg = dataclasses.replace(ADM_256_UNCOND, noise_schedule=schedule, diffusion_steps=steps)
    ours = DDPMScheduler(**adm_scheduler_kwargs(cfg)).alphas_cumprod.double()
    ref = torch.as_tensor(
        create_gaussian_diffusion(steps=steps, learn_sigma=True, noise_schedule=schedule).alphas_cumprod
    )
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 1e-5
