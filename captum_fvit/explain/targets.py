"""Logits and targets: re-exported from :mod:`captum_fvit.model_io`, where they live."""

from __future__ import annotations

from ..model_io import TargetType, logits_of, resolve_target

__all__ = ["TargetType", "logits_of", "resolve_target"]
