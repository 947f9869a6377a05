"""Images/s of ``captum-fvit evaluate`` with 1 vs 2 ranks (torchrun, gloo, CPU), in one run.

Usage::

    python bench/distributed.py [--images 16] [--samples 8] [--threads 1]

Both runs use the same tiny random-weight timm ViT, identity denoiser and shapes images;
each rank uses ``--threads`` intra-op threads, so 2 ranks use twice the cores of 1 rank.
The times include process start-up and imports (as a user sees them); the printed ratio is
the 2-rank throughput over the 1-rank throughput (2.0 = perfect scaling).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

FACTORY = textwrap.dedent(
    """
    import timm, torch

    def make():
        torch.manual_seed(0)
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                                 patch_size=8, num_classes=6, embed_dim=96, depth=4,
                                 num_heads=3).eval()
    """
)


def run(ranks: int, folder: Path, args: argparse.Namespace) -> float:
    out = folder / f"out{ranks}"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
        "-m", "captum_fvit", "evaluate", "--model", "bench_factory:make", "--denoiser", "identity",
        "--data", "shapes", "--n-images", str(args.images), "--batch-size", "2",
        "--methods", "rollout", "--samples", str(args.samples), "--eps", "0", "4",
        "--attack-steps", "3", "--k", "4", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bench_factory.py").write_text(FACTORY)
        one = run(1, folder, args)
        two = run(2, folder, args)
        same = (folder / "out1" / "results.json").read_text().split('"metrics"')[1] == (
            folder / "out2" / "results.json"
        ).read_text().split('"metrics"')[1]
    print(f"{args.images} images, {args.samples} DDS samples, {args.threads} thread(s) per rank")
    print(f"1 rank : {one:7.2f} s  {args.images / one:6.2f} images/s")
    print(f"2 ranks: {two:7.2f} s  {args.images / two:6.2f} images/s")
    print(f"speed-up 2 vs 1 rank: {one / two:.2f}x   identical aggregates: {same}")


if __name__ == "__main__":
    main()
