"""The ``captum-fvit demo`` job: the whole method on the bundled default, offline, on CPU.

It loads the bundled ViT and diffusion denoiser (trained on the procedural shapes benchmark),
takes a handful of fresh benchmark images (test split) with their object masks, and runs the
evaluation: raw attention, rollout and gradient rollout, plainly and with DDS, on clean and
PGD-attacked images (ε up to 8/255); then certifies the faithful region of every image. It
writes ``results.json``, ``summary.md``, a self-contained ``report.html`` with heat maps,
overlap-vs-ε curves and the certified regions drawn on the images, and prints a summary.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DemoResult", "run_demo", "prepare_output_dir", "DEMO_CONFIG"]

#: What the demo runs (sizes in [0, 1] pixel units); chosen to finish in about a minute.
DEMO_CONFIG = dict(
    methods=("raw", "rollout", "grad_rollout"),
    eps=(0.0, 2 / 255, 4 / 255, 8 / 255),
    attack="pgd",
    sigma=0.12,
    n_samples=16,
    k=8,
    certify=True,
    certify_methods=("rollout",),
    certify_n_samples=200,
    certify_n_select=32,
    beta=0.5,
    alpha=0.01,
    batch_size=6,
    figure_images=6,
)


@dataclass
class DemoResult:
    """Summary of one demo run."""

    out_dir: Path
    rows: list[dict]
    accuracy: dict[str, float]
    certificates: dict[str, dict]
    seconds: float
    paths: dict[str, Path]

    def table(self) -> str:
        """The summary as a fixed-width text table."""
        top = max(self.rows, key=lambda r: r["eps"])["eps"]
        header = (
            f"{'method':<14}{'variant':<9}{'V_k clean→8/255':>17}{'Spearman':>10}"
            f"{'mIoU clean':>12}{'median R_β':>12}"
        )
        lines = [header, "-" * len(header)]
        for row in self.rows:
            if row["eps"] != top:
                continue
            clean = next(
                r
                for r in self.rows
                if r["method"] == row["method"] and r["variant"] == row["variant"] and r["eps"] == 0
            )
            cert = ""
            if row["variant"] == "dds" and row["method"] in self.certificates:
                radii = self.certificates[row["method"]]["r_beta"]
                cert = f"{statistics.median(radii):.4f}"
            lines.append(
                f"{row['method']:<14}{row['variant']:<9}{row['topk_overlap']:>17.3f}"
                f"{row['spearman']:>10.3f}{clean.get('miou', math.nan):>12.3f}{cert:>12}"
            )
        accuracy = ", ".join(
            f"{round(float(e) * 255, 2):g}/255: {a:.2f}" for e, a in self.accuracy.items()
        )
        lines.append(f"\nViT accuracy under PGD (ε → accuracy): {accuracy}")
        return "\n".join(lines)


def prepare_output_dir(out: str | os.PathLike) -> Path:
    """Create ``out`` (a folder) or explain why it cannot be used."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file; give a folder to write the report into")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create --out folder {path}: {err.strerror}") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"--out folder {path} is not writable; choose another folder")
    try:  # a probe of this process's own (several ranks may check one folder at once)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".captum_fvit_write_test."):
            pass
    except OSError as err:
        raise ValueError(f"--out folder {path} is not writable ({err.strerror})") from None
    return path


def run_demo(
    out: str | os.PathLike = "captum_fvit_demo",
    *,
    n_images: int = 6,
    seed: int = 0,
    progress: bool = True,
    **overrides,
) -> DemoResult:
    """Run the demo on the bundled default and write the report into ``out``.

    Parameters
    ----------
    out : path
        Output folder (created if missing).
    n_images : int
        Benchmark images to explain (fresh test-split images).
    seed : int
        Seed of the attacks and the DDS noise.
    progress : bool
        Show progress bars.
    **overrides
        Replace entries of :data:`DEMO_CONFIG` (e.g. ``n_samples=4`` for a quick run).
    """
    from .data import SPLIT_SEEDS, ShapesBenchmark
    from .evaluate.experiment.runner import EvaluationConfig, evaluate, write_report
    from .models import load_default

    start = time.perf_counter()
    out_dir = prepare_output_dir(out)
    bundle = load_default()
    dataset = ShapesBenchmark(n_images, image_size=bundle.image_size, seed=SPLIT_SEEDS["test"])
    config = EvaluationConfig(**{**DEMO_CONFIG, **overrides, "seed": seed})
    result = evaluate(
        bundle.model,
        dataset,
        denoiser=bundle.denoiser,
        normalization=bundle.normalization,
        config=config,
        progress=progress,
    )
    paths = write_report(result, out_dir, title="captum-fvit demo: the bundled default")
    return DemoResult(
        out_dir=out_dir,
        rows=result.rows,
        accuracy=result.accuracy,
        certificates=result.certificates,
        seconds=time.perf_counter() - start,
        paths=paths,
    )
