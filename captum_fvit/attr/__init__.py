"""Captum ``Attribution`` classes of captum-fvit."""

from .attention_map import AttentionMap
from .dds import DDS
from .dds_attention import DDSAttention, DDSResult
from .region import FaithfulRegion, RegionCertificate
from .sequential import AnytimeCertificate, SequentialCertificate

__all__ = [
    "AnytimeCertificate",
    "DDS",
    "AttentionMap",
    "DDSAttention",
    "DDSResult",
    "FaithfulRegion",
    "RegionCertificate",
    "SequentialCertificate",
]
