# %% [markdown]
# # DDS around any Captum attribution
#
# Denoised Diffusion Smoothing is not tied to attention. `DDS` wraps *any* Captum
# attribution: for each of `n_samples` noise draws it adds Gaussian noise in [0, 1] pixel
# units, denoises the noisy image with a diffusion model, explains the *denoised* image with
# the wrapped method, and averages. It is the denoised counterpart of Captum's
# `NoiseTunnel` (SmoothGrad), which explains the noisy images themselves.
#
# This tutorial wraps `Saliency` and `IntegratedGradients` around a tiny random ViT with a
# tiny random diffusers `UNet2DModel` as the denoiser, and compares with `NoiseTunnel`.
# Random weights show the mechanics only; with trained models (`load_default()` once it
# ships, or your own) the same code applies.

# %%
import json
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import timm
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from captum.attr import visualization as viz
from diffusers import DDPMScheduler, UNet2DModel

from captum_fvit import DDS, DiffusionDenoiser, resolve_normalization
from captum_fvit.data import NUM_CLASSES, ShapesBenchmark

OUT = Path(os.environ.get("CAPTUM_FVIT_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="fvit_"))
OUT = OUT / "04_dds_any_attribution"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Model and denoiser
#
# `DiffusionDenoiser` keeps diffusers' split between the network (`UNet2DModel`) and the
# noise schedule (`DDPMScheduler`). For a noise level σ it starts the reverse process at the
# timestep t* whose noise matches σ and predicts the clean image in one network call.

# %%
# Once the bundled trained default ships, build the models from it instead:
#     from captum_fvit.models import load_default
#     bundle = load_default()
#     vit, denoiser = bundle.model, bundle.denoiser
#     IMAGE_SIZE = bundle.image_size   # 64×64 inputs, 8×8 patches
IMAGE_SIZE = 32
torch.manual_seed(0)
vit = timm.create_model(
    "vit_tiny_patch16_224",
    pretrained=False,
    img_size=IMAGE_SIZE,
    patch_size=4,
    num_classes=NUM_CLASSES,
    embed_dim=48,
    depth=4,
    num_heads=3,
).eval()
unet = UNet2DModel(
    sample_size=32,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
)
denoiser = DiffusionDenoiser(unet, DDPMScheduler(num_train_timesteps=1000))
sigma = 0.25  # [0, 1] pixel units
print(f"sigma={sigma}: the denoiser starts at t*={denoiser.timestep(sigma)}")

normalization = resolve_normalization(vit)
data = ShapesBenchmark.from_split("test", size=16, image_size=IMAGE_SIZE)
batch = data.batch(range(2))
pixels, labels = batch["image"], batch["label"]
inputs = normalization.from_pixels(pixels)

# %% [markdown]
# ## Saliency
#
# `DDS(Saliency(vit), denoiser, ...)` is itself a Captum attribution. The result has the
# wrapped method's shape; the per-element standard deviation over the samples is kept in
# `last_std`. With `target=None` it explains the smoothed classifier's prediction (the
# majority class over denoised samples).

# %%
dds_saliency = DDS(Saliency(vit), denoiser, sigma=sigma, n_samples=16, batch_size=32)
saliency_map = dds_saliency.attribute(inputs, target=labels, seed=0)
print("DDS(Saliency):", tuple(saliency_map.shape))
print(f"mean per-pixel std over the samples: {float(dds_saliency.last_std.mean()):.3g}")

# %% [markdown]
# For comparison, Captum's `NoiseTunnel` with SmoothGrad adds the noise in the model's
# units (`stdevs`), so the same pixel-space σ is `sigma / std` there, and explains the noisy
# images without denoising.

# %%
smoothgrad = NoiseTunnel(Saliency(vit))
smoothgrad_map = smoothgrad.attribute(
    inputs, nt_type="smoothgrad", nt_samples=16, stdevs=sigma / normalization.std[0], target=labels
)

# %% [markdown]
# ## Integrated Gradients
#
# Keyword arguments other than `target` and `seed` go to the wrapped method. Tensors whose
# first dimension is the batch size (here `baselines`, a black image per input) are
# indexed per sample, so every denoised copy gets its own input's baseline.

# %%
black = normalization.from_pixels(torch.zeros_like(pixels))
dds_ig = DDS(IntegratedGradients(vit), denoiser, sigma=sigma, n_samples=8, batch_size=16)
ig_map = dds_ig.attribute(inputs, target=labels, seed=0, baselines=black, n_steps=8)
print("DDS(IntegratedGradients):", tuple(ig_map.shape))

# %% [markdown]
# ## Visualise
#
# Gradient attributions are signed; show their absolute value.

# %%
def to_hwc(t: torch.Tensor):
    return t.permute(1, 2, 0).detach().numpy()


maps = {
    "dds_saliency": saliency_map,
    "smoothgrad": smoothgrad_map,
    "dds_integrated_gradients": ig_map,
}
for name, attribution in maps.items():
    fig, _ = viz.visualize_image_attr_multiple(
        to_hwc(attribution[0]),
        to_hwc(pixels[0]),
        methods=["original_image", "heat_map", "blended_heat_map"],
        signs=["all", "absolute_value", "absolute_value"],
        titles=["image", name, "blended"],
        fig_size=(9, 3),
        use_pyplot=False,
    )
    fig.savefig(OUT / f"{name}.png", dpi=80)

summary = {name: {"shape": list(m.shape), "abs_mean": float(m.abs().mean())} for name, m in maps.items()}
(OUT / "summary.json").write_text(json.dumps(summary, indent=2))
print("wrote", sorted(p.name for p in OUT.iterdir()))
