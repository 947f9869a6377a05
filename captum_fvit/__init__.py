"""captum-fvit: faithful Vision Transformer explanations for Captum.

Public API
----------
AttentionMap
    An attention explanation (raw, rollout, gradient rollout, attention Grad-CAM) of any
    supported ViT as a Captum ``Attribution``.
DDSAttention
    Denoised Diffusion Smoothing (DDS) of an attention explanation: noise in pixel space,
    one-shot diffusion denoising, attention of the denoised image, averaged over samples.
FaithfulRegion
    Certified radius within which the top-k attention tokens and the prediction cannot
    change, with explicit confidence: ``certify`` (fixed n, :class:`RegionCertificate`),
    ``decide`` (sequential test at a radius, :class:`SequentialCertificate`) and
    ``anytime_radii`` (:class:`AnytimeCertificate`), all :class:`BaseCertificate` records.
DDS
    The same denoised ensemble around any Captum attribution.
DiffusionDenoiser, IdentityDenoiser, load_guided_diffusion
    Denoisers (diffusers UNet2DModel + scheduler, none, OpenAI ADM checkpoints).
AttentionRecorder, register_adapter, AttentionAdapter
    Recording attention from stock timm, torchvision and Hugging Face models, and adding
    model families.
NonFiniteError
    Raised when the denoiser, the model or the method produce NaN or infinite values: no
    map or certificate is ever computed from them.
Normalization
    Conversion between the model's normalised inputs and [0, 1] pixel units (the units of
    σ, ε and certified radii everywhere in this library).
"""

from .attention import AttentionAdapter, AttentionRecorder, TokenLayout, register_adapter
from .attr import (
    DDS,
    AnytimeCertificate,
    AttentionMap,
    BaseCertificate,
    DDSAttention,
    DDSResult,
    FaithfulRegion,
    RegionCertificate,
    SequentialCertificate,
)
from .denoise import DiffusionDenoiser, IdentityDenoiser, load_guided_diffusion
from .errors import NonFiniteError
from .explain import METHODS, TokenMapExplainer, make_method
from .space import Normalization, resolve_normalization, tokens_to_pixels

__version__ = "0.1.0.dev0"

__all__ = [
    "METHODS",
    "AnytimeCertificate",
    "AttentionAdapter",
    "AttentionMap",
    "AttentionRecorder",
    "BaseCertificate",
    "DDS",
    "DDSAttention",
    "DDSResult",
    "DiffusionDenoiser",
    "FaithfulRegion",
    "RegionCertificate",
    "SequentialCertificate",
    "IdentityDenoiser",
    "NonFiniteError",
    "Normalization",
    "TokenLayout",
    "TokenMapExplainer",
    "__version__",
    "load_guided_diffusion",
    "make_method",
    "register_adapter",
    "resolve_normalization",
    "tokens_to_pixels",
]
