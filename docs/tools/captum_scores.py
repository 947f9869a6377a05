"""Captum's metrics of plain vs DDS attention on the bundled default (docs/guide/performance).

Scores ``captum.metrics.infidelity`` (scale-invariant, Gaussian pixel noise) and
``captum.metrics.sensitivity_max`` (uniform ℓ∞ pixel noise) through
:func:`captum_fvit.evaluate.infidelity_score` / :func:`~captum_fvit.evaluate.sensitivity_score`
for ``AttentionMap`` and ``DDSAttention`` of each method, on shapes-benchmark test images
with the trained ViT and denoiser of :func:`captum_fvit.models.load_default`, and times one
``attribute`` call of each (wall seconds per image, in the same run).

Run:  OMP_NUM_THREADS=1 python docs/tools/captum_scores.py [--images 8] [--samples 16]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from captum_fvit import AttentionMap, DDSAttention
from captum_fvit.data import ShapesBenchmark
from captum_fvit.evaluate import infidelity_score, sensitivity_score
from captum_fvit.models import load_default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--samples", type=int, default=16, help="DDS samples per image")
    parser.add_argument("--sigma", type=float, default=0.12, help="DDS noise, pixel units")
    parser.add_argument("--methods", nargs="+", default=["rollout", "grad_rollout"])
    parser.add_argument("--noise", type=float, default=0.02, help="metric noise, pixel units")
    parser.add_argument("--infidelity-samples", type=int, default=16)
    parser.add_argument("--sensitivity-samples", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    bundle = load_default()
    data = ShapesBenchmark.from_split("test", size=args.images, image_size=bundle.image_size)
    batch = data.batch(range(args.images))
    x = bundle.normalization.from_pixels(batch["image"])
    target = batch["label"]
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} images, "
          f"DDS σ={args.sigma} n={args.samples}, metric noise {args.noise} (pixel units)")
    print(f"{'method':14s} {'variant':8s} {'infidelity':>11s} {'sens_max':>9s} {'s/image':>8s}")
    for method in args.methods:
        explainers = {
            "plain": (AttentionMap(bundle.model, method), {}),
            "dds": (
                DDSAttention(bundle.model, bundle.denoiser, method, sigma=args.sigma,
                             n_samples=args.samples, batch_size=64),
                {"seed": 0},
            ),
        }
        for variant, (explainer, kwargs) in explainers.items():
            start = time.perf_counter()
            attributions = explainer.attribute(x, target=target, **kwargs)
            seconds = (time.perf_counter() - start) / args.images
            inf = infidelity_score(explainer, bundle.model, x, target, sigma=args.noise,
                                   n_perturb_samples=args.infidelity_samples,
                                   attributions=attributions, seed=0)
            sens = sensitivity_score(explainer, bundle.model, x, target,
                                     perturb_radius=args.noise,
                                     n_perturb_samples=args.sensitivity_samples, seed=0,
                                     explain_kwargs=kwargs)
            row = dict(method=method, variant=variant, infidelity=float(inf.mean()),
                       sensitivity_max=float(sens.mean()), seconds_per_image=seconds,
                       infidelity_per_image=inf.tolist(), sensitivity_per_image=sens.tolist())
            rows.append(row)
            print(f"{method:14s} {variant:8s} {row['infidelity']:11.4g} "
                  f"{row['sensitivity_max']:9.4g} {seconds:8.3f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
