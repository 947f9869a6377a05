"""Captum ``Attribution`` classes of captum-fvit."""

from .attention_map import AttentionMap

__all__ = ["AttentionMap"]
