"""What produced a result: package versions and a description of model, denoiser and data."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

__all__ = ["PACKAGES", "versions", "describe"]

#: Packages whose versions every evaluation output records.
PACKAGES = ("captum-fvit", "torch", "timm", "captum", "diffusers")


def versions() -> dict[str, str | None]:
    """Installed versions of :data:`PACKAGES` (``None`` when not installed) and Python's."""
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["python"] = platform.python_version()
    return found


def describe(obj: Any, default: str = "none") -> str:
    """A short human name for a model, denoiser or dataset (class, and size when known)."""
    if obj is None:
        return default
    name = type(obj).__name__
    for attribute in ("default_cfg", "pretrained_cfg"):
        cfg = getattr(obj, attribute, None)
        if isinstance(cfg, dict) and cfg.get("architecture"):
            name = f"{cfg['architecture']} ({name})"
            break
    try:
        size = len(obj)  # datasets
    except TypeError:
        return name
    return f"{name} with {size} images"
