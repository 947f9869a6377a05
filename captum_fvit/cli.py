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
    ev.add_argument("--labels", default=None, help="image folders with class subfolders: a JSON file (folder name → class id) or text file (one folder name per class id), 'index' or 'none'")
    ev.add_argument("--model", default="default", help="'default', 'timm:NAME' or 'package.module:factory' (imported from the current directory)")
    ev.add_argument("--checkpoint", default=None, help="local weights (.safetensors or torch state dict) for --model")
    ev.add_argument("--denoiser", default="default", help="'default', 'identity', 'adm:FILE', a diffusers folder or hub id, or 'package.module:factory'")
    ev.add_argument("--image-size", type=int, default=None, help="square input size in pixels (default: the model's)")
    ev.add_argument("--methods", nargs="+", default=["raw", "rollout", "grad_rollout"])
    ev.add_argument("--variants", nargs="+", default=["vanilla", "dds"], choices=["vanilla", "dds"])
    ev.add_argument("--attack", default="pgd", help="pgd, eot_pgd, topk or none")
    ev.add_argument("--norm", default="linf", choices=["linf", "l2"])
    ev.add_argument("--eps", nargs="+", type=float, default=[0, 2, 4, 8], help="attack radii in 1/255 pixel units")
    ev.add_argument("--attack-steps", type=int, default=10)
    ev.add_argument("--sigma", type=float, default=0.25, help="DDS noise std, [0,1] pixel units")
    ev.add_argument("--samples", type=int, default=16, help="DDS noise samples per image")
    ev.add_argument("--k", type=int, default=10, help="top-k size")
    ev.add_argument("--certify", action="store_true", help="also certify faithful regions")
    ev.add_argument("--certify-n", type=int, default=200, help="certification samples per image (the budget with --certify-radius)")
    ev.add_argument("--certify-radius", type=float, default=None, help="decide with the anytime-valid sequential test whether each image is (r, beta, k)-faithful at this l2 radius ([0,1] pixel units), stopping early")
    ev.add_argument("--preset", default=None, choices=["paper"], help="'paper': the paper's evaluation on the shapes benchmark (>= 200 images, eps 0/2/4/8, transfer and adaptive attacks, baselines, Monte-Carlo floor, bootstrap CIs)")
    ev.add_argument("--n-images", type=int, default=None, help="evaluate only this many images")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (under torchrun: cuda = cuda:LOCAL_RANK)")
    ev.add_argument("--out", default="captum_fvit_eval", help="output folder (created)")
    ev.add_argument("--resume", action="store_true", help="continue an interrupted run in --out (same options)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    for sub in (demo, ev, train):
        sub.add_argument("--debug", action="store_true", help="show tracebacks of errors")
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


def _check_device(device: str) -> str:
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device} was asked for but CUDA is not available; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def _init_distributed(device: str):
    """Under torchrun (WORLD_SIZE > 1) join the process group: NCCL on CUDA, gloo on CPU."""
    import os

    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device, False
    cuda = torch.device(device).type == "cuda"
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return device, True


def _check_image_size(model, size: int, device: str) -> None:
    import torch

    if size < 1:
        raise ValueError(f"--image-size must be a positive number of pixels, got {size}")
    from .model_io import logits_of

    try:
        with torch.no_grad():
            logits_of(model(torch.zeros(1, 3, size, size, device=device)))
    except Exception as err:  # noqa: BLE001 - whatever the model says, the size is the cause
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"the model does not accept {size}x{size} images (--image-size {size}): {first}"
        ) from None


def _evaluate(args: argparse.Namespace) -> int:
    import warnings

    from .demo import prepare_output_dir
    from .evaluate.distributed import current_shard
    from .evaluate.runner import EvaluationConfig, evaluate, write_report
    from .evaluate.specs import resolve_dataset, resolve_denoiser, resolve_model, timm_data_config

    if args.preset == "paper":
        return _paper_preset(args)
    if any(e < 0 for e in args.eps):
        raise ValueError(f"--eps must be ≥ 0 (1/255 units), got {args.eps}")
    if args.n_images is not None and args.n_images < 1:
        raise ValueError(f"--n-images must be at least 1, got {args.n_images}")
    device, joined = _init_distributed(_check_device(args.device))
    try:
        shard = current_shard()
        config = EvaluationConfig(
            methods=args.methods,
            variants=args.variants,
            eps=[e / 255 for e in args.eps],
            attack=args.attack,
            norm=args.norm,
            attack_steps=args.attack_steps,
            sigma=args.sigma,
            n_samples=args.samples,
            k=args.k,
            certify=args.certify,
            certify_n=args.certify_n,
            certify_radius=args.certify_radius,
            batch_size=args.batch_size,
            seed=args.seed,
        )
        config.validate()
        out = prepare_output_dir(args.out)
        model = resolve_model(args.model, device, args.checkpoint)
        denoiser = resolve_denoiser(args.denoiser, device)
        data_config = timm_data_config(model)
        image_size = args.image_size if args.image_size is not None else _model_image_size(model)
        _check_image_size(model, image_size, device)
        crop_pct = float(data_config.get("crop_pct", 1.0) or 1.0) if args.model != "default" else 1.0
        dataset = resolve_dataset(
            args.data, image_size, args.n_images, labels=args.labels, crop_pct=min(crop_pct, 1.0)
        )
        if args.denoiser == "default" and args.data != "shapes" and shard.is_main:
            warnings.warn(
                "the bundled default denoiser was trained only on the procedural shapes "
                f"benchmark; on {args.data} its denoised images are off-distribution — use a "
                "denoiser trained on your data (--denoiser adm:FILE, a diffusers folder, or "
                "package.module:factory)",
                stacklevel=1,
            )
        setup = {
            "model": args.model + (f" (weights {args.checkpoint})" if args.checkpoint else ""),
            "denoiser": args.denoiser,
            "data": f"{args.data} ({len(dataset)} images, {image_size}x{image_size} px)",
        }
        result = evaluate(
            model, dataset, denoiser=denoiser, config=config, n_images=args.n_images,
            device=device, progress=not args.no_progress, out_dir=out, resume=args.resume,
            setup=setup,
        )  # fmt: skip
        if shard.is_main:
            paths = write_report(result, out)
            from .evaluate.report import markdown_table

            print(markdown_table(result.rows, ["method", "variant", "eps_255", "topk_overlap", "spearman"]))
            print(f"wrote {paths['json']}, {paths['csv']}, {paths['markdown']} and {paths['html']}")
        shard.barrier()
    finally:
        if joined:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0


#: ``evaluate`` options the paper preset takes, and the preset's name for each.
PRESET_OPTIONS = {
    "methods": "methods",
    "sigma": "sigma",
    "samples": "n_samples",
    "k": "k",
    "seed": "seed",
    "batch_size": "batch_size",
    "attack_steps": "transfer_steps",
}


def _paper_preset(args: argparse.Namespace) -> int:
    """``evaluate --preset paper``: :func:`captum_fvit.evaluate.paper.run_paper_preset` on the
    bundled default; every other option is refused rather than ignored."""
    from .evaluate.paper import run_paper_preset

    defaults = build_parser().parse_args(["evaluate"])
    allowed = set(PRESET_OPTIONS) | {"out", "n_images", "resume", "no_progress", "eps", "preset", "debug", "command"}
    ignored = [
        f"--{name.replace('_', '-')}"
        for name, value in vars(args).items()
        if name not in allowed and value != getattr(defaults, name, value)
    ]
    if ignored:
        raise ValueError(
            f"--preset paper runs on the bundled default and does not take {', '.join(sorted(ignored))}; "
            "use captum-fvit evaluate without --preset for other models, data or attacks"
        )
    if args.n_images is not None and args.n_images < 1:
        raise ValueError(f"--n-images must be at least 1, got {args.n_images}")
    overrides = {
        preset: getattr(args, name)
        for name, preset in PRESET_OPTIONS.items()
        if getattr(args, name) != getattr(defaults, name)
    }
    if args.eps != defaults.eps:
        overrides["eps_255"] = tuple(args.eps)
    if "methods" in overrides:
        overrides["methods"] = tuple(overrides["methods"])
    result = run_paper_preset(
        args.out,
        200 if args.n_images is None else args.n_images,
        resume=args.resume,
        progress=not args.no_progress,
        **overrides,
    )
    print(result.table)
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
    """Entry point of the ``captum-fvit`` console script (and ``python -m captum_fvit``).

    User errors (bad files, options, models, devices) print one line and return 2; other
    failures print one line and return 1. ``--debug`` shows the traceback instead.
    """
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
    except (ValueError, FileNotFoundError, BundleError, ImportError) as err:
        if getattr(args, "debug", False):
            raise
        print(f"captum-fvit {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"captum-fvit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - one line unless --debug
        if getattr(args, "debug", False):
            raise
        print(
            f"captum-fvit {args.command}: internal error: {type(err).__name__}: {_one_line(err)} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    return 1  # pragma: no cover - argparse rejects unknown commands


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
