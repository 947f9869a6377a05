"""Captum ``Attribution`` classes of captum-fvit."""

from .attention_map import AttentionMap
from .dds import DDS
from .dds_attention import DDSAttention, DDSResult
from .region import FaithfulRegion, RegionCertificate

__all__ = [
    "DDS",
    "AttentionMap",
    "DDSAttention",
    "DDSResult",
    "FaithfulRegion",
    "RegionCertificate",
]
