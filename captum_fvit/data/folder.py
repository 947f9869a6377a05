"""A folder of images with optional object masks, for evaluating explanations.

Layout::

    root/
      images/          *.png / *.jpg / *.jpeg / *.bmp (optionally in class subfolders)
      masks/           optional; same relative path and stem as the image, any image
                       format; a pixel belongs to the object where the mask is non-zero

With class subfolders (``images/cat/001.png``) the label is the subfolder's index in sorted
order, as in torchvision's ``ImageFolder``; without them the label is -1 (unknown: the
evaluation then explains the model's own prediction).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["ImageFolderWithMasks", "IMAGE_SUFFIXES", "resize_sample"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def resize_sample(
    image: torch.Tensor, mask: torch.Tensor | None, size: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resize a ``3×H×W`` image (bilinear, antialiased) and its ``1×H×W`` mask (nearest)."""
    if size is None or image.shape[-2:] == (size, size):
        return image, mask
    image = F.interpolate(
        image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )[0].clamp(0, 1)
    if mask is not None:
        mask = F.interpolate(mask[None].float(), size=(size, size), mode="nearest")[0] > 0.5
    return image, mask


def _load_rgb(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _load_mask(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as img:
        array = np.asarray(img.convert("L"))
    return torch.from_numpy(array > 0)[None]


class ImageFolderWithMasks(Dataset):
    """Images (and masks) from a folder, as ``{"image", "label", "mask"}`` samples.

    Parameters
    ----------
    root : path
        Folder holding ``images/`` (and optionally ``masks/``).
    image_size : int, optional
        Resize every image (and mask) to ``image_size × image_size`` pixels.

    Raises
    ------
    FileNotFoundError
        If ``root/images`` does not exist.
    ValueError
        If it holds no image, or a mask's size differs from its image's.
    """

    def __init__(self, root: str | Path, image_size: int | None = None) -> None:
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
        self.labels = [
            classes.index(p.parent.name) if p.parent != images_dir else -1 for p in self.paths
        ]
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
        image, mask = resize_sample(image, mask, self.image_size)
        return {"image": image, "label": self.labels[index], "mask": mask}
