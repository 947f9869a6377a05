"""Metrics of explanations and certificates: similarity of maps (top-k overlap, Spearman,
JSD/TVD), the segmentation and perturbation tests, Captum's infidelity/sensitivity, certified
curves, the Monte-Carlo floor, certificates checked by attack and the Quantus adapter.
"""

from __future__ import annotations

from .maps import as_map_batch, flatten_maps, to_pixel_grid
from .similarity import (
    average_ranks,
    jsd,
    normalize_mass,
    spearman,
    topk_indices,
    topk_mass,
    topk_overlap,
    tvd,
)
from .curves import CertifiedCurves, certified_curves, certified_fraction
from .segmentation import (
    AP_MODES,
    SegmentationAccumulator,
    SegmentationResult,
    average_precision,
    segmentation_counts,
    segmentation_test,
)
from .perturbation import (
    PERTURBATION_MODES,
    DEFAULT_FRACTIONS,
    PerturbationResult,
    perturbation_test,
)
from .captum_metrics import (
    FORWARD_OUTPUTS,
    gaussian_perturbation,
    infidelity_score,
    sensitivity_score,
    uniform_perturbation,
)
from .floor import choose_n_samples, predicted_seed_overlap, seed_overlap
from .certificate_check import CertificateCheck, CertificateCheckReport, check_certificates
from .quantus_adapter import QuantusExplainFunc

__all__ = [
    "as_map_batch",
    "flatten_maps",
    "to_pixel_grid",
    "average_ranks",
    "jsd",
    "normalize_mass",
    "spearman",
    "topk_indices",
    "topk_mass",
    "topk_overlap",
    "tvd",
    "CertifiedCurves",
    "certified_curves",
    "certified_fraction",
    "AP_MODES",
    "SegmentationAccumulator",
    "SegmentationResult",
    "average_precision",
    "segmentation_counts",
    "segmentation_test",
    "PERTURBATION_MODES",
    "DEFAULT_FRACTIONS",
    "PerturbationResult",
    "perturbation_test",
    "FORWARD_OUTPUTS",
    "gaussian_perturbation",
    "infidelity_score",
    "sensitivity_score",
    "uniform_perturbation",
    "choose_n_samples",
    "predicted_seed_overlap",
    "seed_overlap",
    "CertificateCheck",
    "CertificateCheckReport",
    "check_certificates",
    "QuantusExplainFunc",
]
