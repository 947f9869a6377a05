"""Evaluation: attacks on predictions and explanations, and the metrics of THEORY §4.

All perturbation sizes (ε, σ, radii, ``perturb_radius``) are in **[0, 1] pixel units**;
inputs and outputs of the attacks are in the model's own normalisation.

Metrics (:mod:`~captum_fvit.evaluate.metrics.similarity`, batched torch, one value per image)
    :func:`topk_overlap`, :func:`spearman`, :func:`jsd`, :func:`tvd`, :func:`topk_mass`.
Segmentation test (:mod:`~captum_fvit.evaluate.metrics.segmentation`)
    :class:`SegmentationAccumulator` (streaming), :func:`segmentation_test`.
Perturbation test (:mod:`~captum_fvit.evaluate.metrics.perturbation`)
    :func:`perturbation_test`.
Captum metrics (:mod:`~captum_fvit.evaluate.metrics.captum_metrics`)
    :func:`infidelity_score`, :func:`sensitivity_score` and their pixel-unit perturbations.
Certified curves (:mod:`~captum_fvit.evaluate.metrics.curves`)
    :func:`certified_fraction`, :func:`certified_curves`.
Attacks (:mod:`~captum_fvit.evaluate.attacks.registry`)
    :func:`pgd_attack`, :func:`eot_pgd_attack`, :func:`topk_explanation_attack` (with the
    differentiable :class:`AttentionSurrogate`), :func:`get_attack`.
Runner and report (:mod:`~captum_fvit.evaluate.experiment.runner`, :mod:`~captum_fvit.evaluate.report.html`)
    :func:`evaluate` with :class:`EvaluationConfig` streams per-image rows
    (:mod:`~captum_fvit.evaluate.experiment.rows`) to ``results.jsonl``, resumes, and shards images over
    ``torch.distributed`` ranks; :func:`write_report` writes the aggregates. The CLI
    ``captum-fvit evaluate`` calls them.
Adaptive attacks and honest baselines (:mod:`~captum_fvit.evaluate.attacks.adaptive`, ...)
    :class:`DifferentiableDDS` (EOT gradients through noise → denoiser → ViT → method),
    :func:`smooth_pgd` and :func:`adaptive_topk` (attacks that know the defence),
    :class:`SmoothGradAttention` (Captum's NoiseTunnel baseline), the Monte-Carlo floor
    (:func:`seed_overlap`, :func:`choose_n_samples`), :func:`check_certificates`
    (certificates checked by attack) and :func:`run_paper_preset`
    (``captum-fvit evaluate --preset paper``).
Existing XAI benchmarks (:mod:`~captum_fvit.evaluate.metrics.quantus_adapter`)
    :class:`QuantusExplainFunc`: captum-fvit explanations as a Quantus ``explain_func``.
"""

from .attacks.adaptive import adaptive_topk, smooth_pgd
from .experiment.baselines import SmoothGradAttention
from .metrics.certificate_check import check_certificates
from ..differentiable import DifferentiableDDS
from .metrics.floor import choose_n_samples, seed_overlap
from .experiment.presets import PRESETS, run_paper_preset
from .report.paper_table import write_paper_table
from .experiment.variants import VARIANTS
from .attacks.registry import ATTACKS, eot_pgd_attack, get_attack, pgd_attack
from .metrics.captum_metrics import (
    gaussian_perturbation,
    infidelity_score,
    sensitivity_score,
    uniform_perturbation,
)
from .metrics.curves import CertifiedCurves, certified_curves, certified_fraction
from .attacks.explanation_attack import ExplanationAttackResult, topk_explanation_attack
from .metrics.similarity import jsd, spearman, topk_indices, topk_mass, topk_overlap, tvd
from .metrics.perturbation import DEFAULT_FRACTIONS, PerturbationResult, perturbation_test
from .metrics.quantus_adapter import QuantusExplainFunc
from .report.html import Report, markdown_table
from .experiment.rows import RowWriter, mean_ci, read_rows
from .experiment.runner import EvaluationConfig, EvaluationResult, evaluate, write_report
from .metrics.segmentation import (
    SegmentationAccumulator,
    SegmentationResult,
    average_precision,
    segmentation_test,
)
from .attacks.surrogate import AttentionSurrogate, surrogate_like

__all__ = [
    "ATTACKS",
    "DifferentiableDDS",
    "SmoothGradAttention",
    "adaptive_topk",
    "check_certificates",
    "choose_n_samples",
    "run_paper_preset",
    "PRESETS",
    "VARIANTS",
    "write_paper_table",
    "seed_overlap",
    "smooth_pgd",
    "DEFAULT_FRACTIONS",
    "EvaluationConfig",
    "EvaluationResult",
    "QuantusExplainFunc",
    "Report",
    "RowWriter",
    "mean_ci",
    "read_rows",
    "AttentionSurrogate",
    "CertifiedCurves",
    "ExplanationAttackResult",
    "PerturbationResult",
    "SegmentationAccumulator",
    "SegmentationResult",
    "average_precision",
    "certified_curves",
    "certified_fraction",
    "eot_pgd_attack",
    "evaluate",
    "gaussian_perturbation",
    "get_attack",
    "infidelity_score",
    "jsd",
    "markdown_table",
    "perturbation_test",
    "pgd_attack",
    "segmentation_test",
    "sensitivity_score",
    "spearman",
    "surrogate_like",
    "topk_explanation_attack",
    "topk_indices",
    "topk_mass",
    "topk_overlap",
    "tvd",
    "uniform_perturbation",
    "write_report",
]
