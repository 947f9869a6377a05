"""A folder of images with optional object masks, for evaluating explanations.

Layout::

    root/
      images/          *.png / *.jpg / *.jpeg / *.bmp (optionally in class subfolders)
      masks/           optional; same relative path and stem as the image, any image
                       format; a pixel belongs to the object where the mask is non-zero

Labels: without class subfolders every label is -1 (unknown: the evaluation explains the
model's own prediction). With class subfolders (``images/n01440764/001.png``) give
``labels=``: a mapping *folder name → class id of the model* (e.g. ImageNet synsets to the
model's output index; a folder missing from it is an error), ``"index"`` for the subfolder's
index in sorted order (torchvision ``ImageFolder``'s convention — right only for a model
trained on exactly these folders) or ``"none"`` (all -1).

Images are resized keeping their aspect ratio — the shorter side to ``image_size / crop_pct``
— and center-cropped to ``image_size × image_size`` (timm's evaluation transform; take
``crop_pct`` from ``timm.data.resolve_data_config``), masks alike with nearest neighbours.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["ImageFolderWithMasks", "IMAGE_SUFFIXES", "load_label_map", "resize_sample"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def resize_sample(
    image: torch.Tensor,
    mask: torch.Tensor | None,
    size: int | None,
    crop_pct: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resize keeping the aspect ratio, then center-crop to ``size × size``.

    The shorter side of the ``3×H×W`` image becomes ``floor(size / crop_pct)`` pixels
    (bilinear, antialiased; timm's evaluation transform), then the central ``size × size``
    pixels are kept. The ``1×H×W`` mask follows with nearest neighbours. ``size=None`` keeps
    the image as it is.
    """
    if size is None:
        return image, mask
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must lie in (0, 1], got {crop_pct}")
    height, width = image.shape[-2:]
    short = max(size, math.floor(size / crop_pct))
    scale = short / min(height, width)
    new = (max(size, round(height * scale)), max(size, round(width * scale)))
    if (height, width) != new:
        image = F.interpolate(
            image[None], size=new, mode="bilinear", antialias=True, align_corners=False
        )[0].clamp(0, 1)
        if mask is not None:
            mask = F.interpolate(mask[None].float(), size=new, mode="nearest")[0] > 0.5
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    image = image[:, top : top + size, left : left + size]
    if mask is not None:
        mask = mask[:, top : top + size, left : left + size]
    return image.contiguous(), mask


def load_label_map(path: str | Path) -> dict[str, int]:
    """Folder name → class id, from a JSON object file or a text file with one folder name
    per line (line ``i``, counted from 0, is class ``i``; e.g. the ImageNet synset list)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--labels file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ValueError(f"--labels file {path} is not valid JSON: {err}") from None
        if not isinstance(data, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in data.values()
        ):
            raise ValueError(
                f"--labels file {path} must hold a JSON object mapping folder names to class "
                'ids ≥ 0, e.g. {"n01440764": 0}'
            )
        return {str(k): int(v) for k, v in data.items()}
    names = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not names:
        raise ValueError(f"--labels file {path} is empty")
    return {name: i for i, name in enumerate(names)}


def _open(path: Path, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"image file {path} is missing (was it moved or deleted?)")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot read image file {path}: {err}; replace or remove it") from None


def _load_rgb(path: Path) -> torch.Tensor:
    array = _open(path, "RGB").astype(np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _load_mask(path: Path) -> torch.Tensor:
    return torch.from_numpy(_open(path, "L") > 0)[None]


class ImageFolderWithMasks(Dataset):
    """Images (and masks) from a folder, as ``{"image", "label", "mask"}`` samples.

    Parameters
    ----------
    root : path
        Folder holding ``images/`` (and optionally ``masks/``).
    image_size : int, optional
        Resize (keeping the aspect ratio) and center-crop every image and mask to
        ``image_size × image_size`` pixels.
    labels : mapping, "index" or "none", default "index"
        Class ids of the class subfolders (see the module docstring).
    crop_pct : float, default 1.0
        Center-crop fraction (timm's ``crop_pct``): the shorter side is first resized to
        ``image_size / crop_pct``.

    Raises
    ------
    FileNotFoundError
        If ``root/images`` does not exist.
    ValueError
        If it holds no image, a class folder has no entry in ``labels``, or a mask's size
        differs from its image's.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int | None = None,
        *,
        labels: Mapping[str, int] | str = "index",
        crop_pct: float = 1.0,
    ) -> None:
        self.root = Path(root)
        images_dir = self.root / "images"
        if not images_dir.is_dir():
            raise FileNotFoundError(
                f"{images_dir} does not exist: put the images in an 'images/' folder inside "
                f"{self.root} (masks, if any, in 'masks/')"
            )
        self.paths = sorted(
            p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not self.paths:
            raise ValueError(
                f"{images_dir} holds no image ({', '.join(IMAGE_SUFFIXES)}); add images first"
            )
        classes = sorted({p.parent.name for p in self.paths if p.parent != images_dir})
        self.class_names = classes
        if isinstance(labels, str):
            if labels not in ("index", "none"):
                raise ValueError(f"labels must be a mapping, 'index' or 'none', got {labels!r}")
            ids = {c: (i if labels == "index" else -1) for i, c in enumerate(classes)}
        else:
            missing = [c for c in classes if c not in labels]
            if missing:
                fits = len(classes) - len(missing)
                raise ValueError(
                    f"the labels mapping has no class id for {len(missing)} of the "
                    f"{len(classes)} class folders of {images_dir} (e.g. {missing[:3]}; "
                    f"{fits} fit); give a mapping whose keys are these folder names"
                )
            ids = {c: int(labels[c]) for c in classes}
        self.labels = [ids[p.parent.name] if p.parent != images_dir else -1 for p in self.paths]
        self.crop_pct = float(crop_pct)
        masks_dir = self.root / "masks"
        self.mask_paths: list[Path | None] = []
        for path in self.paths:
            stem = path.relative_to(images_dir).with_suffix("")
            found = [
                masks_dir / stem.with_suffix(s)
                for s in IMAGE_SUFFIXES
                if (masks_dir / stem.with_suffix(s)).is_file()
            ]
            self.mask_paths.append(found[0] if found else None)
        self.image_size = image_size

    @property
    def has_masks(self) -> bool:
        """Whether every image has a mask."""
        return all(p is not None for p in self.mask_paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        image = _load_rgb(self.paths[index])
        mask = None
        if self.mask_paths[index] is not None:
            mask = _load_mask(self.mask_paths[index])
            if mask.shape[-2:] != image.shape[-2:]:
                raise ValueError(
                    f"mask {self.mask_paths[index]} is {mask.shape[-2]}x{mask.shape[-1]} but its "
                    f"image {self.paths[index]} is {image.shape[-2]}x{image.shape[-1]}; masks "
                    "must have the image's size"
                )
        image, mask = resize_sample(image, mask, self.image_size, self.crop_pct)
        return {"image": image, "label": self.labels[index], "mask": mask}
