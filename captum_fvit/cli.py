"""Command line: ``captum-fvit demo | evaluate | train-default``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captum-fvit",
        description="Faithful Vision Transformer explanations for Captum.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="the whole method on the bundled default, offline on CPU, with a report",
        description=(
            "Explain fresh shapes-benchmark images with raw attention, rollout and gradient "
            "rollout, plainly and with DDS, on clean and PGD-attacked images; certify faithful "
            "regions; write results.json, summary.md and report.html into --out."
        ),
    )
    demo.add_argument("--out", default="captum_fvit_demo", help="output folder (created)")
    demo.add_argument("--images", type=int, default=6, help="number of images (default 6)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--samples", type=int, default=None, help="DDS noise samples per image")

    train = commands.add_parser(
        "train-default",
        help="re-train the bundled default ViT and denoiser (CPU, seeded)",
        description="Train the bundled default ViT and diffusion denoiser and write weights + manifest.",
    )
    from .models.train import add_train_arguments

    add_train_arguments(train)

    ev = commands.add_parser(
        "evaluate",
        help="attack and evaluate explanations (vanilla vs DDS) over a dataset, write a report",
        description=(
            "Explain clean and attacked images with each method, plainly and with DDS, and "
            "measure top-k overlap, Spearman, the segmentation test and (optionally) certified "
            "curves. Writes results.json, summary.md, report.html and figures/ into --out. "
            "All sizes are in [0,1] pixel units; --eps is given in 1/255 units."
        ),
    )
    ev.add_argument("--data", default="shapes", help="'shapes', a folder with images/ (and masks/), or gtsegs_ijcv.mat")
    ev.add_argument("--model", default="default", help="'default', 'timm:NAME' or 'package.module:callable'")
    ev.add_argument("--denoiser", default="default", help="'default', 'identity', 'adm:PATH', or a diffusers folder/hub id")
    ev.add_argument("--image-size", type=int, default=None, help="resize images to this size (default: the model's)")
    ev.add_argument("--methods", nargs="+", default=["raw", "rollout", "grad_rollout"])
    ev.add_argument("--variants", nargs="+", default=["vanilla", "dds"], choices=["vanilla", "dds"])
    ev.add_argument("--attack", default="pgd", help="pgd, eot_pgd or none")
    ev.add_argument("--norm", default="linf", choices=["linf", "l2"])
    ev.add_argument("--eps", nargs="+", type=float, default=[0, 2, 4, 8], help="attack radii in 1/255 pixel units")
    ev.add_argument("--sigma", type=float, default=0.25, help="DDS noise std, [0,1] pixel units")
    ev.add_argument("--samples", type=int, default=16, help="DDS noise samples per image")
    ev.add_argument("--k", type=int, default=10, help="top-k size")
    ev.add_argument("--certify", action="store_true", help="also certify faithful regions")
    ev.add_argument("--certify-n", type=int, default=200)
    ev.add_argument("--n-images", type=int, default=None, help="evaluate only this many images")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--out", default="captum_fvit_eval", help="output folder (created)")
    return parser


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if args.images < 1:
        raise ValueError("--images must be at least 1")
    overrides = {} if args.samples is None else {"n_samples": args.samples}
    print("captum-fvit demo: bundled default ViT + diffusion denoiser on fresh shapes images\n")
    result = run_demo(args.out, n_images=args.images, seed=args.seed, **overrides)
    print(result.table())
    print(f"\nwrote {result.paths['html']}, {result.paths['json']} and {result.paths['markdown']}")
    print(f"finished in {result.seconds:.1f} s")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .demo import prepare_output_dir
    from .evaluate.runner import EvaluationConfig, evaluate, write_report
    from .evaluate.specs import resolve_dataset, resolve_denoiser, resolve_model

    if any(e < 0 for e in args.eps):
        raise ValueError(f"--eps must be ≥ 0 (1/255 units), got {args.eps}")
    out = prepare_output_dir(args.out)
    model = resolve_model(args.model, args.device)
    denoiser = resolve_denoiser(args.denoiser, args.device)
    image_size = args.image_size or _model_image_size(model)
    dataset = resolve_dataset(args.data, image_size, args.n_images)
    config = EvaluationConfig(
        methods=args.methods,
        variants=args.variants,
        eps=[e / 255 for e in args.eps],
        attack=args.attack,
        norm=args.norm,
        sigma=args.sigma,
        n_samples=args.samples,
        k=args.k,
        certify=args.certify,
        certify_n=args.certify_n,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    result = evaluate(
        model, dataset, denoiser=denoiser, config=config, n_images=args.n_images, device=args.device
    )
    paths = write_report(result, out)
    from .evaluate.report import markdown_table

    print(markdown_table(result.rows, ["method", "variant", "eps_255", "topk_overlap", "spearman"]))
    print(f"wrote {paths['json']}, {paths['markdown']} and {paths['html']}")
    return 0


def _model_image_size(model) -> int:
    """The square input size a model expects (timm/torchvision/HF), default 224."""
    for getter in (
        lambda m: m.patch_embed.img_size[0],
        lambda m: m.image_size,
        lambda m: m.config.image_size,
    ):
        try:
            return int(getter(model))
        except (AttributeError, TypeError, IndexError):
            continue
    return 224


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``captum-fvit`` console script."""
    from .models.manifest import BundleError

    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "train-default":
            from .models.train import run_from_args

            return run_from_args(args)
    except (ValueError, FileNotFoundError, BundleError) as err:
        print(f"captum-fvit {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 1  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
