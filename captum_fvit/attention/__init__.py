"""Recording attention from stock Vision Transformers (timm, torchvision, transformers).

Public API: :class:`AttentionRecorder` (context manager), the listener protocol and default
:class:`AttentionStore`, :class:`TokenLayout`, the Swin window assembly
(:class:`WindowGeometry`, :func:`assemble_windows`), and the adapter registry
(:class:`AttentionAdapter`, :func:`register_adapter`) for adding model families.
"""

from .adapter import AttentionAdapter, find_adapter, register_adapter, registered_adapters
from .layout import TokenLayout, infer_grid, merged_grid
from .recorder import AttentionListener, AttentionRecorder, AttentionStore, layout_for
from .swin_base import SwinAdapterBase
from .swin_timm import TimmSwinAdapter
from .swin_torchvision import TorchvisionSwinAdapter
from .swin_transformers import TransformersSwinAdapter
from .timm import TimmViTAdapter
from .torchvision import TorchvisionViTAdapter
from .transformers import TransformersViTAdapter
from .windows import WindowedAttention, WindowGeometry, assemble_windows

for _adapter in (
    TimmSwinAdapter(),
    TorchvisionSwinAdapter(),
    TransformersSwinAdapter(),
    TimmViTAdapter(),
    TorchvisionViTAdapter(),
    TransformersViTAdapter(),
):
    register_adapter(_adapter, first=False)
del _adapter

__all__ = [
    "AttentionAdapter",
    "AttentionListener",
    "AttentionRecorder",
    "AttentionStore",
    "SwinAdapterBase",
    "TimmSwinAdapter",
    "TimmViTAdapter",
    "TokenLayout",
    "TorchvisionSwinAdapter",
    "TorchvisionViTAdapter",
    "TransformersSwinAdapter",
    "TransformersViTAdapter",
    "WindowGeometry",
    "WindowedAttention",
    "assemble_windows",
    "find_adapter",
    "infer_grid",
    "layout_for",
    "merged_grid",
    "register_adapter",
    "registered_adapters",
]
