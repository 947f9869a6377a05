"""Presets: named configurations of the one evaluation runner, each with its own table.

``"paper"`` — the paper's evaluation: for each image (≥ 200 of the shapes benchmark by
default, or the user's model, denoiser and data), each ε ∈ {0, 2, 4, 8}/255 (ℓ∞, [0, 1] pixel
units) and each attack of the registry

=================  ==============================================================  =========
attack             what is differentiated                                          scope
=================  ==============================================================  =========
``pgd``            PGD on the plain ViT's cross-entropy (transfer; the paper's)    all maps
``topk``           top-k attack on the plain ViT's attention (transfer, Ghorbani)  one method
``smooth_pgd``     PGD through noise → denoiser → ViT (adaptive, SmoothAdv)        all maps
``adaptive_topk``  top-k attack on the DDS map itself (adaptive, EOT)              one method
=================  ==============================================================  =========

the clean and attacked images are explained by every method under every variant of
:data:`~captum_fvit.evaluate.experiment.variants.VARIANTS` (vanilla, SmoothGrad, identity smoothing,
DDS — all at one σ; the DDS rows come from :class:`~captum_fvit.DDSAttention` itself), with the
Monte-Carlo floor (a second clean run with an independent seed). The rows are the runner's
(``results.jsonl``: streamed, resumable unit by unit, sharded under ``torchrun``) and so is
the report; :func:`~captum_fvit.evaluate.report.paper_table.write_paper_table` adds ``paper_table.md`` (and ``.rst``): means with
percentile-bootstrap 95 % confidence intervals over images.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from ...space import Normalization
from ..report.paper_table import write_paper_table
from .aggregate import EvaluationResult
from .config import EvaluationConfig

__all__ = [
    "ATTACK_NAMES",
    "PAPER",
    "PRESETS",
    "PaperResult",
    "Preset",
    "preset_config",
    "run_paper_preset",
    "run_preset",
]

#: The attacks of the paper preset, transfer first.
ATTACK_NAMES = ("pgd", "topk", "smooth_pgd", "adaptive_topk")

PAPER = EvaluationConfig(
    methods=("raw", "rollout", "grad_rollout"),
    variants=("vanilla", "smoothgrad", "identity", "dds"),
    eps=(0.0, 2 / 255, 4 / 255, 8 / 255),
    attack=ATTACK_NAMES,
    attack_steps=10,
    adaptive_steps=3,
    n_eot=2,
    sigma=0.25,
    n_samples=8,
    k=8,
    floor=True,
    batch_size=8,
)

#: Names of the paper preset's old options → this runner's (accepted with a warning).
OLD_NAMES = {"transfer_steps": "attack_steps", "eps_255": "eps"}


@dataclass(frozen=True)
class Preset:
    """A named configuration, its default image count and the table it writes."""

    config: EvaluationConfig
    n_images: int
    write_table: Callable[..., str]
    description: str = ""


@dataclass
class PaperResult:
    """What :func:`run_paper_preset` produced (``evaluation``: the runner's aggregates)."""

    out_dir: Path
    rows: list[dict]
    table: str
    compute_seconds: float
    units_run: int
    units_skipped: int
    config: dict = field(default_factory=dict)
    evaluation: EvaluationResult | None = None


def preset_config(base: EvaluationConfig, **overrides: Any) -> EvaluationConfig:
    """``base`` with ``overrides`` (EvaluationConfig fields; the old paper names
    ``transfer_steps``/``eps_255`` and the dropped ``chunk_size`` warn)."""
    for old, new in OLD_NAMES.items():
        if old in overrides:
            warnings.warn(f"the preset option {old} is deprecated; use {new}", DeprecationWarning,
                          stacklevel=3)  # fmt: skip
            value = overrides.pop(old)
            overrides[new] = [e / 255 for e in value] if old == "eps_255" else value
    if overrides.pop("chunk_size", None) is not None:
        warnings.warn("chunk_size is deprecated and ignored: chunks are max(4·batch_size, 16) "
                      "images", DeprecationWarning, stacklevel=3)  # fmt: skip
    config = replace(base, **overrides)
    config.validate()
    return config


def _default_model_and_data(model, denoiser, normalization, dataset, n_images):
    """The bundled ViT and denoiser, and the shapes test split at the model's size."""
    image_size = 64
    if model is None:
        from ...models import load_default

        bundle = load_default()
        model, denoiser = bundle.model, bundle.denoiser
        normalization = normalization or bundle.normalization
        image_size = bundle.image_size
    if dataset is None:
        from ...data import ShapesBenchmark

        dataset = ShapesBenchmark.from_split("test", n_images, image_size=image_size)
    if len(dataset) < n_images:
        raise ValueError(f"the dataset has {len(dataset)} images, fewer than n_images={n_images}")
    return model, denoiser, normalization, dataset


def run_preset(
    name: str,
    out_dir: str | Path,
    n_images: int | None = None,
    *,
    config: EvaluationConfig | None = None,
    model: nn.Module | None = None,
    denoiser: Callable | None = None,
    normalization: Normalization | None = None,
    dataset: Any = None,
    resume: bool = True,
    progress: bool = True,
    device: str = "cpu",
    setup: dict | None = None,
    n_boot: int = 2000,
    **overrides: Any,
) -> PaperResult:
    """Run (or resume) preset ``name`` through :func:`~captum_fvit.evaluate.evaluate` and write
    its table; see :func:`run_paper_preset`."""
    from .runner import evaluate

    preset = PRESETS[name]
    n_images = preset.n_images if n_images is None else n_images
    config = preset_config(config or preset.config, **overrides)
    model, denoiser, normalization, dataset = _default_model_and_data(
        model, denoiser, normalization, dataset, n_images
    )
    result = evaluate(model, dataset, denoiser=denoiser, normalization=normalization,
                      config=config, n_images=n_images, device=device, progress=progress,
                      out_dir=out_dir, resume=resume, setup=setup)  # fmt: skip
    from .distributed import current_shard

    out = Path(out_dir)
    table = preset.write_table(out, n_boot=n_boot) if current_shard().is_main else ""
    return PaperResult(out, result.records, table, result.meta.get("seconds", 0.0),
                       result.meta.get("units_run", 0), result.meta.get("units_skipped", 0),
                       config.to_dict(), result)  # fmt: skip


def run_paper_preset(out_dir: str | Path, n_images: int = 200, **options: Any) -> PaperResult:
    """Run (or resume) the paper preset; write the runner's outputs and ``paper_table.md``.

    Parameters
    ----------
    out_dir : path
        Output folder (created): ``results.jsonl`` (the rows), ``paper_table.md``/``.rst``.
    n_images : int, default 200
        Images evaluated.
    **options
        ``config`` (an :class:`EvaluationConfig` replacing :data:`PAPER`); ``model``,
        ``denoiser``, ``normalization`` (default: the bundled ViT and one-shot diffusion
        denoiser); ``dataset`` (default the shapes test split at the model's size);
        ``resume`` (default True: keep finished units), ``progress``, ``device``, ``setup``,
        ``n_boot`` (bootstrap resamples of the table); any other keyword replaces a field of
        the configuration (``n_samples=4``, ``methods=("raw",)``, ``eps=(0, 8 / 255)``, ...).

    Returns
    -------
    PaperResult
    """
    return run_preset("paper", out_dir, n_images, **options)


#: Presets by name (``captum-fvit evaluate --preset NAME``).
PRESETS: dict[str, Preset] = {
    "paper": Preset(PAPER, 200, write_paper_table,
                    "the paper's evaluation: transfer and adaptive attacks, every baseline, the "
                    "Monte-Carlo floor and bootstrap CIs"),  # fmt: skip
}
