# %% [markdown]
# # Quickstart: a DDS-smoothed attention map
#
# This tutorial explains a Vision Transformer's prediction twice: once with a plain
# attention map (`AttentionMap`) and once with the same map smoothed by *Denoised Diffusion
# Smoothing* (`DDSAttention`). Both are Captum attributions, so both return a tensor of the
# input's shape and work with Captum's visualisation.
#
# It runs offline on a CPU in a few seconds. The models are **tiny and randomly
# initialised**, so the maps show the pipeline working, not what a trained network looks
# at. Once the bundled trained default is available, swap the "model and denoiser" cell
# for `captum_fvit.models.load_default()` and nothing else changes.

# %%
import json
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files, never open windows

import timm
import torch
from captum.attr import visualization as viz
from diffusers import DDPMScheduler, UNet2DModel

from captum_fvit import AttentionMap, DDSAttention, DiffusionDenoiser, resolve_normalization
from captum_fvit.data import CLASS_NAMES, NUM_CLASSES, ShapesBenchmark

OUT = Path(os.environ.get("CAPTUM_FVIT_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="fvit_"))
OUT = OUT / "01_quickstart"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## The model and the denoiser
#
# Any timm, torchvision or Hugging Face ViT classifier works as it is: captum-fvit hooks its
# attention while it runs and leaves it untouched afterwards. Here a 4-layer timm ViT takes
# 32×32 images cut into 4×4-pixel patches (an 8×8 grid of patch tokens).
#
# The denoiser is a diffusers `UNet2DModel` with a DDPM noise schedule, wrapped in
# `DiffusionDenoiser`, which denoises in one shot. A real DDS setup uses a UNet trained on
# images like yours (for example OpenAI's ImageNet model via `load_guided_diffusion`).

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
).eval()  # eval(): dropout in training mode would make the attention random

unet = UNet2DModel(
    sample_size=32,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
)
denoiser = DiffusionDenoiser(unet, DDPMScheduler(num_train_timesteps=1000))

# %% [markdown]
# ## Images, and the units everything is measured in
#
# The images come from the bundled procedural benchmark: one coloured shape per image on a
# cluttered background, with its class and a ground-truth mask. Pixels are in [0, 1].
#
# `attribute` takes exactly what the model takes, here timm's normalised tensors. The noise
# level σ, however, is always given in **[0, 1] pixel units** of the image, whatever the
# model's normalisation: `resolve_normalization` reads the model's mean and std (from timm's
# `pretrained_cfg`) and converts between the two.

# %%
data = ShapesBenchmark.from_split("test", size=16, image_size=IMAGE_SIZE)
batch = data.batch(range(4))
pixels, labels = batch["image"], batch["label"]
normalization = resolve_normalization(vit)
inputs = normalization.from_pixels(pixels)  # what vit(...) expects
print("classes:", [CLASS_NAMES[i] for i in labels.tolist()])
print("model normalisation:", normalization)

# %% [markdown]
# ## A plain attention map
#
# `AttentionMap` runs the model once with its attention recorded and turns it into one
# relevance per patch token. `"grad_rollout"` (Chefer et al., 2021) weights each layer's
# attention by its gradient with respect to the explained class; the other methods are
# `"raw"`, `"rollout"` and `"attn_gradcam"`. `target` picks the class to explain (default:
# the predicted class). The attribution has the input's shape (the token map spread over
# each patch and repeated over channels); `token_map` gives the N×64 patch-token map itself.

# %%
plain = AttentionMap(vit, method="grad_rollout")
plain_attr = plain.attribute(inputs, target=labels)
tokens = plain.token_map(inputs, target=labels)
print("attribution:", tuple(plain_attr.shape), "token map:", tuple(tokens.shape), "grid:", plain.grid)

# %% [markdown]
# ## The same map with DDS
#
# `DDSAttention` adds Gaussian noise of std `sigma` to the image, denoises each noisy copy in
# one shot, computes the attention map of the denoised image and averages the
# sum-normalised maps over `n_samples` copies. `seed` fixes every noise draw, so the result
# is reproducible (and independent of `batch_size`).
#
# Without `target`, a class-specific method explains the class the *smoothed* classifier
# predicts (the majority vote over denoised samples).
#
# `details` returns everything one pass measured: the mean map, its per-token standard
# deviation over the samples, the smoothed classifier's prediction and the diffusion
# timestep t* the denoiser started from for this σ. With the same seed it sees the same
# noise as `attribute`, so its mean map is exactly what `attribute` spread over the pixels.

# %%
dds = DDSAttention(vit, denoiser, method="grad_rollout", sigma=0.25, n_samples=16, batch_size=64)
dds_attr = dds.attribute(inputs, target=labels, seed=0)
details = dds.details(inputs, target=labels, seed=0)
print("DDS attribution:", tuple(dds_attr.shape))
print("t* for sigma=0.25:", details.t_star)
print("smoothed prediction:", details.predicted.tolist())
print("largest per-token std over samples:", round(float(details.std.max()), 4))

# %% [markdown]
# ## Visualise with Captum
#
# Captum's visualisation takes H×W×C numpy arrays. The maps are non-negative, so
# `sign="positive"`.

# %%
def to_hwc(t: torch.Tensor):
    return t.permute(1, 2, 0).detach().numpy()


figures = {}
for name, attribution in (("attention", plain_attr), ("dds", dds_attr)):
    fig, _ = viz.visualize_image_attr_multiple(
        to_hwc(attribution[0]),
        to_hwc(pixels[0]),
        methods=["original_image", "heat_map", "blended_heat_map"],
        signs=["all", "positive", "positive"],
        titles=["image", f"{name} map", "blended"],
        show_colorbar=True,
        fig_size=(9, 3),
        use_pyplot=False,
    )
    path = OUT / f"quickstart_{name}.png"
    fig.savefig(path, dpi=80)
    figures[name] = str(path)

summary = {
    "attribution_shape": list(dds_attr.shape),
    "grid": list(details.grid),
    "t_star": details.t_star,
    "predicted": details.predicted.tolist(),
    "figures": figures,
}
(OUT / "quickstart_summary.json").write_text(json.dumps(summary, indent=2))
print("wrote", ", ".join(figures.values()))

# %% [markdown]
# ## Where next
#
# - Tutorial 2 certifies a *faithful region*: a radius within which the top-k tokens and the
#   prediction provably stay put.
# - Tutorial 3 measures faithfulness with Captum's metrics and an adversarial attack.
# - Tutorial 4 wraps DDS around any Captum attribution (Saliency, Integrated Gradients).
