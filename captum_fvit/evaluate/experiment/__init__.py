"""The evaluation harness: :class:`EvaluationConfig` with its registries of variants
(:data:`VARIANTS`) and attacks, the per-batch pipeline, the runner (rows streamed to
``results.jsonl``, resume, ``torchrun`` sharding), aggregates, provenance and presets
(``captum-fvit evaluate --preset paper``). Its modules are imported by name
(``captum_fvit.evaluate.experiment.rows``, ...); the main names are here and in
:mod:`captum_fvit.evaluate`.
"""

from __future__ import annotations

from .config import EvaluationConfig
from .presets import PRESETS, run_paper_preset, run_preset
from .rows import RowWriter, mean_ci, read_rows
from .runner import EvaluationResult, evaluate, write_report
from .variants import VARIANTS, register_variant

__all__ = [
    "EvaluationConfig",
    "EvaluationResult",
    "PRESETS",
    "RowWriter",
    "VARIANTS",
    "evaluate",
    "mean_ci",
    "read_rows",
    "register_variant",
    "run_paper_preset",
    "run_preset",
    "write_report",
]
