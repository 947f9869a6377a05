"""Command line: ``captum-fvit demo | evaluate | train-default`` — the package's only argparse.

``evaluate`` runs the one evaluation runner (:mod:`captum_fvit.evaluate.experiment.runner`); ``--preset
NAME`` runs a preset of it (:mod:`captum_fvit.evaluate.experiment.presets`) on the user's model, denoiser
and data, and adds the preset's table. Both shard images over ``torchrun`` ranks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The one argument parser of the package: ``demo``, ``evaluate`` and ``train-default``."""
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
    demo.add_argument("--n-samples", type=int, default=None, help="DDS noise samples per image")
    _add_deprecated(demo, "--samples", "n_samples")
    train = commands.add_parser(
        "train-default",
        help="re-train the bundled default ViT and denoiser (CPU, seeded)",
        description="Train the bundled default ViT and diffusion denoiser and write weights + manifest.",
    )
    _add_train_arguments(train)
    ev = commands.add_parser(
        "evaluate",
        help="attack and evaluate explanations (vanilla vs smoothed) over a dataset, write a report",
        description=(
            "Explain clean and attacked images (transfer and adaptive attacks) with each method "
            "under each variant (vanilla, smoothgrad, identity, dds), and measure top-k overlap, "
            "Spearman, the segmentation test and (optionally) certified curves. Writes "
            "results.jsonl, results.json, summary.md, report.html and figures/ into --out "
            "(--preset paper adds paper_table.md). All sizes are in [0,1] pixel units; --eps is "
            "given in 1/255 units."
        ),
    )
    _add_evaluate_arguments(ev)
    for sub in (demo, ev, train):
        sub.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


#: Deprecated flags: flag → (the option it now is, its new flag); one release.
DEPRECATED_FLAGS: dict[str, tuple[str, str]] = {}


def _add_deprecated(parser: argparse.ArgumentParser, flag: str, dest: str, **kwargs) -> None:
    """``flag`` keeps working for one release as an alias of ``dest`` (with a message)."""
    new = "--" + dest.replace("_", "-")
    DEPRECATED_FLAGS[flag] = (dest, new)
    parser.add_argument(flag, dest="deprecated_" + flag.lstrip("-").replace("-", "_"),
                        type=kwargs.get("type", int), default=None,
                        help=f"deprecated: use {new}")  # fmt: skip


def _apply_deprecated(args: argparse.Namespace) -> None:
    for flag, (dest, new) in DEPRECATED_FLAGS.items():
        value = getattr(args, "deprecated_" + flag.lstrip("-").replace("-", "_"), None)
        if value is not None:
            print(f"captum-fvit {args.command}: {flag} is deprecated and will be removed in the "
                  f"next release; use {new}", file=sys.stderr)  # fmt: skip
            setattr(args, dest, value)


def _add_train_arguments(train: argparse.ArgumentParser) -> None:
    from .training import TRAIN_OPTIONS

    for option in TRAIN_OPTIONS:
        if option.type is bool:
            train.add_argument(option.flag, action="store_true", help=option.help)
        else:
            train.add_argument(option.flag, type=option.type, default=option.default, help=option.help)


def _add_evaluate_arguments(ev: argparse.ArgumentParser) -> None:
    from .evaluate.experiment.presets import PRESETS
    from .evaluate.experiment.variants import VARIANTS

    ev.add_argument("--data", default="shapes", help="'shapes', a folder with images/ (and masks/), or gtsegs_ijcv.mat")
    ev.add_argument("--labels", default=None, help="image folders with class subfolders: a JSON file (folder name → class id) or text file (one folder name per class id), 'index' or 'none'")
    ev.add_argument("--model", default="default", help="'default', 'timm:NAME' or 'package.module:factory' (imported from the current directory)")
    ev.add_argument("--checkpoint", default=None, help="local weights (.safetensors or torch state dict) for --model")
    ev.add_argument("--denoiser", default="default", help="'default', 'identity', 'adm:FILE', a diffusers folder or hub id, or 'package.module:factory'")
    ev.add_argument("--image-size", type=int, default=None, help="square input size in pixels (default: the model's)")
    ev.add_argument("--methods", nargs="+", default=["raw", "rollout", "grad_rollout"])
    ev.add_argument("--variants", nargs="+", default=["vanilla", "dds"], choices=list(VARIANTS))
    ev.add_argument("--attack", nargs="+", default=["pgd"], help="one or several registered attacks (pgd, eot_pgd, topk, smooth_pgd, adaptive_topk) or none")
    ev.add_argument("--norm", default="linf", choices=["linf", "l2"])
    ev.add_argument("--eps", nargs="+", type=float, default=[0, 2, 4, 8], help="attack radii in 1/255 pixel units")
    ev.add_argument("--attack-steps", type=int, default=10, help="steps of the transfer attacks")
    ev.add_argument("--adaptive-steps", type=int, default=None, help="steps of the adaptive attacks (default --attack-steps)")
    ev.add_argument("--n-eot", type=int, default=8, help="noise samples per step of attacks through the smoothing")
    ev.add_argument("--n-adaptive-images", type=int, default=None, help="only the first images get the adaptive attacks")
    ev.add_argument("--sigma", type=float, default=0.25, help="noise std of the smoothed variants, [0,1] pixel units")
    ev.add_argument("--n-samples", type=int, default=16, help="noise samples per image of the smoothed variants")
    _add_deprecated(ev, "--samples", "n_samples")
    ev.add_argument("--k", type=int, default=10, help="top-k size")
    ev.add_argument("--floor", action="store_true", help="also the Monte-Carlo floor (a second clean run with an independent seed)")
    ev.add_argument("--certify", action="store_true", help="also certify faithful regions")
    ev.add_argument("--certify-n-samples", type=int, default=200, help="certification samples per image (the budget with --certify-radius)")
    _add_deprecated(ev, "--certify-n", "certify_n_samples")
    ev.add_argument("--certify-n-select", type=int, default=32, help="selection samples of the certified class")
    ev.add_argument("--certify-radius", type=float, default=None, help="decide with the anytime-valid sequential test whether each image is (r, beta, k)-faithful at this l2 radius ([0,1] pixel units), stopping early")
    ev.add_argument("--preset", default=None, choices=sorted(PRESETS), help="'paper': the paper's evaluation (>= 200 images, eps 0/2/4/8, transfer and adaptive attacks, every variant, Monte-Carlo floor, bootstrap CIs) on --model/--denoiser/--data (default: the bundled ones); writes paper_table.md too")
    ev.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of the preset's table")
    ev.add_argument("--table-only", action="store_true", help="with --preset: only rewrite its table from the rows in --out")
    ev.add_argument("--n-images", type=int, default=None, help="evaluate only this many images")
    ev.add_argument("--batch-size", type=int, default=16, help="images per batch (the unit of streaming, resuming and sharding)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (under torchrun: cuda = cuda:LOCAL_RANK)")
    ev.add_argument("--out", default="captum_fvit_eval", help="output folder (created)")
    ev.add_argument("--resume", action="store_true", help="continue an interrupted run in --out (same options)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if args.images < 1:
        raise ValueError("--images must be at least 1")
    overrides = {} if args.n_samples is None else {"n_samples": args.n_samples}
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


#: ``evaluate`` options that are fields of :class:`~captum_fvit.evaluate.EvaluationConfig`.
CONFIG_OPTIONS = (
    "methods", "variants", "attack", "norm", "attack_steps", "adaptive_steps", "n_eot",
    "n_adaptive_images", "sigma", "n_samples", "k", "floor", "certify", "certify_n_samples",
    "certify_n_select", "certify_radius", "batch_size", "seed",
)  # fmt: skip
#: Options a preset fixes (its comparison): refused with ``--preset``.
PRESET_FIXED = ("attack", "variants")


def _config_values(args: argparse.Namespace, only_given: bool) -> dict:
    """Config fields from the options (``only_given``: those that differ from the defaults)."""
    defaults = build_parser().parse_args(["evaluate"])
    values = {}
    for name in CONFIG_OPTIONS:
        value = getattr(args, name)
        if not (only_given and value == getattr(defaults, name)):
            values[name] = tuple(value) if isinstance(value, list) else value
    if not (only_given and args.eps == defaults.eps):
        values["eps"] = tuple(e / 255 for e in args.eps)
    return values


def _check_evaluate_options(args: argparse.Namespace) -> None:
    if any(e < 0 for e in args.eps):
        raise ValueError(f"--eps must be ≥ 0 (1/255 units), got {args.eps}")
    if args.n_images is not None and args.n_images < 1:
        raise ValueError(f"--n-images must be at least 1, got {args.n_images}")
    if args.preset is None:
        if args.table_only:
            raise ValueError("--table-only rewrites a preset's table: give --preset NAME too")
        return
    defaults = build_parser().parse_args(["evaluate"])
    fixed = [f"--{n.replace('_', '-')}" for n in PRESET_FIXED if getattr(args, n) != getattr(defaults, n)]
    if fixed:
        raise ValueError(
            f"--preset {args.preset} fixes its attacks and variants (its comparison) and does not "
            f"take {', '.join(fixed)}; use captum-fvit evaluate without --preset to choose them"
        )


def _resolve_inputs(args: argparse.Namespace, device: str, n_images: int | None, is_main: bool):
    """Model, denoiser, dataset and their names for the report, from the options."""
    import warnings

    from .cli_specs import resolve_dataset, resolve_denoiser, resolve_model, timm_data_config

    model = resolve_model(args.model, device, args.checkpoint)
    denoiser = resolve_denoiser(args.denoiser, device)
    image_size = args.image_size if args.image_size is not None else _model_image_size(model)
    _check_image_size(model, image_size, device)
    crop_pct = 1.0
    if args.model != "default":
        crop_pct = float(timm_data_config(model).get("crop_pct", 1.0) or 1.0)
    dataset = resolve_dataset(args.data, image_size, n_images, labels=args.labels,
                              crop_pct=min(crop_pct, 1.0))  # fmt: skip
    if args.denoiser == "default" and args.data != "shapes" and is_main:
        warnings.warn(
            "the bundled default denoiser was trained only on the procedural shapes benchmark; "
            f"on {args.data} its denoised images are off-distribution — use a denoiser trained "
            "on your data (--denoiser adm:FILE, a diffusers folder, or package.module:factory)",
            stacklevel=1,
        )
    setup = {
        "model": args.model + (f" (weights {args.checkpoint})" if args.checkpoint else ""),
        "denoiser": args.denoiser,
        "data": f"{args.data} ({len(dataset)} images, {image_size}x{image_size} px)",
    }
    return model, denoiser, dataset, setup


def _evaluate(args: argparse.Namespace) -> int:
    """``captum-fvit evaluate [--preset NAME]``: one runner, sharded under torchrun."""
    from .demo import prepare_output_dir
    from .evaluate.experiment import presets
    from .evaluate.experiment.config import EvaluationConfig
    from .evaluate.experiment.distributed import current_shard

    _check_evaluate_options(args)
    if args.table_only:
        print(presets.PRESETS[args.preset].write_table(args.out, n_boot=args.n_boot))
        return 0
    if args.preset is None:
        EvaluationConfig(**_config_values(args, only_given=False)).validate()
    else:
        presets.preset_config(presets.PRESETS[args.preset].config, **_config_values(args, True))
    device, joined = _init_distributed(_check_device(args.device))
    try:
        shard = current_shard()
        out = prepare_output_dir(args.out)
        n_images = args.n_images
        if args.preset is not None and n_images is None:
            n_images = presets.PRESETS[args.preset].n_images
        model, denoiser, dataset, setup = _resolve_inputs(args, device, n_images, shard.is_main)
        inputs = dict(denoiser=denoiser, device=device, progress=not args.no_progress,
                      out_dir=out, resume=args.resume, setup=setup)  # fmt: skip
        result, table = _run_evaluation(args, model, dataset, n_images, inputs)
        if shard.is_main:
            _print_summary(result, out, table)
        shard.barrier()
    finally:
        if joined:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0


def _run_evaluation(args: argparse.Namespace, model, dataset, n_images, inputs: dict):
    """The runner's result (and the preset's table, or ``None``)."""
    from .evaluate.experiment import presets
    from .evaluate.experiment.config import EvaluationConfig
    from .evaluate.experiment.runner import evaluate

    if args.preset is None:
        config = EvaluationConfig(**_config_values(args, only_given=False))
        return evaluate(model, dataset, config=config, n_images=n_images, **inputs), None
    out = inputs.pop("out_dir")
    preset = presets.run_preset(args.preset, out, n_images, model=model, dataset=dataset,
                                n_boot=args.n_boot, **inputs, **_config_values(args, True))  # fmt: skip
    return preset.evaluation, preset.table


def _print_summary(result, out, table: str | None) -> None:
    from .evaluate.experiment.runner import write_report
    from .evaluate.report.html import markdown_table

    paths = write_report(result, out) if result is not None else {}
    if table is not None:
        print(table)
    else:
        print(markdown_table(result.rows, ["method", "variant", "eps_255", "topk_overlap", "spearman", "attack"]))
    if paths:
        print(f"wrote {paths['json']}, {paths['csv']}, {paths['markdown']} and {paths['html']}")


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
    _apply_deprecated(args)
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "train-default":
            from .training import train_from_options

            return train_from_options(vars(args))
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
