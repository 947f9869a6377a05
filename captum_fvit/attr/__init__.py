"""Captum ``Attribution`` classes of captum-fvit."""

from .attention_map import AttentionMap
from .certificate import BaseCertificate
from .dds import DDS
from .dds_attention import DDSAttention, DDSResult
from .region import FaithfulRegion, RegionCertificate
from .region_sequential import AnytimeCertificate, SequentialCertificate

__all__ = [
    "AnytimeCertificate",
    "BaseCertificate",
    "DDS",
    "AttentionMap",
    "DDSAttention",
    "DDSResult",
    "FaithfulRegion",
    "RegionCertificate",
    "SequentialCertificate",
]
