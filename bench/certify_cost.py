"""Samples per image: sequential certification at a radius against fixed-n certification.

Both certify the bundled default pipeline (``captum_fvit.models.load_default()``: the ViT
and its one-shot diffusion denoiser, rollout, vote smoothing) on shapes-benchmark test images,
at the same ``alpha`` (explanation) and ``alpha_pred`` (prediction), the same ``k``, ``beta``
and ``sigma``, asking the same question: is the image (r, β, k)-faithful at ``--radius``?

* fixed-n: ``FaithfulRegion.certify`` with ``n`` estimation samples (Clopper–Pearson); its
  answer is "certified" when ``min(R_β, R_pred) > r``, else "not certified";
* sequential: ``FaithfulRegion.decide`` (:func:`captum_fvit.attr.region_sequential.certify_at_radius`) with budget ``n_max = n``,
  stopping each image as soon as its answer is certified or certainly not.

Both use the same ``n_select`` selection samples (not counted below: they are equal).
"Near the boundary" means the fixed-n plug-in radius (point estimates, not a certificate)
lies within a factor ``--margin`` of r; the speed-up goal (≥ 5×) is for the other images.

Run:  OMP_NUM_THREADS=1 python bench/certify_cost.py [--images 16] [--n 500] [--radius 0.02]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from scipy.stats import beta as beta_dist

from captum_fvit import DDSAttention, FaithfulRegion
from captum_fvit import certify as cert
from captum_fvit.data import ShapesBenchmark
from captum_fvit.models import load_default


def _count_from_p_lower(p_lower: float, n: int, alpha: float) -> int:
    """The count of the selected class behind a one-sided Clopper–Pearson lower bound."""
    counts = np.arange(1, n + 1)
    lowers = beta_dist.ppf(alpha, counts, n - counts + 1)
    return int(np.argmin(np.abs(lowers - p_lower)) + 1) if p_lower > 0 else 0


def _plug_in_radius(c, n: int, sigma: float, k: int, beta: float, alpha_pred: float) -> float:
    votes = torch.round(c.estimate.double() * n)
    r_beta = cert.overlap_radius(
        cert.certify_explanation(cert.vote_bounds(votes, n, None), k, sigma).r_in, k, beta
    )
    count = _count_from_p_lower(c.p_lower, n, alpha_pred)
    r_pred, _ = cert.prediction_radius(torch.tensor(count), n, None, sigma)
    return float(min(r_beta, r_pred))


def _quartiles(values) -> str:
    q1, q2, q3 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return f"median {q2:.0f} (quartiles {q1:.0f}–{q3:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--n", type=int, default=500, help="fixed n = sequential budget n_max")
    parser.add_argument("--n-select", type=int, default=16)
    parser.add_argument("--radius", type=float, default=0.02, help="ℓ2, [0, 1] pixel units")
    parser.add_argument("--sigma", type=float, default=0.12)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--beta", type=float, default=0.6)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--samples-per-look", "--chunk", type=int, default=32, help="samples per sequential look")
    parser.add_argument("--confidence-sequence", "--method", default="beta_binomial", choices=["beta_binomial", "union"])
    parser.add_argument("--margin", type=float, default=2.0, help="near boundary: R̂ within ×margin of r")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write per-image rows here")
    args = parser.parse_args()

    bundle = load_default()
    data = ShapesBenchmark.from_split("test", size=args.images, image_size=bundle.image_size)
    images = bundle.normalization.from_pixels(data.batch(range(args.images))["image"])
    dds = DDSAttention(
        bundle.model,
        bundle.denoiser,
        "rollout",
        sigma=args.sigma,
        batch_size=args.batch_size,
        n_select=args.n_select,
    )
    region = FaithfulRegion(dds, k=args.k, beta=args.beta, alpha=args.alpha, n_samples=args.n)

    start = time.perf_counter()
    sequential = region.decide(
        images, args.radius, seed=args.seed, n_max=args.n,
        samples_per_look=args.samples_per_look, confidence_sequence=args.confidence_sequence,
    )
    seconds_seq = time.perf_counter() - start
    start = time.perf_counter()
    fixed = region.certify(images, seed=args.seed)
    seconds_fixed = time.perf_counter() - start

    rows = []
    for i, (s, f) in enumerate(zip(sequential, fixed)):
        plug_in = _plug_in_radius(f, args.n, args.sigma, args.k, args.beta, region.alpha_pred)
        near = args.radius / args.margin < plug_in < args.radius * args.margin
        rows.append(
            dict(
                image=i,
                fixed_decision="certified" if f.radius > args.radius else "not_certified",
                fixed_radius=f.radius,
                plug_in_radius=plug_in,
                near_boundary=bool(near),
                sequential_decision=s.decision,
                sequential_samples=s.n_samples,
                sequential_radius=s.radius,
            )
        )

    print(
        f"bundled default, {args.images} shapes test images, rollout, vote smoothing, "
        f"σ={args.sigma}, k={args.k}, β={args.beta}, α=α_pred={args.alpha}, r={args.radius}, "
        f"fixed n={args.n}, sequential n_max={args.n}, samples per look {args.samples_per_look}, "
        f"{args.confidence_sequence}"
    )
    print(f"{'img':>3} {'fixed R':>8} {'plug-in':>8} {'fixed':>14} {'sequential':>14} {'samples':>7}")
    for r in rows:
        print(
            f"{r['image']:>3} {r['fixed_radius']:8.4f} {r['plug_in_radius']:8.4f} "
            f"{r['fixed_decision']:>14} {r['sequential_decision']:>14} "
            f"{r['sequential_samples']:>7}{'  (near)' if r['near_boundary'] else ''}"
        )
    used = [r["sequential_samples"] for r in rows]
    far = [r["sequential_samples"] for r in rows if not r["near_boundary"]]
    print(f"samples per image, fixed-n:    {_quartiles([args.n] * len(rows))}")
    print(f"samples per image, sequential: {_quartiles(used)}")
    print(f"ratio of medians (all images): {args.n / np.median(used):.1f}x")
    if far:
        print(
            f"not near the boundary ({len(far)} images): sequential {_quartiles(far)}; "
            f"ratio of medians {args.n / np.median(far):.1f}x; "
            f"ratio of totals {args.n * len(far) / sum(far):.1f}x"
        )
    opposite = sum(
        (r["sequential_decision"] == "certified") != (r["fixed_decision"] == "certified")
        and r["sequential_decision"] != "undecided"
        for r in rows
    )
    abstained = sum(r["sequential_decision"] == "undecided" for r in rows)
    print(
        f"decisions that differ (sequential certified/not vs fixed-n): {opposite} of {len(rows)}; "
        f"sequential undecided at the budget: {abstained}"
    )
    print(f"wall time: sequential {seconds_seq:.0f} s, fixed-n {seconds_fixed:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(dict(args=vars(args), rows=rows), handle, indent=1)


if __name__ == "__main__":
    main()
