"""Command line: ``captum-fvit demo [--out DIR]``."""

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
        help="explain a few images with every attention method (offline, CPU)",
        description=(
            "Run the attention pipeline on the bundled default and write a report. Until the "
            "trained default ships, this uses a randomly initialised ViT (and says so)."
        ),
    )
    demo.add_argument("--out", default="captum_fvit_demo", help="output folder (created)")
    demo.add_argument("--images", type=int, default=4, help="number of images (default 4)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if args.images < 1:
        raise ValueError("--images must be at least 1")
    print("captum-fvit demo: randomly initialised ViT (the trained bundled default is not")
    print("shipped yet) -- the maps show the pipeline working, not what a trained model sees.\n")
    result = run_demo(args.out, n_images=args.images, seed=args.seed)
    print(result.table())
    print(f"\nwrote {result.out_dir / 'results.json'} and {result.out_dir / 'attention_maps.png'}")
    print(f"finished in {result.seconds:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``captum-fvit`` console script."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
    except ValueError as err:
        print(f"captum-fvit {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 1  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
