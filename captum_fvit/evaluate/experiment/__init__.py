"""The evaluation harness: :class:`EvaluationConfig` with its registries of variants and
attacks, the per-batch pipeline, the runner (streamed rows, resume, torchrun sharding),
aggregates, provenance and presets (``--preset paper``).
"""

from __future__ import annotations

from .provenance import PACKAGES, versions, describe
from .rows import (
    RowWriter,
    group_rows,
    mean_ci,
    read_jsonl,
    read_rows,
    row_key,
    shard_path,
)
from .distributed import Shard, current_shard, shard_batches
from .baselines import BASELINES, SmoothGradAttention, noise_tunnel_stdev
from .variants import (
    VARIANTS,
    Explainer,
    VariantSpec,
    build_explainer,
    register_variant,
)
from .config import EvaluationConfig, VARIANTS, attack_threat
from .aggregate import (
    EvaluationResult,
    accuracy_by_attack,
    aggregate_rows,
    certificate_curves,
    metric_table,
    smoothed_accuracy_under_attack,
)
from .pipeline import (
    KEY_FIELDS,
    Batch,
    BatchState,
    ImageFailure,
    Pipeline,
    Unit,
    load_batch,
)
from .runner import (
    EvaluationConfig,
    EvaluationResult,
    VARIANTS,
    evaluate,
    stream_files,
    write_report,
)
from .presets import (
    ATTACK_NAMES,
    PAPER,
    PRESETS,
    PaperResult,
    Preset,
    markdown_to_rst,
    preset_config,
    run_paper_preset,
    run_preset,
    write_paper_table,
)

__all__ = [
    "PACKAGES",
    "versions",
    "describe",
    "RowWriter",
    "group_rows",
    "mean_ci",
    "read_jsonl",
    "read_rows",
    "row_key",
    "shard_path",
    "Shard",
    "current_shard",
    "shard_batches",
    "BASELINES",
    "SmoothGradAttention",
    "noise_tunnel_stdev",
    "VARIANTS",
    "Explainer",
    "VariantSpec",
    "build_explainer",
    "register_variant",
    "EvaluationConfig",
    "VARIANTS",
    "attack_threat",
    "EvaluationResult",
    "accuracy_by_attack",
    "aggregate_rows",
    "certificate_curves",
    "metric_table",
    "smoothed_accuracy_under_attack",
    "KEY_FIELDS",
    "Batch",
    "BatchState",
    "ImageFailure",
    "Pipeline",
    "Unit",
    "load_batch",
    "EvaluationConfig",
    "EvaluationResult",
    "VARIANTS",
    "evaluate",
    "stream_files",
    "write_report",
    "ATTACK_NAMES",
    "PAPER",
    "PRESETS",
    "PaperResult",
    "Preset",
    "markdown_to_rst",
    "preset_config",
    "run_paper_preset",
    "run_preset",
    "write_paper_table",
]
