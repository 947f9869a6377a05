# %% [markdown]
# # DDS around any Captum attribution
#
# Denoised Diffusion Smoothing is not tied to attention. `DDS` wraps *any* Captum
# attribution: for each of `n_samples` noise draws it adds Gaussian noise in [0, 1] pixel
# units, denoises the noisy image with a diffusion model, explains the *denoised* image with
# the wrapped method, and averages. It is the denoised counterpart of Captum's
# `NoiseTunnel` (SmoothGrad), which explains the noisy images themselves.
#
# This tutorial wraps `Saliency` and `IntegratedGradients` around the trained ViT that
# ships with captum-fvit, with the bundled diffusion denoiser (both from
# `captum_fvit.models.load_default()`), and compares with `NoiseTunnel`. The same code
# applies to your own classifier and denoiser.

# %%
import json
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from captum.attr import visualization as viz

from captum_fvit import DDS
from captum_fvit.data import ShapesBenchmark
from captum_fvit.models import load_default

OUT = Path(os.environ.get("CAPTUM_FVIT_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="fvit_"))
OUT = OUT / "04_dds_any_attribution"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Model and denoiser
#
# `DiffusionDenoiser` keeps diffusers' split between the network (`UNet2DModel`) and the
# noise schedule (`DDPMScheduler`). For a noise level σ it starts the reverse process at the
# timestep t* whose noise matches σ and predicts the clean image in one network call.
#
# `bundle.denoiser` is such a `DiffusionDenoiser` (a `UNet2DModel` trained on the shapes
# benchmark, for σ ≤ 0.5); `bundle.model` is a timm ViT for 64×64 images.

# %%
bundle = load_default()
vit, denoiser = bundle.model, bundle.denoiser
sigma = 0.12  # [0, 1] pixel units
print(f"sigma={sigma}: the denoiser starts at t*={denoiser.timestep(sigma)}")

normalization = bundle.normalization
data = ShapesBenchmark.from_split("test", size=16, image_size=bundle.image_size)
batch = data.batch(range(2))
pixels, labels, masks = batch["image"], batch["label"], batch["mask"]
inputs = normalization.from_pixels(pixels)
with torch.no_grad():
    predicted = vit(inputs).argmax(dim=1)
print("true classes:     ", [bundle.class_names[i] for i in labels.tolist()])
print("predicted classes:", [bundle.class_names[i] for i in predicted.tolist()])

# %% [markdown]
# ## Saliency
#
# `DDS(Saliency(vit), denoiser, ...)` is itself a Captum attribution. The result has the
# input's shape; `details(...)` also returns the per-element standard deviation over the
# samples. With `target=None` it explains the smoothed classifier's prediction (the
# majority class over denoised samples).

# %%
dds_saliency = DDS(Saliency(vit), denoiser, sigma=sigma, n_samples=16, batch_size=32)
saliency_details = dds_saliency.details(inputs, target=labels, seed=0)
saliency_map = saliency_details.mean
print("DDS(Saliency):", tuple(saliency_map.shape))
print(f"mean per-pixel std over the samples: {float(saliency_details.std.mean()):.3g}")

# %% [markdown]
# For comparison, Captum's `NoiseTunnel` with SmoothGrad adds the noise in the model's
# units (`stdevs`), so the same pixel-space σ is `sigma / std` there, and explains the noisy
# images without denoising.

# %%
torch.manual_seed(0)  # NoiseTunnel draws its noise from torch's global generator
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

# %% [markdown]
# ## Where the attributions fall
#
# The benchmark comes with object masks, so the maps can be checked: divide the share of
# each map's absolute mass that falls on the object by the share of the image the object
# covers (1 = no better than uniform). All three land on the shape several times more
# than uniform would: the trained ViT's gradients are about the object. What sets DDS
# apart from SmoothGrad is what the wrapped method is asked about: denoised images, like
# those the model was trained on, rather than noisy ones it never saw.

# %%
def mass_ratio(attribution: torch.Tensor) -> torch.Tensor:
    """Per image: (share of |attribution| on the object) / (object's share of the image)."""
    heat = attribution.abs().sum(dim=1)  # sum the channels
    on_object = (heat * masks[:, 0]).flatten(1).sum(1) / heat.flatten(1).sum(1)
    return on_object / masks[:, 0].float().flatten(1).mean(1)


summary = {
    "sigma": sigma,
    "t_star": denoiser.timestep(sigma),
    "labels": labels.tolist(),
    "predicted": predicted.tolist(),
    "maps": {
        name: {
            "shape": list(m.shape),
            "abs_mean": float(m.abs().mean()),
            "mass_ratio": mass_ratio(m).tolist(),
        }
        for name, m in maps.items()
    },
}
for name, values in summary["maps"].items():
    print(f"{name:26s} |attribution| on the object / object's area share:",
          [round(v, 2) for v in values["mass_ratio"]])
(OUT / "summary.json").write_text(json.dumps(summary, indent=2))
print("wrote", sorted(p.name for p in OUT.iterdir()))
