"""The ImageNet-segmentation benchmark file ``gtsegs_ijcv.mat`` (Guillaumin et al. 2014).

This is the dataset of Chefer et al.'s segmentation test: 4,276 ImageNet validation images
with foreground masks, stored as a MATLAB v7.3 (HDF5) file. Its layout:

* ``value/img``: an ``N×1`` array of object references; each points to a ``uint8`` dataset
  of shape ``3×W×H`` (MATLAB's column-major order: transpose to ``H×W×3``);
* ``value/gt``: an ``N×1`` array of references; each points to a ``1×1`` array holding a
  reference to the ``W×H`` mask (non-zero = foreground).

The file carries no class labels: the evaluation explains each model's own prediction.
Reading needs ``h5py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .folder import resize_sample

__all__ = ["ImageNetSegmentation"]


class ImageNetSegmentation(Dataset):
    """Images and masks from ``gtsegs_ijcv.mat``, as ``{"image", "label", "mask"}`` samples.

    Parameters
    ----------
    path : path
        The ``.mat`` file.
    image_size : int, optional, default 224
        Resize images (bilinear, antialiased) and masks (nearest) to this square size.
    """

    def __init__(self, path: str | Path, image_size: int | None = 224) -> None:
        try:
            import h5py
        except ImportError as err:  # pragma: no cover - h5py is in the test extra
            raise ImportError("reading gtsegs_ijcv.mat needs h5py: pip install h5py") from err
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} does not exist")
        self._file = h5py.File(self.path, "r")
        try:
            self._images = self._file["value/img"]
            self._masks = self._file["value/gt"]
        except KeyError:
            raise ValueError(
                f"{self.path} is not in the gtsegs_ijcv.mat layout (no value/img and value/gt)"
            ) from None
        if len(self._images) == 0:
            raise ValueError(f"{self.path} holds no image")
        self.image_size = image_size
        self.class_names: list[str] = []

    def __len__(self) -> int:
        return int(self._images.shape[0])

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        file = self._file
        image = np.array(file[self._images[index, 0]]).transpose(2, 1, 0)
        mask_ref = file[self._masks[index, 0]][0, 0]
        mask = np.array(file[mask_ref]).transpose(1, 0)
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"mask {index} is {mask.shape[0]}x{mask.shape[1]} but its image is "
                f"{image.shape[0]}x{image.shape[1]}"
            )
        image_t = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)
        mask_t = torch.from_numpy(mask > 0)[None]
        image_t, mask_t = resize_sample(image_t.contiguous(), mask_t, self.image_size)
        return {"image": image_t, "label": -1, "mask": mask_t}

    def close(self) -> None:
        """Close the HDF5 file."""
        self._file.close()
