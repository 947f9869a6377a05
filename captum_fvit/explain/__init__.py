"""Attention explanation methods on token maps (``N×P`` patch tokens), all batched.

Select a method by name everywhere: ``"raw"``, ``"rollout"``, ``"grad_rollout"``,
``"attn_gradcam"`` (THEORY §3, and the methods page of the guide). :class:`TokenMapExplainer`
runs a model and a method on a batch; the ``attention_rollout``-style functions apply a
method to maps recorded earlier. Pooled models are explained by the mean query
(:func:`query_rows`), Swin stages are joined by the 2×2-children rule
(:func:`spread_to_children`).
"""

from .base import (
    HEAD_FUSIONS,
    METHODS,
    TokenMapAccumulator,
    TokenMapMethod,
    make_method,
    register_method,
)
from .explainer import TokenMapExplainer, TokenMaps
from .gradient import (
    AttentionGradCAM,
    GradientRollout,
    attention_gradcam,
    gradient_rollout,
)
from .raw import RawAttention, raw_attention
from .rollout import AttentionRollout, attention_rollout
from .stages import query_rows, spread_to_children
from .targets import logits_of, resolve_target

__all__ = [
    "HEAD_FUSIONS",
    "METHODS",
    "AttentionGradCAM",
    "AttentionRollout",
    "GradientRollout",
    "RawAttention",
    "TokenMapAccumulator",
    "TokenMapExplainer",
    "TokenMapMethod",
    "TokenMaps",
    "attention_gradcam",
    "attention_rollout",
    "gradient_rollout",
    "logits_of",
    "make_method",
    "query_rows",
    "raw_attention",
    "register_method",
    "resolve_target",
    "spread_to_children",
]
