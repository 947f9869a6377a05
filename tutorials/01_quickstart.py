# %% [markdown]
# # Quickstart: a DDS-smoothed attention map
#
# This tutorial explains a Vision Transformer's prediction twice: once with a plain
# attention map (`AttentionMap`) and once with the same map smoothed by *Denoised Diffusion
# Smoothing* (`DDSAttention`). Both are Captum attributions, so both return a tensor of the
# input's shape and work with Captum's visualisation.
#
# It uses the trained models that ship with captum-fvit (`captum_fvit.models.load_default()`)
# and runs offline on a CPU in a few seconds.

# %%
import json
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files, never open windows

import torch
from captum.attr import visualization as viz

from captum_fvit import AttentionMap, DDSAttention
from captum_fvit.data import ShapesBenchmark
from captum_fvit.models import load_default

OUT = Path(os.environ.get("CAPTUM_FVIT_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="fvit_"))
OUT = OUT / "01_quickstart"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## The model and the denoiser
#
# `load_default()` loads the bundled default from the package (no download) after checking
# every file against its recorded SHA-256:
#
# - `bundle.model`: a small timm ViT trained on the procedural shapes benchmark. It takes
#   64×64 images cut into 8×8-pixel patches, so it sees an 8×8 grid of patch tokens plus a
#   class token, and sorts each image into one of six shape classes (about 95 % accurate on
#   fresh test images).
# - `bundle.denoiser`: a diffusers `UNet2DModel` with a DDPM noise schedule, trained on the
#   same images and wrapped in `DiffusionDenoiser`, which denoises in one network call.
#
# Any timm, torchvision or Hugging Face ViT classifier works the same way: captum-fvit hooks
# its attention while it runs and leaves it untouched afterwards. For your own images, use a
# denoiser trained on images like them (for example OpenAI's ImageNet model via
# `load_guided_diffusion`).

# %%
bundle = load_default()
vit, denoiser = bundle.model, bundle.denoiser  # both in eval mode
print("classes:", bundle.class_names, "image size:", bundle.image_size)

# %% [markdown]
# ## Images, and the units everything is measured in
#
# The images come from the bundled procedural benchmark: one coloured shape per image on a
# cluttered background, with its class and a ground-truth mask of the object. The `"test"`
# split is a stream of images the model never saw during training. Pixels are in [0, 1].
#
# `attribute` takes exactly what the model takes, here normalised tensors. The noise level
# σ, however, is always given in **[0, 1] pixel units** of the image, whatever the model's
# normalisation: `bundle.normalization` (read from the model's timm `pretrained_cfg`, as
# `resolve_normalization` does for any model) converts between the two.

# %%
data = ShapesBenchmark.from_split("test", size=16, image_size=bundle.image_size)
batch = data.batch(range(4))
pixels, labels, masks = batch["image"], batch["label"], batch["mask"]
normalization = bundle.normalization
inputs = normalization.from_pixels(pixels)  # what vit(...) expects
with torch.no_grad():
    predicted = vit(inputs).argmax(dim=1)
print("true classes:     ", [bundle.class_names[i] for i in labels.tolist()])
print("predicted classes:", [bundle.class_names[i] for i in predicted.tolist()])
print("model normalisation:", normalization)

# %% [markdown]
# The trained ViT gets all four images right, so the maps below explain correct predictions.
#
# ## A plain attention map
#
# `AttentionMap` runs the model once with its attention recorded and turns it into one
# relevance per patch token. `"grad_rollout"` (Chefer et al., 2021) weights each layer's
# attention by its gradient with respect to the explained class; the other methods are
# `"raw"`, `"rollout"` and `"attn_gradcam"`. `target` picks the class to explain (default:
# the predicted class). The attribution has the input's shape (the token map spread over
# each 8×8 patch and repeated over channels); `token_map` gives the N×64 patch-token map itself.

# %%
plain = AttentionMap(vit, method="grad_rollout")
plain_attr = plain.attribute(inputs, target=labels)
tokens = plain.token_map(inputs, target=labels)
grid = plain.token_grid(inputs.shape[-2:])
print("attribution:", tuple(plain_attr.shape), "token map:", tuple(tokens.shape), "grid:", grid)

# %% [markdown]
# ## The same map with DDS
#
# `DDSAttention` adds Gaussian noise of std `sigma` to the image, denoises each noisy copy in
# one shot, computes the attention map of the denoised image and averages the
# sum-normalised maps over `n_samples` copies. `seed` fixes every noise draw, so the result
# is reproducible (and independent of `batch_size`). σ = 0.12 is well inside the range the
# bundled denoiser was trained for (σ ≤ 0.5); the denoiser is the expensive step on a CPU,
# so this tutorial keeps to 16 samples per image.
#
# Without `target`, a class-specific method explains the class the *smoothed* classifier
# predicts (the majority vote over denoised samples).
#
# `details` returns everything one pass measured: the mean map, its per-token standard
# deviation over the samples, the smoothed classifier's prediction and the diffusion
# timestep t* the denoiser started from for this σ. With the same seed it sees the same
# noise as `attribute`, so its mean map is exactly what `attribute` spread over the pixels.

# %%
sigma = 0.12  # [0, 1] pixel units
dds = DDSAttention(vit, denoiser, method="grad_rollout", sigma=sigma, n_samples=16, batch_size=64)
dds_attr = dds.attribute(inputs, target=labels, seed=0)
details = dds.details(inputs, target=labels, seed=0)
print("DDS attribution:", tuple(dds_attr.shape))
print(f"t* for sigma={sigma}:", details.t_star)
print("smoothed prediction:", [bundle.class_names[i] for i in details.predicted.tolist()])
print("largest per-token std over samples:", round(float(details.std.max()), 4))

# %% [markdown]
# ## Does the map point at the object?
#
# The benchmark knows where each object is, so we can check what the maps show: the share
# of each map's mass that falls on the object, divided by the share of the image the object
# covers. A ratio of 1 means the map is no better than spreading its mass evenly; the
# trained ViT's maps concentrate on the shape, two to six times above that, with and without
# DDS. (DDS is not there to sharpen the map of a clean image: tutorial 3 shows what it buys,
# stability when the image is attacked.)

# %%
def mass_ratio(attribution: torch.Tensor) -> torch.Tensor:
    """Per image: (map mass on the object / total mass) / (object area / image area)."""
    heat = attribution[:, 0]  # the maps are repeated over channels
    on_object = (heat * masks[:, 0]).flatten(1).sum(1) / heat.flatten(1).sum(1)
    return on_object / masks[:, 0].float().flatten(1).mean(1)


ratios = {"attention": mass_ratio(plain_attr), "dds": mass_ratio(dds_attr)}
for name, ratio in ratios.items():
    print(f"{name:10s} mass on the object / object's area share:", [round(float(r), 2) for r in ratio])

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
    "sigma": sigma,
    "t_star": details.t_star,
    "labels": labels.tolist(),
    "predicted": predicted.tolist(),
    "smoothed_predicted": details.predicted.tolist(),
    "mass_ratio": {name: ratio.tolist() for name, ratio in ratios.items()},
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
