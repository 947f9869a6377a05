"""The class-defining shapes: signed-distance functions, closed-form areas, rasterisation.

Every shape is defined at *unit scale* in a local frame ``(u, v)`` centred on the shape
(``u`` to the right, ``v`` down, as image ``x``/``y``); the unit is the shape's *scale*
``s`` in pixels, so a shape of scale ``s`` has signed distance ``s * sdf(u, v)`` pixels.
Negative inside, positive outside. The distances are exact Euclidean distances (the cross's
is exact outside and a bound inside, which is all rasterisation needs).

Shapes and their unit-scale geometry (``s`` = scale in pixels):

========  ===================================================  =====================
class     geometry at scale ``s``                              area
========  ===================================================  =====================
disk      radius ``s``                                         ``π s²``
square    half-side ``s`` (side ``2s``)                        ``4 s²``
triangle  equilateral, circumradius ``s``                      ``(3√3/4) s²``
cross     plus sign: arms of half-length ``s``, half-width     ``(8k − 4k²) s²``
          ``k s`` with ``k = 0.3``
ring      annulus, outer radius ``s``, inner radius ``0.55 s``  ``π (1 − 0.55²) s²``
star      five points, outer radius ``s``, inner radius        ``5 · 0.45 · sin 36° s²``
          ``0.45 s``
========  ===================================================  =====================

No two classes coincide under rotation, and all are told apart at 64×64 for the benchmark's
object sizes (a scale of at least ~9 px).

Only exactly-rounded IEEE operations (``+ − × ÷ √``, ``abs``, ``min``/``max``, comparisons)
touch pixel tensors, so the rasterisation of one image does not depend on what else is in
the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "CROSS_HALF_WIDTH",
    "RING_INNER_RATIO",
    "STAR_INNER_RATIO",
    "UNIT_AREA",
    "UNIT_CIRCUMRADIUS",
    "class_index",
    "shape_area",
    "shape_sdf",
    "shape_sdf_pixels",
    "rasterize_shape",
]

#: Class names, in label order.
CLASS_NAMES: tuple[str, ...] = ("disk", "square", "triangle", "cross", "ring", "star")
#: Number of classes.
NUM_CLASSES: int = len(CLASS_NAMES)

#: Half-width of a cross arm, as a fraction of the arm half-length.
CROSS_HALF_WIDTH = 0.3
#: Inner radius of the ring, as a fraction of its outer radius.
RING_INNER_RATIO = 0.55
#: Inner (concave) radius of the star, as a fraction of its outer radius.
STAR_INNER_RATIO = 0.45

#: Area of each class at unit scale (multiply by ``scale**2`` for pixels²).
UNIT_AREA: tuple[float, ...] = (
    math.pi,
    4.0,
    3.0 * math.sqrt(3.0) / 4.0,
    8.0 * CROSS_HALF_WIDTH - 4.0 * CROSS_HALF_WIDTH**2,
    math.pi * (1.0 - RING_INNER_RATIO**2),
    5.0 * STAR_INNER_RATIO * math.sin(math.pi / 5.0),
)
#: Distance from the centre to the farthest point of each class at unit scale.
UNIT_CIRCUMRADIUS: tuple[float, ...] = (
    1.0,
    math.sqrt(2.0),
    1.0,
    math.sqrt(1.0 + CROSS_HALF_WIDTH**2),
    1.0,
    1.0,
)


def class_index(name_or_index: str | int) -> int:
    """Label of a class given by name (``"disk"``) or index.

    Raises
    ------
    ValueError
        If the name or index is not a class.
    """
    if isinstance(name_or_index, str):
        if name_or_index not in CLASS_NAMES:
            raise ValueError(f"unknown class {name_or_index!r}; classes are {CLASS_NAMES}")
        return CLASS_NAMES.index(name_or_index)
    if isinstance(name_or_index, bool) or not 0 <= int(name_or_index) < NUM_CLASSES:
        raise ValueError(f"class index must be in [0, {NUM_CLASSES}), got {name_or_index!r}")
    return int(name_or_index)


def shape_area(name_or_index: str | int, scale: float) -> float:
    """Closed-form area of a shape, in pixels², at ``scale`` pixels."""
    return UNIT_AREA[class_index(name_or_index)] * float(scale) ** 2


# --------------------------------------------------------------------------------------
# Signed-distance functions at unit scale.


def _length(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x * x + y * y)


def _sdf_disk(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _length(u, v) - 1.0


def _sdf_box(u: torch.Tensor, v: torch.Tensor, hx: float, hy: float) -> torch.Tensor:
    qx = u.abs() - hx
    qy = v.abs() - hy
    outside = _length(qx.clamp(min=0.0), qy.clamp(min=0.0))
    inside = torch.maximum(qx, qy).clamp(max=0.0)
    return outside + inside


def _sdf_square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _sdf_box(u, v, 1.0, 1.0)


def _sdf_cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    k = CROSS_HALF_WIDTH
    return torch.minimum(_sdf_box(u, v, 1.0, k), _sdf_box(u, v, k, 1.0))


def _sdf_ring(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    mid = 0.5 * (1.0 + RING_INNER_RATIO)
    half = 0.5 * (1.0 - RING_INNER_RATIO)
    return (_length(u, v) - mid).abs() - half


_SQRT3 = math.sqrt(3.0)


def _sdf_triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Equilateral triangle with circumradius 1, apex at v = -1 (pointing up in the image).
    # Exact SDF (after I. Quilez), written in a y-up frame: y = -v.
    r = _SQRT3 / 2.0  # half side
    px = u.abs() - r
    py = (-v) + r / _SQRT3
    fold = (px + _SQRT3 * py) > 0.0
    qx = torch.where(fold, (px - _SQRT3 * py) * 0.5, px)
    qy = torch.where(fold, (-_SQRT3 * px - py) * 0.5, py)
    qx = qx - qx.clamp(min=-2.0 * r, max=0.0)
    d = _length(qx, qy)
    return torch.where(qy > 0.0, -d, d)


_STAR_K1 = (math.cos(math.pi / 5.0), -math.sin(math.pi / 5.0))  # (0.809, -0.588)
_STAR_K2 = (-_STAR_K1[0], _STAR_K1[1])


def _sdf_star(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Five-pointed star, outer radius 1, inner radius STAR_INNER_RATIO, exact SDF
    # (after I. Quilez): fold the plane into one of the ten half-spikes by two reflections.
    k1x, k1y = _STAR_K1
    k2x, k2y = _STAR_K2
    px = u.abs()
    py = v
    t = (k1x * px + k1y * py).clamp(min=0.0) * 2.0
    px = px - t * k1x
    py = py - t * k1y
    t = (k2x * px + k2y * py).clamp(min=0.0) * 2.0
    px = px - t * k2x
    py = py - t * k2y
    px = px.abs()
    py = py - 1.0
    bax = STAR_INNER_RATIO * (-k1y)
    bay = STAR_INNER_RATIO * k1x - 1.0
    inv_bb = 1.0 / (bax * bax + bay * bay)
    h = ((px * bax + py * bay) * inv_bb).clamp(min=0.0, max=1.0)
    d = _length(px - h * bax, py - h * bay)
    return torch.where(py * bax - px * bay < 0.0, -d, d)


_SDFS: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = (
    _sdf_disk,
    _sdf_square,
    _sdf_triangle,
    _sdf_cross,
    _sdf_ring,
    _sdf_star,
)


def shape_sdf(name_or_index: str | int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Signed distance to a shape at unit scale, in unit-scale units.

    Parameters
    ----------
    name_or_index : str or int
        Class name or label.
    u, v : torch.Tensor
        Local coordinates (broadcastable), in units of the shape's scale.

    Returns
    -------
    torch.Tensor
        Signed distance (negative inside), broadcast shape of ``u`` and ``v``.
    """
    return _SDFS[class_index(name_or_index)](u, v)


def shape_sdf_pixels(
    labels: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    center_x: torch.Tensor,
    center_y: torch.Tensor,
    scale: torch.Tensor,
    cos_angle: torch.Tensor,
    sin_angle: torch.Tensor,
) -> torch.Tensor:
    """Signed distance, in pixels, from every pixel centre to each image's shape.

    Parameters
    ----------
    labels : torch.Tensor
        ``(B,)`` int64 class labels.
    x : torch.Tensor
        ``(W,)`` pixel-centre x coordinates in pixels (``arange(W) + 0.5``).
    y : torch.Tensor
        ``(H,)`` pixel-centre y coordinates in pixels.
    center_x, center_y : torch.Tensor
        ``(B,)`` shape centres in pixels.
    scale : torch.Tensor
        ``(B,)`` shape scales in pixels (see the module table).
    cos_angle, sin_angle : torch.Tensor
        ``(B,)`` cosine and sine of the rotation angle (clockwise on screen, as ``y`` is down).

    Returns
    -------
    torch.Tensor
        ``(B, H, W)`` float32 signed distance in pixels (negative inside).
    """
    b = labels.shape[0]
    out = torch.empty(b, y.shape[0], x.shape[0], dtype=torch.float32)
    for c in range(NUM_CLASSES):
        sel = torch.nonzero(labels == c).flatten()
        if sel.numel() == 0:
            continue
        s = scale[sel]
        ca = (cos_angle[sel] / s)[:, None, None]
        sa = (sin_angle[sel] / s)[:, None, None]
        dx = x[None, None, :] - center_x[sel][:, None, None]  # (b, 1, W)
        dy = y[None, :, None] - center_y[sel][:, None, None]  # (b, H, 1)
        # Inverse rotation into the shape frame, divided by the scale.
        u = dx * ca + dy * sa
        v = dy * ca - dx * sa
        out[sel] = _SDFS[c](u, v) * s[:, None, None]
    return out


def rasterize_shape(
    name_or_index: str | int,
    scale: float,
    image_size: int = 64,
    center: tuple[float, float] | None = None,
    angle: float = 0.0,
    supersample: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterise one shape on an empty canvas (for checks and figures).

    Parameters
    ----------
    name_or_index : str or int
        Class name or label.
    scale : float
        Shape scale in pixels (see the module table).
    image_size : int
        Canvas side in pixels.
    center : (float, float), optional
        Centre ``(x, y)`` in pixels; the canvas centre by default.
    angle : float
        Rotation in radians.
    supersample : int
        Sub-pixel samples per axis for the coverage (1: box-filtered SDF, as in the benchmark).

    Returns
    -------
    coverage : torch.Tensor
        ``(H, W)`` float32 fraction of each pixel covered, in ``[0, 1]``.
    mask : torch.Tensor
        ``(H, W)`` bool, pixel centres inside the shape.
    """
    label = class_index(name_or_index)
    if center is None:
        center = (image_size / 2.0, image_size / 2.0)
    pix = torch.arange(image_size, dtype=torch.float32) + 0.5
    args = (
        torch.tensor([float(center[0])]),
        torch.tensor([float(center[1])]),
        torch.tensor([float(scale)]),
        torch.tensor([math.cos(angle)]),
        torch.tensor([math.sin(angle)]),
    )
    labels = torch.tensor([label])
    sdf = shape_sdf_pixels(labels, pix, pix, *args)[0]
    mask = sdf <= 0.0
    if supersample <= 1:
        return (0.5 - sdf).clamp(0.0, 1.0), mask
    n = int(supersample)
    sub = (torch.arange(n * image_size, dtype=torch.float32) + 0.5) / n
    fine = shape_sdf_pixels(labels, sub, sub, *args)[0] <= 0.0
    coverage = fine.float().reshape(image_size, n, image_size, n).mean(dim=(1, 3))
    return coverage, mask
