# %% [markdown]
# # Certify a faithful region and read the certificate
#
# A smoothed explanation is *faithful* at an image when small changes of the image cannot
# move its most important tokens or flip the prediction. `FaithfulRegion` turns this into
# numbers that hold with a stated probability:
#
# - `R_β`: within this ℓ2 distance (in [0, 1] pixel units) at least a fraction β of the
#   top-k tokens of the smoothed explanation stay in its top-k;
# - `R_pred`: within this distance the smoothed classifier's prediction does not change;
# - `R = min(R_β, R_pred)`: the radius of the faithful region, for both at once.
#
# The numbers come from Monte-Carlo sampling, so each certificate holds with probability at
# least `1 − α − α_pred` over that sampling. This tutorial certifies two test images with
# the trained ViT and diffusion denoiser that ship with captum-fvit
# (`captum_fvit.models.load_default()`) and reads every part of the result.

# %%
import json
import math
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from captum_fvit import DDSAttention, FaithfulRegion
from captum_fvit import certify as cert
from captum_fvit.data import ShapesBenchmark
from captum_fvit.models import load_default

OUT = Path(os.environ.get("CAPTUM_FVIT_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="fvit_"))
OUT = OUT / "02_certify"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## The smoothed pipeline
#
# The certificate is about a *smoothed* pipeline: noise → denoiser → ViT → explanation,
# averaged over many noise draws. Configure it once as a `DDSAttention` and hand it to
# `FaithfulRegion`.
#
# The pipeline here is the bundled one: noise of std σ = 0.12 (in [0, 1] pixel units) →
# the one-shot diffusion denoiser → the ViT → its `"rollout"` attention map. The certificate
# covers whatever denoiser is in the pipeline, because the denoiser is part of the smoothed
# function; `IdentityDenoiser()` would give plain randomized smoothing instead.

# %%
bundle = load_default()
vit, denoiser = bundle.model, bundle.denoiser

data = ShapesBenchmark.from_split("test", size=16, image_size=bundle.image_size)
batch = data.batch(range(2))
inputs = bundle.normalization.from_pixels(batch["image"])
print("true classes:", [bundle.class_names[i] for i in batch["label"].tolist()])

dds = DDSAttention(vit, denoiser, method="rollout", sigma=0.12, batch_size=128, n_select=16)

# %% [markdown]
# ## Certify
#
# The choices:
#
# - `k=5`, `beta=0.6`: certify that at least 3 of the top-5 tokens (of 64) stay in the top 5;
# - `smoothing="vote"`: the smoothed explanation of token i is the probability that it is in
#   the top-k of one noisy sample's map, bounded with Clopper–Pearson intervals (the other
#   choice, `"mean"`, bounds the mean normalised map with empirical Bernstein bounds);
# - `alpha=0.001`: the explanation bounds fail with probability at most 0.1 %, for all 64
#   tokens at once; `alpha_pred` (default: the same) is the prediction's share;
# - `n_select=16` samples (set on the `DDSAttention`, shared by everything that selects a
#   class) pick the class, `n_samples=200` fresh samples estimate everything. Each sample
#   is one denoiser call, the slow step on a CPU; real certificates use thousands, and more
#   samples give tighter bounds and larger radii.
#
# Each certificate can then tell the faithful region at any radius (`region_at(r)`): the
# tokens certified to stay in the top-k for every change smaller than it, without sampling
# again.

# %%
region = FaithfulRegion(dds, k=5, beta=0.6, alpha=0.001, n_samples=200)
certificates = region.certify(inputs, seed=0)
for i, c in enumerate(certificates):
    print(f"image {i}: {c.summary()}")

# %% [markdown]
# Both images are certified. The smoothed classifier predicts the true class on every one
# of the 200 noisy samples, so `R_pred` is as large as 200 samples allow at this confidence.
# `R_β` differs between the images: where the top-5 tokens are clearly ahead of the rest in
# almost every sample, they keep their place under larger changes; where the fourth and
# fifth tokens compete with runners-up, `R_β` shrinks towards 0.
#
# A radius of 0 means *abstain*: for `R_β`, fewer than ⌈βk⌉ tokens are certified in the
# top-k even at the image itself (their bounds overlap those of the runners-up); for
# `R_pred`, the lower bound on the top class's probability is not above 1/2. Abstaining is
# the honest answer when the samples cannot separate the candidates; more samples (`n_samples`)
# tighten the bounds. (To ask "is this image faithful at radius r?" instead, call
# `region.decide(inputs, r, seed=0)`: an anytime-valid sequential test that stops each image
# as soon as the answer is known.)

# %% [markdown]
# ## Read one certificate
#
# Pick the image with the largest `R_β`. Its fields:
#
# - `confidence` = `1 − alpha − alpha_pred`: the probability, over the sampling, that every
#   statement below holds;
# - `radius_beta`, `radius_pred`, `radius`: ℓ2 radii in [0, 1] pixel units, and their ℓ∞
#   versions (`*_linf` = ℓ2 / √d with d = 3·64·64 values, since an ℓ∞ change of size r has
#   ℓ2 norm at most r·√d);
# - `label`, `p_lower`, `abstain`: the smoothed prediction, a lower confidence bound on its
#   probability, and whether the prediction certificate abstains (`p_lower` ≤ 1/2);
# - `estimate`, `lower`, `upper`: per-token vote frequencies and their simultaneous bounds;
# - `r_in`: per token, the radius within which it provably stays in the top-k;
#   `r_out`: within which it provably stays out;
# - `region_at(r)`: the tokens with `r_in > r`.

# %%
best = max(range(len(certificates)), key=lambda i: certificates[i].radius_beta)
c = certificates[best]
print("confidence:", c.confidence)
print(f"R_beta = {c.radius_beta:.4f} (l2)   = {c.radius_beta_linf:.6f} (linf)")
print(f"R_pred = {c.radius_pred:.4f}   label {c.label} ({bundle.class_names[c.label]}), "
      f"p_lower {c.p_lower:.3f}, abstain {c.abstain}")
print(f"R      = {c.radius:.4f}  = {c.radius_linf * 255:.3f} grey levels of 255 in linf")
top = c.topk.tolist()
print("top-5 tokens:", top)
print("their vote frequencies:", [round(float(c.estimate[t]), 3) for t in top])
print("their certified r_in:  ", [round(float(c.r_in[t]), 4) for t in top])
radius = 0.01
faithful = c.region_at(radius)
print("tokens in the faithful region at radius", radius, ":", faithful.nonzero().flatten().tolist())

# %% [markdown]
# Two checks that follow from the definitions: the faithful region holds exactly the
# tokens whose `r_in` exceeds the radius, and `R_β` is the ⌈βk⌉-th largest `r_in`.

# %%
assert torch.equal(faithful, c.r_in > radius)
needed = math.ceil(c.beta * c.k)
assert math.isclose(c.radius_beta, float(c.r_in.sort(descending=True).values[needed - 1]))

# %% [markdown]
# ## Plug-in estimates are not certificates
#
# `alpha=None` skips the confidence bounds and plugs the point estimates into the same
# formulas. That is fast and useful for exploring, but it is **not** a certificate:
# nothing bounds the error of the estimates. The library marks such results
# `certified=False` and `summary()` says so.
#
# The `captum_fvit.certify` functions are the same maths on plain tensors, so the plug-in
# radius can be computed from the votes of the run above without sampling again.

# %%
votes = (c.estimate * c.n_samples).round()
plug_in = cert.certify_explanation(cert.vote_bounds(votes, c.n_samples, alpha=None), c.k, c.sigma)
certified = cert.certify_explanation(cert.vote_bounds(votes, c.n_samples, alpha=c.alpha), c.k, c.sigma)
print(f"certified R_beta  {float(certified.overlap_radius(c.beta)):.4f}")
print(f"plug-in estimate  {float(plug_in.overlap_radius(c.beta)):.4f}  (NOT certified)")
assert not plug_in.certified and certified.certified

# %% [markdown]
# ## Plot the per-token radii
#
# `r_in` lives on the 8×8 patch grid. `FaithfulRegion.attribute` returns the same radii
# spread over the pixels (a Captum attribution of the input's shape), and
# `FaithfulRegion.region(..., pixels=True)` the region as a pixel mask.

# %%
h, w = c.grid
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
axes[0].imshow(batch["image"][best].permute(1, 2, 0))
axes[0].set_title("image")
im = axes[1].imshow(c.r_in.reshape(h, w), cmap="viridis")
axes[1].set_title("certified r_in per token")
fig.colorbar(im, ax=axes[1])
axes[2].imshow(faithful.reshape(h, w), cmap="gray", vmin=0, vmax=1)
axes[2].set_title(f"faithful region, R={radius}")
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
fig.savefig(OUT / "certificate.png", dpi=80)

report = [
    {
        "summary": cert_i.summary(),
        "certified": cert_i.certified,
        "confidence": cert_i.confidence,
        "radius_beta": cert_i.radius_beta,
        "radius_pred": cert_i.radius_pred,
        "radius": cert_i.radius,
        "radius_linf": cert_i.radius_linf,
        "label": cert_i.label,
        "true_label": true_label,
        "p_lower": cert_i.p_lower,
        "abstain": cert_i.abstain,
        "sigma": cert_i.sigma,
        "k": cert_i.k,
        "beta": cert_i.beta,
        "n_samples": cert_i.n_samples,
        "r_in": cert_i.r_in.tolist(),
    }
    for cert_i, true_label in zip(certificates, batch["label"].tolist())
]
(OUT / "certificates.json").write_text(json.dumps(report, indent=2))
print("wrote", OUT / "certificate.png", "and", OUT / "certificates.json")
