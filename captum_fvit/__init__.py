"""captum-fvit: faithful Vision Transformer explanations for Captum.

Public API
----------
AttentionMap
    An attention explanation (raw, rollout, gradient rollout, attention Grad-CAM) of any
    supported ViT as a Captum ``Attribution``.
AttentionRecorder, register_adapter, AttentionAdapter
    Recording attention from stock timm, torchvision and Hugging Face models, and adding
    model families.
Normalization
    Conversion between the model's normalised inputs and [0, 1] pixel units (the units of
    σ, ε and certified radii everywhere in this library).
"""

from .attention import AttentionAdapter, AttentionRecorder, TokenLayout, register_adapter
from .attr import AttentionMap
from .explain import METHODS, TokenMapExplainer, make_method
from .space import Normalization, resolve_normalization, tokens_to_pixels

__version__ = "0.1.0.dev0"

__all__ = [
    "METHODS",
    "AttentionAdapter",
    "AttentionMap",
    "AttentionRecorder",
    "Normalization",
    "TokenLayout",
    "TokenMapExplainer",
    "__version__",
    "make_method",
    "register_adapter",
    "resolve_normalization",
    "tokens_to_pixels",
]
