"""The weights manifest: what a bundle contains, how it was made, and its integrity check.

A bundle folder holds model files and ``manifest.json``. The manifest lists every other
file of the bundle with its SHA-256 and size (``files``), the recipe that trained the models
(hyper-parameters, seeds, steps, wall time, library versions) and the metrics measured on
fresh benchmark seeds. :func:`verify_bundle` recomputes the hashes before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "MANIFEST_FILE",
    "MANIFEST_FORMAT",
    "BundleError",
    "file_sha256",
    "list_bundle_files",
    "read_manifest",
    "verify_bundle",
    "write_manifest",
]

MANIFEST_FILE = "manifest.json"
#: Version of the manifest layout.
MANIFEST_FORMAT = 1

FIX_HINT = (
    "reinstall captum-fvit (pip install --force-reinstall captum-fvit) to restore the bundled "
    "weights, or rebuild them with `captum-fvit train-default --out DIR` and load that folder "
    "with load_default(path=DIR)"
)


class BundleError(ValueError, RuntimeError):
    """A weights bundle is missing, incomplete or corrupt; the message names the file and the fix.

    A :class:`ValueError` (bad input files), and a :class:`RuntimeError` for code written
    against earlier versions.
    """


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def list_bundle_files(folder: str | os.PathLike) -> list[str]:
    """Every file under ``folder`` except the manifest, as sorted POSIX relative paths."""
    root = Path(folder)
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name != MANIFEST_FILE and "__pycache__" not in p.parts
    )


def write_manifest(folder: str | os.PathLike, content: Mapping[str, Any]) -> dict[str, Any]:
    """Hash every file of ``folder`` and write ``folder/manifest.json``.

    Parameters
    ----------
    folder : path
        The bundle folder (model files already written).
    content : mapping
        Everything else the manifest records (recipe, metrics, versions); must be
        JSON-serialisable. ``format`` and ``files`` are filled in here.

    Returns
    -------
    dict
        The manifest as written.
    """
    root = Path(folder)
    files = {
        rel: {"sha256": file_sha256(root / rel), "bytes": (root / rel).stat().st_size}
        for rel in list_bundle_files(root)
    }
    manifest = {"format": MANIFEST_FORMAT, **dict(content), "files": files}
    (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return manifest


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """Read ``folder/manifest.json``.

    Raises
    ------
    BundleError
        If the folder or its manifest is missing or unreadable.
    """
    root = Path(folder)
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"no weights manifest at {path}; {FIX_HINT}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"the weights manifest {path} is unreadable ({err}); {FIX_HINT}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise BundleError(f"the weights manifest {path} has no 'files' table; {FIX_HINT}")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise BundleError(
            f"the weights manifest {path} has format {manifest.get('format')!r}, this captum-fvit "
            f"reads format {MANIFEST_FORMAT}; {FIX_HINT}"
        )
    return manifest


def verify_bundle(folder: str | os.PathLike) -> dict[str, Any]:
    """Check every file the manifest lists against its SHA-256; return the manifest.

    Raises
    ------
    BundleError
        Naming each missing or corrupt file, and the fix.
    """
    root = Path(folder)
    manifest = read_manifest(root)
    missing, corrupt = [], []
    for rel, entry in manifest["files"].items():
        path = root / rel
        if not path.is_file():
            missing.append(rel)
        elif file_sha256(path) != entry.get("sha256"):
            corrupt.append(rel)
    if missing or corrupt:
        parts = []
        if missing:
            parts.append("missing: " + ", ".join(missing))
        if corrupt:
            parts.append("corrupt (SHA-256 does not match the manifest): " + ", ".join(corrupt))
        raise BundleError(f"the weights bundle at {root} is damaged ({'; '.join(parts)}); {FIX_HINT}")
    return manifest
