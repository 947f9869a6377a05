"""Diagnosing weight files before (or after) a loader fails on them.

Loaders of third-party formats fail on a damaged file with messages that name neither the
file nor the cause (``torch.load`` on an empty file raises an ``EOFError`` with no message;
``safetensors`` says "incomplete metadata, file not fully covered"). The checks here look at
a file's size and first bytes and raise an error that names the file, says what is wrong with
it (empty, truncated, a web page, a Git LFS pointer, another format) and how to fix it; the
fix is the caller's ``fix`` sentence (download it again, rebuild the bundle, ...).

* :func:`check_torch_checkpoint` / :func:`load_torch_checkpoint` - ``torch.save`` files
  (``.pt``/``.pth``/``.bin``).
* :func:`check_safetensors` - ``.safetensors`` files; :func:`check_json` - config files;
  :func:`check_state_dict` - what a checkpoint holds.
* :func:`local_model_folder` and :func:`diagnose_diffusers_folder` - a diffusers model folder
  (``config.json`` + ``diffusion_pytorch_model.safetensors``, ``scheduler_config.json``).

All errors are :class:`FileNotFoundError` (nothing there), :class:`ValueError` (a damaged or
foreign file) or :class:`TypeError` (a file of the right format holding the wrong object).
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "check_json",
    "check_safetensors",
    "check_state_dict",
    "check_torch_checkpoint",
    "diagnose_diffusers_folder",
    "load_torch_checkpoint",
    "local_model_folder",
]

_ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy (non-zip) format starts with a pickled magic number (protocol 2).
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a"
_LFS_POINTER = b"version https://git-lfs"
# what torch.load(weights_only=True) says about a pickled object it will not rebuild
_OBJECT_MARKERS = ("allowed global", "Unsupported global")
# safetensors refuses headers above 100 MB; a larger length prefix is not a safetensors file.
_MAX_SAFETENSORS_HEADER = 100_000_000
_DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _existing_file(path: str | os.PathLike, what: str, fix: str) -> tuple[Path, int]:
    """``(path, size)`` of an existing non-empty file, or a FileNotFoundError/ValueError."""
    path = Path(os.fspath(path)).expanduser()
    if path.is_dir():
        raise FileNotFoundError(f"{path} is a folder, not {what} file; {fix}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; {fix}")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path} is empty (0 bytes): the download or copy was interrupted; {fix}")
    return path, size


def _foreign(path: Path, head: bytes, what: str, fix: str) -> ValueError:
    """The error for a file whose first bytes are not ``what``."""
    stripped = head.lstrip()
    if stripped.startswith(_LFS_POINTER):
        reason = "is a Git LFS pointer, not the weights (run `git lfs pull` in its repository)"
    elif stripped[:1] == b"<":
        reason = "is a web page (HTML/XML), not the weights: the download link returned an error page"
    elif head[8:9] == b"{" and what != "a safetensors":
        reason = f"is a safetensors file, not {what} file"
    elif stripped[:1] in (b"{", b"["):
        reason = "is a JSON text file, not the weights"
    else:
        reason = f"is not {what} file (it starts with the bytes {head[:8]!r})"
    return ValueError(f"{path} {reason}; {fix}")


def check_torch_checkpoint(path: str | os.PathLike, fix: str) -> Path:
    """Check that ``path`` looks like a complete ``torch.save`` file; return it as a Path.

    Looks only at the size, the first bytes and (for the zip format ``torch.save`` writes
    since PyTorch 1.6) the archive's end record, so it costs almost nothing even for
    multi-gigabyte files. Damage in the middle of a file shows up only when it is read (see
    :func:`load_torch_checkpoint`).

    Parameters
    ----------
    path : path
        The checkpoint file.
    fix : str
        What the user should do about a bad file (ends every message).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist or is a folder.
    ValueError
        If the file is empty, truncated, or not a PyTorch checkpoint.
    """
    path, size = _existing_file(path, "a PyTorch checkpoint", fix)
    with open(path, "rb") as handle:
        head = handle.read(64)
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"{path} is truncated ({size:,} bytes; the end of its zip archive is missing): the "
                f"download or copy was interrupted; {fix}"
            )
        return path
    if head.startswith(_LEGACY_MAGIC):
        return path  # legacy format: no end record; a truncation shows when it is read
    raise _foreign(path, head, "a PyTorch checkpoint (torch.save)", fix)


def load_torch_checkpoint(path: str | os.PathLike, fix: str) -> Mapping[str, torch.Tensor]:
    """``torch.load(path, weights_only=True)`` of a state dict, with errors that name the file.

    Parameters
    ----------
    path : path
        A ``torch.save`` file holding a mapping of parameter names to tensors (or a mapping
        with such a state dict under ``"state_dict"``).
    fix : str
        What the user should do about a bad file.

    Returns
    -------
    Mapping[str, Tensor]
        The state dict, on the CPU.

    Raises
    ------
    FileNotFoundError, ValueError
        See :func:`check_torch_checkpoint`; also a ValueError if reading fails half-way
        (truncated or corrupt data) or the file holds Python objects other than tensors.
    TypeError
        If the file holds something other than a state dict.
    """
    path = check_torch_checkpoint(path, fix)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except EOFError:
        raise ValueError(f"{path} is truncated (it ends in the middle of its data); {fix}") from None
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, OSError, ...
        name = type(err).__name__
        if isinstance(err, pickle.UnpicklingError) and any(m in str(err) for m in _OBJECT_MARKERS):
            raise ValueError(
                f"{path} holds Python objects besides tensors, which captum-fvit does not unpickle "
                "(torch.load(weights_only=True)); if you trust the file, load it yourself with "
                "torch.load(path, weights_only=False) and pass the state dict instead of the path"
            ) from err
        detail = str(err).strip().splitlines()[0] if str(err).strip() else name
        raise ValueError(f"{path} is truncated or corrupt, torch.load failed ({name}: {detail}); {fix}") from err
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    check_state_dict(state, str(path))
    return state


def check_state_dict(state: Any, source: str) -> None:
    """Raise a TypeError unless ``state`` maps parameter names (str) to tensors."""
    if not isinstance(state, Mapping):
        raise TypeError(
            f"{source} holds a {type(state).__name__}, not a state dict (a mapping of parameter names "
            "to tensors, as model.state_dict() returns)"
        )
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{source} is not a state dict: entry {key!r} is a {type(value).__name__}, not a tensor "
                "(a state dict maps parameter names to tensors, as model.state_dict() returns)"
            )


def check_safetensors(path: str | os.PathLike, fix: str) -> Path:
    """Check that ``path`` is a complete ``.safetensors`` file; return it as a Path.

    Reads the length prefix and the JSON header only and compares the size the header
    describes with the file's size, then lets ``safetensors`` open the file.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist or is a folder.
    ValueError
        If the file is empty, truncated, longer than its header says, or not a safetensors
        file; the message names the file, the byte counts and ``fix``.
    """
    path, size = _existing_file(path, "a safetensors", fix)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if size < 8:
            raise ValueError(f"{path} is truncated ({size} bytes; a safetensors file has at least 8); {fix}")
        length = int.from_bytes(head, "little")
        if length > _MAX_SAFETENSORS_HEADER:
            raise _foreign(path, head + handle.read(56), "a safetensors", fix)
        if 8 + length > size:
            raise ValueError(
                f"{path} is truncated ({size:,} bytes, its header alone needs {8 + length:,}): the "
                f"download or copy was interrupted; {fix}"
            )
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _foreign(path, head, "a safetensors", fix) from None
    try:
        ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        raise ValueError(f"{path} is corrupt (its safetensors header is malformed); {fix}") from None
    expected = 8 + length + max(ends, default=0)
    if size < expected:
        raise ValueError(
            f"{path} is truncated ({size:,} of {expected:,} bytes): the download or copy was "
            f"interrupted; {fix}"
        )
    if size > expected:
        raise ValueError(f"{path} is corrupt ({size - expected:,} bytes more than its header describes); {fix}")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except SafetensorError as err:
        raise ValueError(f"{path} is corrupt ({err}); {fix}") from None
    return path


def check_json(path: str | os.PathLike, fix: str) -> Path:
    """Check that ``path`` is a readable JSON file (a model or scheduler config).

    Raises
    ------
    FileNotFoundError
        If it does not exist or is a folder.
    ValueError
        If it is empty or not valid JSON; the message names the file and ``fix``.
    """
    path, _ = _existing_file(path, "a JSON config", fix)
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): the file is damaged; {fix}") from None
    return path


def local_model_folder(path_or_hub_id: str | os.PathLike, what: str, fix: str) -> Path | None:
    """The local folder ``path_or_hub_id`` names, or ``None`` for a Hugging Face Hub id.

    Anything that exists on disk, any ``os.PathLike``, and any string a Hub id cannot be (an
    absolute path, one starting with ``.`` or ``~``, or with more than one ``/``) is a local
    path.

    Raises
    ------
    FileNotFoundError
        If it is a local path that does not exist (so that no Hub download is attempted);
        the message names ``what`` (e.g. "diffusers UNet"), the path and ``fix``.
    """
    text = os.fspath(path_or_hub_id)
    path = Path(text).expanduser()
    if path.exists():
        return path
    looks_local = (
        isinstance(path_or_hub_id, os.PathLike)
        or path.is_absolute()
        or text.startswith((".", "~"))
        or text.count("/") > 1
        or "\\" in text
    )
    if looks_local:
        raise FileNotFoundError(f"no {what} folder at {path}: it does not exist; {fix}")
    return None


def _candidate_folders(root: Path, subfolder: str | None) -> list[Path]:
    # diffusers reads <root>/<subfolder>/<file>, falling back to <root>/<file>.
    return [root / subfolder, root] if subfolder else [root]


def diagnose_diffusers_folder(
    root: Path,
    subfolder: str | None,
    config_name: str,
    error: BaseException,
    fix: str,
    *,
    weights: Sequence[str] = _DIFFUSERS_WEIGHTS,
) -> Exception:
    """The error to raise when diffusers failed to load a model or scheduler from ``root``.

    Looks for the first thing wrong in the folder diffusers read (``root/subfolder``, else
    ``root``): a missing or unreadable ``config_name``, missing weights (when ``weights`` is
    not empty), or a damaged ``.safetensors`` file (:func:`check_safetensors`). Returns (does
    not raise) a FileNotFoundError or ValueError naming the file and ``fix``; when the files
    look fine, a ValueError quoting diffusers' own message.
    """
    if not root.is_dir():
        return FileNotFoundError(f"{root} is a file; pass the folder that holds {config_name}; {fix}")
    folders = _candidate_folders(root, subfolder)
    config = next((f / config_name for f in folders if (f / config_name).is_file()), None)
    if config is None:
        where = " or ".join(str(f) for f in folders)
        hint = ""
        if subfolder is None:
            nested = sorted(p.parent.name for p in root.glob(f"*/{config_name}"))
            if nested:
                hint = f" (it is in a subfolder: pass subfolder={nested[0]!r})"
        return FileNotFoundError(f"no {config_name} in {where}{hint}; {fix}")
    try:
        check_json(config, fix)
    except (FileNotFoundError, ValueError) as err:
        return err
    if weights:
        folder = config.parent
        present = [folder / name for name in weights if (folder / name).is_file()]
        sharded = list(folder.glob("*.index.json"))
        if not present and not sharded:
            return FileNotFoundError(
                f"{folder} has {config_name} but no weights ({' or '.join(weights)}); {fix}"
            )
        for file in present:
            try:
                if file.suffix == ".safetensors":
                    check_safetensors(file, fix)
                else:
                    check_torch_checkpoint(file, fix)
            except (FileNotFoundError, ValueError) as err:
                return err
    return ValueError(f"cannot load {config.parent} ({type(error).__name__}: {error}); {fix}")
