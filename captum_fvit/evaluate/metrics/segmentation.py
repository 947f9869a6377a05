"""The segmentation test of Chefer et al. (2021): how well a map separates object from background.

For each image the explanation map is upsampled (bilinear) to the mask's pixels, min–max
normalised to ``[0, 1]`` and binarised at its own mean (``map > mean`` = foreground). Over a
dataset (THEORY §4):

* **pixel accuracy** = Σ correct labelled pixels / Σ labelled pixels;
* **mIoU** = mean over the classes {background, foreground} of the *cumulative* intersection
  over the cumulative union (summed over all images before dividing);
* **mAP** = mean over images of the average precision of the continuous (normalised) map
  against the foreground mask, computed exactly as ``sklearn.metrics.average_precision_score``
  (step-wise, ties grouped), batched in torch.

Use :class:`SegmentationAccumulator` to stream batches (``update`` then ``compute``) or
:func:`segmentation_test` for one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...validation import check_choice
from .maps import as_map_batch, to_pixel_grid

__all__ = [
    "AP_MODES",
    "SegmentationAccumulator",
    "SegmentationResult",
    "average_precision",
    "segmentation_counts",
    "segmentation_test",
]

#: What the average precision is computed on: the map against the foreground ("foreground"),
#: or, as in Chefer et al.'s published code, the concatenation of (1 − map vs background) and
#: (map vs foreground) ("two_class").
AP_MODES = ("foreground", "two_class")


@dataclass
class SegmentationResult:
    """Scores of the segmentation test over every image seen.

    Attributes
    ----------
    pixel_accuracy : float
        Σ correct / Σ labelled pixels, in ``[0, 1]``.
    miou : float
        Mean over {background, foreground} of cumulative intersection / union (classes whose
        union is empty are left out).
    mean_ap : float
        Mean average precision over the images that have both labelled foreground and
        labelled background pixels (NaN if there are none).
    iou : Tensor
        ``2`` per-class IoU (background, foreground); NaN for a class with an empty union.
    ap : Tensor
        ``N`` average precision per image in the order seen; NaN where undefined (an image
        without labelled foreground, or without background in "two_class" mode).
    n_images : int
        Images seen.
    """

    pixel_accuracy: float
    miou: float
    mean_ap: float
    iou: torch.Tensor
    ap: torch.Tensor
    n_images: int


def _check_masks(
    masks: object, n: int, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``N×H×W`` foreground (bool) and labelled (bool) masks from 0/1(/ignore) masks."""
    if not isinstance(masks, torch.Tensor):
        raise TypeError(
            f"masks must be a torch.Tensor of shape N×H×W (0 = background, 1 = foreground), got "
            f"{type(masks).__name__}"
        )
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != 3:
        raise ValueError(f"masks must have shape N×H×W (or N×1×H×W), got {tuple(masks.shape)}")
    if masks.shape[0] != n:
        raise ValueError(
            f"masks hold {masks.shape[0]} images but maps hold {n}; pass one mask per map"
        )
    if masks.numel() == 0:
        raise ValueError(f"masks are empty (shape {tuple(masks.shape)})")
    labelled = torch.ones(masks.shape, dtype=torch.bool, device=masks.device)
    if ignore_index is not None:
        labelled = masks != ignore_index
    values = masks[labelled]
    if values.is_floating_point() and not torch.isfinite(values).all():
        raise ValueError("masks contain NaN or infinite values")
    if not ((values == 0) | (values == 1)).all():
        found = torch.unique(values)[:8].tolist()
        raise ValueError(
            f"masks must hold 0 (background) and 1 (foreground) only, found values {found}; "
            "binarise them (`mask > 0`) or pass ignore_index for unlabelled pixels"
        )
    return (masks == 1) & labelled, labelled


def average_precision(
    scores: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Average precision of each row of ``N×D`` scores against boolean ``N×D`` targets.

    ``AP = Σ_t (R_t − R_{t−1}) P_t`` over the distinct score thresholds ``t`` (descending), the
    definition of ``sklearn.metrics.average_precision_score``; entries with weight 0 are left
    out (unlabelled pixels).

    Returns
    -------
    Tensor
        ``N`` float64 values; NaN for rows without a (weighted) positive.
    """
    n, d = scores.shape
    values, order = torch.sort(scores, dim=1, descending=True, stable=True)
    w = torch.ones((n, d), dtype=torch.float64, device=scores.device)
    if weights is not None:
        w = weights.to(torch.float64)
    positive = targets.to(torch.float64) * w
    positive, w = positive.gather(1, order), w.gather(1, order)
    true_pos = positive.cumsum(dim=1)
    seen = w.cumsum(dim=1)
    precision = true_pos / torch.where(seen > 0, seen, 1.0)
    # Precision is read at the end of each tie group (the threshold that admits the group).
    ends = torch.ones((n, d), dtype=torch.bool, device=scores.device)
    ends[:, :-1] = values[:, 1:] != values[:, :-1]
    position = torch.arange(d, device=scores.device).expand(n, d)
    group_end = torch.where(ends, position, d - 1).flip(1).cummin(dim=1).values.flip(1)
    precision_at_end = precision.gather(1, group_end)
    total = positive.sum(dim=1)
    ap = (positive * precision_at_end).sum(dim=1) / torch.where(total > 0, total, 1.0)
    return torch.where(total > 0, ap, torch.nan)


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min–max normalisation of ``N×H×W`` maps; constant maps become 0."""
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - low
    normalised = (flat - low) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, normalised, torch.zeros_like(normalised)).reshape(maps.shape)


class SegmentationAccumulator:
    """Streaming segmentation test: call :meth:`update` per batch, :meth:`compute` at the end.

    Parameters
    ----------
    grid : tuple of int, optional
        Patch grid ``(h, w)`` of ``N×P`` token maps (default: a square grid).
    ignore_index : int, optional
        Mask value of unlabelled pixels, left out of every score.
    ap_mode : {"foreground", "two_class"}, default "foreground"
        ``"foreground"``: AP of the normalised map against the foreground mask (THEORY §4).
        ``"two_class"``: Chefer et al.'s published code, AP over the concatenation of
        (1 − map scored against background) and (map against foreground).

    Examples
    --------
    >>> acc = SegmentationAccumulator(grid=(4, 4))
    >>> for maps, masks in batches:  # doctest: +SKIP
    ...     acc.update(maps, masks)
    >>> acc.compute().miou  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        grid: Sequence[int] | None = None,
        ignore_index: int | None = None,
        ap_mode: str = "foreground",
    ) -> None:
        check_choice(ap_mode, "ap_mode", AP_MODES)
        self.grid = None if grid is None else (int(grid[0]), int(grid[1]))
        self.ignore_index = ignore_index
        self.ap_mode = ap_mode
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen."""
        self.correct = 0
        self.labelled = 0
        self.intersection = torch.zeros(2, dtype=torch.float64)
        self.union = torch.zeros(2, dtype=torch.float64)
        self._ap: list[torch.Tensor] = []

    def update(self, maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Add a batch.

        Parameters
        ----------
        maps : Tensor
            ``N×P`` token maps (on :attr:`grid`), ``N×h×w`` or ``N×C×h×w`` maps (channels are
            averaged) at most as large as the masks; upsampled bilinearly to the masks' size.
        masks : Tensor
            ``N×H×W`` (or ``N×1×H×W``) with 0 = background, 1 = foreground (and
            ``ignore_index`` for unlabelled pixels); bool masks work too.

        Returns
        -------
        Tensor
            ``N`` average precision of this batch's images.
        """
        counts = segmentation_counts(
            maps, masks, grid=self.grid, ignore_index=self.ignore_index, ap_mode=self.ap_mode
        )
        self.correct += int(counts["correct"].sum())
        self.labelled += int(counts["labelled"].sum())
        self.intersection += counts["intersection"].sum(dim=0)
        self.union += counts["union"].sum(dim=0)
        self._ap.append(counts["ap"])
        return counts["ap"]

    def compute(self) -> SegmentationResult:
        """Scores over every batch seen so far."""
        if self.labelled == 0:
            raise ValueError(
                "no labelled pixel has been seen: call update(maps, masks) with at least one "
                "image before compute()"
            )
        iou = torch.where(self.union > 0, self.intersection / self.union.clamp(min=1), torch.nan)
        ap = torch.cat(self._ap)
        defined = ~torch.isnan(ap)
        mean_ap = float(ap[defined].mean()) if defined.any() else float("nan")
        return SegmentationResult(
            pixel_accuracy=self.correct / self.labelled,
            miou=float(iou[~torch.isnan(iou)].mean()),
            mean_ap=mean_ap,
            iou=iou,
            ap=ap,
            n_images=int(ap.numel()),
        )


def segmentation_counts(
    maps: torch.Tensor,
    masks: torch.Tensor,
    *,
    grid: Sequence[int] | None = None,
    ignore_index: int | None = None,
    ap_mode: str = "foreground",
) -> dict[str, torch.Tensor]:
    """Per-image sufficient statistics of the segmentation test (batched, on CPU).

    Summing ``correct``/``labelled`` and ``intersection``/``union`` over images and averaging
    the defined ``ap`` gives exactly :meth:`SegmentationAccumulator.compute`, so a dataset's
    scores can be rebuilt from per-image rows.

    Returns
    -------
    dict of Tensor
        ``correct``, ``labelled`` (``N`` int64 pixel counts), ``intersection``, ``union``
        (``N×2`` float64, background and foreground) and ``ap`` (``N`` float64, NaN where
        undefined).
    """
    check_choice(ap_mode, "ap_mode", AP_MODES)
    maps = as_map_batch(maps, "maps")
    foreground, labelled = _check_masks(masks, maps.shape[0], ignore_index)
    size = tuple(foreground.shape[-2:])
    if maps.dim() >= 3 and tuple(maps.shape[-2:]) != size:
        if maps.shape[-2] > size[0] or maps.shape[-1] > size[1]:
            raise ValueError(
                f"the masks are {size[0]}x{size[1]} pixels but the maps are "
                f"{maps.shape[-2]}x{maps.shape[-1]}: masks must be at the images' "
                "resolution (the maps are upsampled to the masks, never downsampled)"
            )
    pixels = to_pixel_grid(maps.to(foreground.device), size, grid=grid)
    normalised = _min_max(pixels.double())
    n = normalised.shape[0]
    threshold = normalised.reshape(n, -1).mean(dim=1)
    predicted = normalised > threshold[:, None, None]

    def per_image(values: torch.Tensor) -> torch.Tensor:
        return values.reshape(n, -1).sum(dim=1)

    correct = per_image((predicted == foreground) & labelled)
    background_pred, background_true = ~predicted & labelled, ~foreground & labelled
    foreground_pred = predicted & labelled
    inter = torch.stack(
        [per_image(background_pred & background_true), per_image(foreground_pred & foreground)], 1
    )
    union = torch.stack(
        [per_image(background_pred | background_true), per_image(foreground_pred | foreground)], 1
    )
    scores = normalised.reshape(n, -1)
    targets = foreground.reshape(n, -1)
    weights = labelled.reshape(n, -1)
    if ap_mode == "two_class":
        scores = torch.cat([1 - scores, scores], dim=1)
        targets = torch.cat([~foreground.reshape(n, -1) & weights, targets], dim=1)
        weights = torch.cat([weights, weights], dim=1)
        half = targets.shape[1] // 2
        has_both = targets[:, :half].any(1) & targets[:, half:].any(1)
    ap = average_precision(scores, targets, weights)
    if ap_mode == "two_class":
        ap = torch.where(has_both, ap, torch.nan)
    return {
        "correct": correct.long().cpu(),
        "labelled": per_image(labelled).long().cpu(),
        "intersection": inter.double().cpu(),
        "union": union.double().cpu(),
        "ap": ap.double().cpu(),
    }


def segmentation_test(
    maps: torch.Tensor,
    masks: torch.Tensor,
    *,
    grid: Sequence[int] | None = None,
    ignore_index: int | None = None,
    ap_mode: str = "foreground",
) -> SegmentationResult:
    """The segmentation test on one batch (see :class:`SegmentationAccumulator`).

    Parameters
    ----------
    maps : Tensor
        ``N×P`` token maps, ``N×h×w`` or ``N×C×h×w`` maps.
    masks : Tensor
        ``N×H×W`` masks, 0 = background, 1 = foreground.
    grid, ignore_index, ap_mode
        As in :class:`SegmentationAccumulator`.
    """
    accumulator = SegmentationAccumulator(grid=grid, ignore_index=ignore_index, ap_mode=ap_mode)
    accumulator.update(maps, masks)
    return accumulator.compute()
