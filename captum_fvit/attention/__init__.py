"""Recording attention from stock Vision Transformers (timm, torchvision, transformers).

Public API: :class:`AttentionRecorder` (context manager), the listener protocol and default
:class:`AttentionStore`, :class:`TokenLayout`, and the adapter registry
(:class:`AttentionAdapter`, :func:`register_adapter`) for adding model families.
"""

from .adapter import AttentionAdapter, find_adapter, register_adapter, registered_adapters
from .layout import TokenLayout, infer_grid
from .recorder import AttentionListener, AttentionRecorder, AttentionStore, layout_for
from .timm import TimmViTAdapter
from .torchvision import TorchvisionViTAdapter
from .transformers import TransformersViTAdapter

for _adapter in (TimmViTAdapter(), TorchvisionViTAdapter(), TransformersViTAdapter()):
    register_adapter(_adapter, first=False)
del _adapter

__all__ = [
    "AttentionAdapter",
    "AttentionListener",
    "AttentionRecorder",
    "AttentionStore",
    "TimmViTAdapter",
    "TokenLayout",
    "TorchvisionViTAdapter",
    "TransformersViTAdapter",
    "find_adapter",
    "infer_grid",
    "layout_for",
    "register_adapter",
    "registered_adapters",
]
