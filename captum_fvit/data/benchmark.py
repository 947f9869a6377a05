"""The shapes benchmark: one class-defining object on clutter, with its ground-truth mask.

Each image (RGB, ``image_size``² pixels, values in ``[0, 1]``) shows exactly one object of
one of :data:`~captum_fvit.data.shapes.CLASS_NAMES` at a random position, scale and rotation,
in a random colour, over textured clutter (:mod:`.background`) with small distractors
(:mod:`.distractors`) that carry no class information. The label is the object's class and
the mask marks the pixels whose centre lies inside the object.

How an image is made (image ``i`` of dataset ``seed``; all randomness from :mod:`.rng`):

1. **Label.** Indices are grouped in blocks of ``NUM_CLASSES`` consecutive indices; each
   block is a random permutation of the classes. Every block of 6 is exactly balanced.
2. **Geometry.** The object's closed-form area is a fraction ``f`` of the image, uniform in
   ``config.area_range`` (default 6–20 %) whatever the class, so size carries no class
   information. The scale follows from ``f`` and the class's unit area; the rotation is
   uniform in ``[0, 2π)``; the centre is uniform among positions that keep the whole object
   (its circumradius) at least 1 px inside the image.
3. **Background** and **distractors**; distractors keep a 2 px gap from the object (they
   may appear inside a ring's hole, which is background).
4. **Colour.** Uniform in ``[0, 1]³`` independently of the class, under a contrast
   constraint: among 16 candidate colours, the first whose RGB distance to the background
   at 9 points around the object (its centre and 8 points at its equal-area radius) is at
   least ``config.min_contrast`` everywhere (else the most distant candidate).
5. **Compositing.** Coverage ``α = clamp(0.5 − d, 0, 1)`` from the signed distance ``d`` in
   pixels (a box-filtered edge, 1 px wide); image ``= clamp(bg + α (colour − bg), 0, 1)``.

The mask is ``d ≤ 0`` (``α ≥ 0.5``). Its area matches the closed-form area up to pixel
rounding, so the mask covers a fraction of the image in ``area_range`` widened by a few
pixels (at 64×64, within ``[0.055, 0.21]`` for the default range). Pixels outside the
mask with ``0 < α < 0.5`` form a thin anti-aliased rim; :attr:`RenderedBatch.coverage`
gives ``α`` for users who want the soft mask.

Determinism: every random number is a function of ``(seed, i)`` only, and only exactly
rounded arithmetic touches pixel tensors, so an image is bit-identical whether rendered
alone, in any batch or chunk size, in any order, and with any number of threads (tested on
one machine; the integer-only random numbers are the same on every platform).

Splits: :data:`SPLIT_SEEDS` names the seeds of the conventional ``train``/``val``/``test``
streams (:meth:`ShapesBenchmark.from_split`). Streams of different seeds are independent,
so any seed not used for training is a *fresh* evaluation set.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from ..validation import check_choice, check_count, check_probability, check_seed, renamed_argument
from .background import render_background, sample_background_params
from .distractors import KEEP_OUT, draw_distractors, sample_distractor_params
from .rng import (
    DOMAIN_COLOUR,
    DOMAIN_LABEL,
    DOMAIN_OBJECT,
    as_index_array,
    cos_sin,
    counter_uniform,
)
from .shapes import CLASS_NAMES, NUM_CLASSES, UNIT_AREA, UNIT_CIRCUMRADIUS, shape_sdf_pixels

__all__ = [
    "MIN_IMAGE_SIZE",
    "SPLIT_SEEDS",
    "ShapesConfig",
    "RenderedBatch",
    "ShapesBenchmark",
    "render_batch",
    "sample_labels",
    "stream_seed",
]

#: Smallest supported image side, in pixels.
MIN_IMAGE_SIZE = 32


def stream_seed(seed: object) -> int:
    """A benchmark stream seed: an integer in ``[0, 2**63)`` (``None`` is refused).

    :func:`captum_fvit.validation.check_seed`, except that ``None`` (a random seed elsewhere)
    has no meaning here: a stream is named by its seed.
    """
    if seed is None:
        raise TypeError("seed must be an int naming the benchmark stream (e.g. seed=0; see SPLIT_SEEDS)")
    return check_seed(seed)
#: Seeds of the conventional splits. Any other seed is an independent, fresh stream.
SPLIT_SEEDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}

_N_COLOUR_CANDIDATES = 16
_BORDER = 1.0  # minimum gap between the object's circumradius and the image edge, pixels
# Directions of the 8 colour-probe points around the object centre (no trig at render time).
_R2 = math.sqrt(0.5)
_PROBE_DIRS = np.array(
    [(0.0, 0.0), (1, 0), (-1, 0), (0, 1), (0, -1), (_R2, _R2), (_R2, -_R2), (-_R2, _R2), (-_R2, -_R2)],
    dtype=np.float64,
)


@dataclass(frozen=True)
class ShapesConfig:
    """Knobs of the benchmark (defaults are the documented benchmark).

    Parameters
    ----------
    area_range : (float, float)
        Range of the object's closed-form area as a fraction of the image area; the fraction
        is uniform in this range. Default ``(0.06, 0.20)``.
    num_distractors : (int, int)
        Inclusive range of distractors per image (uniform). Default ``(3, 7)``.
    min_contrast : float
        Minimum RGB Euclidean distance (``[0, √3]``) between the object colour and the
        background around it. Default ``0.45``.
    stripe_prob : float
        Probability that a background has stripes. Default ``0.5``.
    antialias : bool
        Box-filtered edges (1-px ramp of the signed distance) if true, hard edges if not.
    """

    area_range: tuple[float, float] = (0.06, 0.20)
    num_distractors: tuple[int, int] = (3, 7)
    min_contrast: float = 0.45
    stripe_prob: float = 0.5
    antialias: bool = True

    def __post_init__(self) -> None:
        lo, hi = (float(a) for a in self.area_range)
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"area_range must satisfy 0 < low <= high < 1, got {self.area_range}")
        n_lo, n_hi = self.num_distractors
        if not (isinstance(n_lo, (int, np.integer)) and isinstance(n_hi, (int, np.integer))):
            raise TypeError(f"num_distractors must be two ints, got {self.num_distractors}")
        if not 0 <= n_lo <= n_hi <= 64:
            raise ValueError(f"num_distractors must satisfy 0 <= low <= high <= 64, got {self.num_distractors}")
        check_probability(self.min_contrast, "min_contrast", low_open=False, high_open=False)
        check_probability(self.stripe_prob, "stripe_prob", low_open=False, high_open=False)

    def check_image_size(self, image_size: int) -> int:
        """Validate ``image_size`` for this config and return it as an int.

        Raises
        ------
        TypeError
            If ``image_size`` is not an int.
        ValueError
            If it is below :data:`MIN_IMAGE_SIZE`, or too small for the largest object of
            ``area_range`` to fit inside the image.
        """
        image_size = check_count(image_size, "image_size", minimum=MIN_IMAGE_SIZE)
        hi = float(self.area_range[1])
        for c in range(NUM_CLASSES):
            rho = UNIT_CIRCUMRADIUS[c] * math.sqrt(hi * image_size * image_size / UNIT_AREA[c])
            if rho + _BORDER > 0.5 * image_size:
                raise ValueError(
                    f"area_range high {hi} is too large: a {CLASS_NAMES[c]} of that area does not fit "
                    f"in a {image_size}x{image_size} image"
                )
        return image_size


@dataclass
class RenderedBatch:
    """A rendered batch with its ground truth.

    Attributes
    ----------
    images : torch.Tensor
        ``(B, 3, H, W)`` float32 RGB in ``[0, 1]``.
    labels : torch.Tensor
        ``(B,)`` int64 class labels (index into :data:`CLASS_NAMES`).
    masks : torch.Tensor
        ``(B, 1, H, W)`` bool, pixel centres inside the object.
    coverage : torch.Tensor
        ``(B, 1, H, W)`` float32 object opacity ``α`` in ``[0, 1]`` (soft mask).
    backgrounds : torch.Tensor
        ``(B, 3, H, W)`` float32, the same images with the object not drawn.
    indices : torch.Tensor
        ``(B,)`` int64 image indices.
    params : dict of str to torch.Tensor
        Per-image object parameters: ``center`` ``(B, 2)`` (x, y) pixels, ``scale`` ``(B,)``
        pixels, ``angle`` ``(B,)`` radians, ``area_fraction`` ``(B,)`` (closed-form area /
        image area), ``colour`` ``(B, 3)``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    coverage: torch.Tensor
    backgrounds: torch.Tensor
    indices: torch.Tensor
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def sample_labels(seed: int, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Class labels of images ``indices`` of dataset ``seed`` (cheap: no rendering).

    Each block of :data:`NUM_CLASSES` consecutive indices (``[6k, 6k+6)``) holds every class
    exactly once, in a random order.

    Returns
    -------
    torch.Tensor
        ``(B,)`` int64 labels.
    """
    seed = stream_seed(seed)
    idx = as_index_array(indices)
    return torch.from_numpy(_labels(seed, idx))


def _labels(seed: int, idx: np.ndarray) -> np.ndarray:
    block, pos = np.divmod(idx, NUM_CLASSES)
    u = counter_uniform(seed, block, DOMAIN_LABEL, NUM_CLASSES)
    perm = np.argsort(u, axis=1, kind="stable")
    return perm[np.arange(idx.shape[0]), pos].astype(np.int64)


def _render_chunk(seed: int, idx: np.ndarray, image_size: int, config: ShapesConfig) -> dict[str, torch.Tensor]:
    n = image_size
    b = idx.shape[0]
    labels = _labels(seed, idx)

    # Object geometry (float64 on the host, per-value operations only).
    u = counter_uniform(seed, idx, DOMAIN_OBJECT, 4)
    a_lo, a_hi = (float(a) for a in config.area_range)
    frac = a_lo + (a_hi - a_lo) * u[:, 0]
    unit_area = np.asarray(UNIT_AREA)[labels]
    scale = np.sqrt(frac * float(n * n) / unit_area)
    rho = np.asarray(UNIT_CIRCUMRADIUS)[labels] * scale
    free = n - 2.0 * (rho + _BORDER)
    cx = rho + _BORDER + u[:, 1] * free
    cy = rho + _BORDER + u[:, 2] * free
    angle = 2.0 * math.pi * u[:, 3]
    ca, sa = cos_sin(angle)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).float()

    pix = torch.arange(n, dtype=torch.float32) + 0.5
    labels_t = torch.from_numpy(labels)
    sdf = shape_sdf_pixels(labels_t, pix, pix, t(cx), t(cy), t(scale), t(ca), t(sa))  # (B, H, W)

    # Background, then the colour probes (before distractors: those never reach the object).
    bg = render_background(sample_background_params(seed, idx, n, config.stripe_prob), n)
    r_eq = np.sqrt(frac * float(n * n) / math.pi)
    probe_x = np.clip(np.floor(cx[:, None] + r_eq[:, None] * _PROBE_DIRS[None, :, 0]), 0, n - 1).astype(np.int64)
    probe_y = np.clip(np.floor(cy[:, None] + r_eq[:, None] * _PROBE_DIRS[None, :, 1]), 0, n - 1).astype(np.int64)
    probes = bg[torch.arange(b)[:, None], :, torch.from_numpy(probe_y), torch.from_numpy(probe_x)]  # (B, 9, 3)
    probes = probes.numpy().astype(np.float64)

    cand = counter_uniform(seed, idx, DOMAIN_COLOUR, 3 * _N_COLOUR_CANDIDATES).reshape(b, -1, 3)
    diff = cand[:, :, None, :] - probes[:, None, :, :]  # (B, K, 9, 3)
    d2 = diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1] + diff[..., 2] * diff[..., 2]
    d2min = d2.min(axis=2)  # (B, K)
    ok = d2min >= float(config.min_contrast) ** 2
    pick = np.where(ok.any(axis=1), np.argmax(ok, axis=1), np.argmax(d2min, axis=1))
    colour = cand[np.arange(b), pick]  # (B, 3)

    # Distractors, kept away from the object.
    k = n / 64.0
    keep = ((sdf - KEEP_OUT * k)).clamp(0.0, 1.0)
    dparams = sample_distractor_params(seed, idx, n, config.num_distractors)
    bg = draw_distractors(bg, dparams, keep_out=keep, antialias=config.antialias)

    # The object.
    alpha = (0.5 - sdf).clamp(0.0, 1.0) if config.antialias else (sdf <= 0.0).float()
    alpha = alpha[:, None]
    col = t(colour)[:, :, None, None]
    image = (bg + (col - bg) * alpha).clamp(0.0, 1.0)
    return {
        "images": image,
        "labels": labels_t,
        "masks": (sdf <= 0.0)[:, None],
        "coverage": alpha,
        "backgrounds": bg.clamp(0.0, 1.0),
        "center": t(np.stack([cx, cy], axis=1)),
        "scale": t(scale),
        "angle": t(angle),
        "area_fraction": t(frac),
        "colour": t(colour),
    }


def render_batch(
    seed: int,
    indices: Sequence[int] | np.ndarray | torch.Tensor,
    image_size: int = 64,
    config: ShapesConfig | None = None,
    batch_size: int = 64,
    *,
    chunk_size: int | None = None,
) -> RenderedBatch:
    """Render images ``indices`` of the benchmark stream ``seed``.

    Parameters
    ----------
    seed : int
        Stream seed in ``[0, 2**63)`` (see :data:`SPLIT_SEEDS`).
    indices : sequence of int, numpy array or torch tensor
        ``(B,)`` non-negative image indices (repeats allowed, any order).
    image_size : int
        Image side in pixels, at least :data:`MIN_IMAGE_SIZE` (32).
    config : ShapesConfig, optional
        Benchmark knobs; the default benchmark if ``None``.
    batch_size : int, default 64
        Images rendered at once (memory/speed trade-off only; the result does not depend
        on it).
    chunk_size : int, optional
        Deprecated name of ``batch_size``.

    Returns
    -------
    RenderedBatch
        Images, labels, masks, coverage, object-free backgrounds and object parameters.

    Raises
    ------
    TypeError, ValueError
        For a bad seed, index, image size or batch size.
    """
    seed = stream_seed(seed)
    config = ShapesConfig() if config is None else config
    if not isinstance(config, ShapesConfig):
        raise TypeError(f"config must be a ShapesConfig, got {type(config).__name__}")
    image_size = config.check_image_size(image_size)
    batch_size = renamed_argument(batch_size, chunk_size, "batch_size", "chunk_size", 64, "render_batch")
    batch_size = check_count(batch_size, "batch_size")
    idx = as_index_array(indices)
    b, n = idx.shape[0], image_size
    out = {
        "images": torch.empty(b, 3, n, n),
        "labels": torch.empty(b, dtype=torch.int64),
        "masks": torch.empty(b, 1, n, n, dtype=torch.bool),
        "coverage": torch.empty(b, 1, n, n),
        "backgrounds": torch.empty(b, 3, n, n),
        "center": torch.empty(b, 2),
        "scale": torch.empty(b),
        "angle": torch.empty(b),
        "area_fraction": torch.empty(b),
        "colour": torch.empty(b, 3),
    }
    with torch.no_grad():
        for start in range(0, b, int(batch_size)):
            part = _render_chunk(seed, idx[start : start + int(batch_size)], n, config)
            for key, value in part.items():
                out[key][start : start + value.shape[0]] = value
    return RenderedBatch(
        images=out.pop("images"),
        labels=out.pop("labels"),
        masks=out.pop("masks"),
        coverage=out.pop("coverage"),
        backgrounds=out.pop("backgrounds"),
        indices=torch.from_numpy(idx.copy()),
        params=out,
    )


class ShapesBenchmark(Dataset):
    """Procedural shapes benchmark as a map-style torch dataset, rendered on the fly.

    Parameters
    ----------
    size : int
        Number of images (indices ``0 … size−1``), at least 1.
    image_size : int
        Image side in pixels, at least 32. Default 64.
    seed : int
        Stream seed in ``[0, 2**63)``; see :data:`SPLIT_SEEDS` and :meth:`from_split`.
    config : ShapesConfig, optional
        Benchmark knobs; the default benchmark if ``None``.
    render_batch_size : int, default 64
        Images rendered at once inside :meth:`batch` (:func:`render_batch`'s ``batch_size``:
        speed/memory only, the images do not depend on it). Not the size of the batches
        :meth:`iter_batches` or a ``DataLoader`` yield.
    chunk_size : int, optional
        Deprecated name of ``render_batch_size``.

    Notes
    -----
    ``dataset[i]`` is a dict ``{"image": (3, H, W) float32 in [0, 1], "label": int,
    "mask": (1, H, W) bool}``. Rendering one image at a time is dominated by overhead: use
    :meth:`batch` or a :class:`torch.utils.data.DataLoader` (which calls
    :meth:`__getitems__` to render a whole batch at once).
    """

    def __init__(
        self,
        size: int = 10_000,
        image_size: int = 64,
        seed: int = 0,
        *,
        config: ShapesConfig | None = None,
        render_batch_size: int = 64,
        chunk_size: int | None = None,
    ) -> None:
        render_batch_size = renamed_argument(render_batch_size, chunk_size, "render_batch_size",
                                             "chunk_size", 64, "ShapesBenchmark")  # fmt: skip
        size = check_count(size, "size")
        self.config = ShapesConfig() if config is None else config
        if not isinstance(self.config, ShapesConfig):
            raise TypeError(f"config must be a ShapesConfig, got {type(self.config).__name__}")
        self.size = int(size)
        self.image_size = self.config.check_image_size(image_size)
        self.seed = stream_seed(seed)
        self.render_batch_size = check_count(render_batch_size, "render_batch_size")

    @classmethod
    def from_split(
        cls,
        split: str,
        size: int = 10_000,
        image_size: int = 64,
        *,
        config: ShapesConfig | None = None,
        render_batch_size: int = 64,
        chunk_size: int | None = None,
    ) -> ShapesBenchmark:
        """The dataset of a named split (``"train"``, ``"val"`` or ``"test"``; ``chunk_size``:
        deprecated name of ``render_batch_size``)."""
        render_batch_size = renamed_argument(render_batch_size, chunk_size, "render_batch_size",
                                             "chunk_size", 64, "ShapesBenchmark.from_split")  # fmt: skip
        check_choice(split, "split", tuple(SPLIT_SEEDS))
        return cls(size, image_size, SPLIT_SEEDS[split], config=config,
                   render_batch_size=render_batch_size)  # fmt: skip

    @property
    def chunk_size(self) -> int:
        """Deprecated name of :attr:`render_batch_size`."""
        warnings.warn("ShapesBenchmark.chunk_size is deprecated (removed in the next release); "
                      "use .render_batch_size", DeprecationWarning, stacklevel=2)  # fmt: skip
        return self.render_batch_size

    class_names: tuple[str, ...] = CLASS_NAMES
    num_classes: int = NUM_CLASSES

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, image_size={self.image_size}, seed={self.seed}, "
            f"config={self.config})"
        )

    def _check_indices(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        try:
            idx = as_index_array(indices)
        except ValueError as err:
            raise IndexError(str(err)) from None
        if idx.size and int(idx.max()) >= self.size:
            raise IndexError(f"index {int(idx.max())} out of range for a dataset of size {self.size}")
        return idx

    def render(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> RenderedBatch:
        """Render ``indices`` with all ground truth (see :func:`render_batch`)."""
        idx = self._check_indices(indices)
        return render_batch(self.seed, idx, self.image_size, self.config, self.render_batch_size)

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """Render ``indices`` at once.

        Returns
        -------
        dict
            ``"image"`` ``(B, 3, H, W)`` float32, ``"label"`` ``(B,)`` int64, ``"mask"``
            ``(B, 1, H, W)`` bool.
        """
        r = self.render(indices)
        return {"image": r.images, "label": r.labels, "mask": r.masks}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"index must be an int, got {type(index).__name__}") from None
        if i < 0 or i >= self.size:
            raise IndexError(f"index {i} out of range for a dataset of size {self.size} (negative indices are not supported)")
        b = self.batch([i])
        return {"image": b["image"][0], "label": int(b["label"][0]), "mask": b["mask"][0]}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor | int]]:
        """Batched fetch used by :class:`torch.utils.data.DataLoader` (one render per batch)."""
        b = self.batch(list(indices))
        return [
            {"image": img, "label": int(lab), "mask": m}
            for img, lab, m in zip(b["image"], b["label"].tolist(), b["mask"])
        ]

    def iter_batches(self, batch_size: int = 256) -> Iterator[dict[str, torch.Tensor]]:
        """Yield the dataset in order, ``batch_size`` images at a time (last one may be short;
        each rendered ``render_batch_size`` images at a time)."""
        batch_size = check_count(batch_size, "batch_size")
        for start in range(0, self.size, int(batch_size)):
            yield self.batch(np.arange(start, min(start + int(batch_size), self.size)))
