"""Attacks on predictions and explanations, all in one registry (:data:`ATTACKS`): PGD and the
transfer top-k attack on the plain model, EOT-PGD and the adaptive top-k attack through DDS
(:class:`~captum_fvit.differentiable.DifferentiableDDS`). Perturbations are in [0, 1] pixel
units.
"""

from __future__ import annotations

from .labels import LabelType, deprecated_alias, resolve_labels
from .pixels import (
    ascent_step,
    clean_pixels,
    project,
    projected_ascent,
    random_start,
    seeded_start,
    start_generator,
    resolve_step,
)
from .topk_ascent import AscentResult, Probe, label_preserving_ascent
from .eot_pgd import (
    ADAPTIVE_STREAMS,
    EOT_STREAMS,
    EOTStreams,
    LABEL_RULES,
    eot_pgd,
)
from .prediction import eot_pgd_attack, pgd_attack
from .surrogate import AttentionSurrogate, explained_method, surrogate_like
from .explanation_attack import ExplanationAttackResult, topk_explanation_attack
from .adaptive import (
    ADAPTIVE_STREAM,
    ADAPTIVE_LABEL_STREAM,
    AdaptiveTopKResult,
    adaptive_topk,
    smooth_pgd,
)
from .registry import (
    ATTACKS,
    THREATS,
    Attack,
    AttackContext,
    AttackSpec,
    register_attack,
    ExplanationAttackResult,
    eot_pgd_attack,
    get_attack,
    pgd_attack,
    topk_explanation_attack,
)

__all__ = [
    "LabelType",
    "deprecated_alias",
    "resolve_labels",
    "ascent_step",
    "clean_pixels",
    "project",
    "projected_ascent",
    "random_start",
    "seeded_start",
    "start_generator",
    "resolve_step",
    "AscentResult",
    "Probe",
    "label_preserving_ascent",
    "ADAPTIVE_STREAMS",
    "EOT_STREAMS",
    "EOTStreams",
    "LABEL_RULES",
    "eot_pgd",
    "eot_pgd_attack",
    "pgd_attack",
    "AttentionSurrogate",
    "explained_method",
    "surrogate_like",
    "ExplanationAttackResult",
    "topk_explanation_attack",
    "ADAPTIVE_STREAM",
    "ADAPTIVE_LABEL_STREAM",
    "AdaptiveTopKResult",
    "adaptive_topk",
    "smooth_pgd",
    "ATTACKS",
    "THREATS",
    "Attack",
    "AttackContext",
    "AttackSpec",
    "register_attack",
    "ExplanationAttackResult",
    "eot_pgd_attack",
    "get_attack",
    "pgd_attack",
    "topk_explanation_attack",
]
