"""Counter-based random numbers: every draw is a pure function of ``(seed, domain, index, k)``.

The benchmark never keeps random state. Each scalar an image needs is obtained by hashing
its coordinates — the dataset seed, a *domain* (which part of the generator asks: labels,
object, background, ...), the image index and a slot number ``k`` — with the SplitMix64
finaliser, in wrapping unsigned 64-bit integer arithmetic (numpy ``uint64``). Consequently

* image ``i`` of seed ``s`` is the same whether rendered alone, in a batch, or in any
  chunking of a batch, and in any order;
* different domains never share draws, so adding draws to one part of the generator does
  not change the others;
* the numbers are identical on every platform (integer arithmetic only; the conversion to
  floating point is exact).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "DOMAIN_LABEL",
    "DOMAIN_OBJECT",
    "DOMAIN_COLOUR",
    "DOMAIN_BACKGROUND",
    "DOMAIN_NOISE",
    "DOMAIN_DISTRACTORS",
    "check_seed",
    "as_index_array",
    "counter_uniform",
    "cos_sin",
]

#: Domains (independent streams) used by the benchmark.
DOMAIN_LABEL = 1
DOMAIN_OBJECT = 2
DOMAIN_COLOUR = 3
DOMAIN_BACKGROUND = 4
DOMAIN_NOISE = 5
DOMAIN_DISTRACTORS = 6

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _mix64_int(z: int) -> int:
    """SplitMix64 finaliser on a Python int (taken modulo 2**64)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a ``uint64`` array (multiplications wrap modulo 2**64)."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(_M1)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


def check_seed(seed: object) -> int:
    """Deprecated: use :func:`captum_fvit.validation.check_seed` (seeds in ``[0, 2**63)``).

    Kept for one release; benchmark seeds are checked by
    :func:`captum_fvit.data.benchmark.stream_seed` (``None`` refused).
    """
    import warnings

    from .benchmark import stream_seed

    warnings.warn(
        "captum_fvit.data.rng.check_seed is deprecated; use captum_fvit.validation.check_seed",
        DeprecationWarning,
        stacklevel=2,
    )
    return stream_seed(seed)


def as_index_array(indices: Sequence[int] | np.ndarray | torch.Tensor | int) -> np.ndarray:
    """Validate image indices and return them as a 1-D ``int64`` array.

    Parameters
    ----------
    indices : int, sequence of int, numpy array or torch tensor
        Non-negative image indices (any integer dtype; an ``int`` is one index).

    Returns
    -------
    numpy.ndarray
        Shape ``(B,)``, dtype ``int64``.

    Raises
    ------
    TypeError
        If the indices are not integers.
    ValueError
        If an index is negative or the indices are not one-dimensional.
    """
    if isinstance(indices, torch.Tensor):
        if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
            raise TypeError(f"indices must be integers, got a {indices.dtype} tensor")
        arr = indices.detach().cpu().numpy()
    elif isinstance(indices, (int, np.integer)) and not isinstance(indices, bool):
        arr = np.asarray([operator.index(indices)])
    else:
        arr = np.asarray(indices)
        if arr.size == 0:
            arr = arr.astype(np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"indices must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"indices must be one-dimensional, got shape {tuple(arr.shape)}")
    if arr.size and int(arr.min()) < 0:
        raise ValueError(f"indices must be non-negative, got {int(arr.min())}")
    if arr.size and np.issubdtype(arr.dtype, np.unsignedinteger) and int(arr.max()) > 2**63 - 1:
        raise ValueError("indices must be < 2**63")
    return arr.astype(np.int64, copy=False)


def counter_uniform(seed: int, indices: np.ndarray, domain: int, n: int) -> np.ndarray:
    """Uniform numbers in ``[0, 1)``: row ``b`` depends only on ``(seed, domain, indices[b])``.

    Parameters
    ----------
    seed : int
        Dataset seed, in ``[0, 2**63)`` (:func:`~captum_fvit.validation.check_seed`).
    indices : numpy.ndarray
        Shape ``(B,)``, non-negative integers (image indices or any other counter).
    domain : int
        Stream identifier; different domains give independent numbers.
    n : int
        Numbers per row.

    Returns
    -------
    numpy.ndarray
        Shape ``(B, n)``, ``float64``, multiples of ``2**-53`` in ``[0, 1)``.
    """
    base = _mix64_int(_mix64_int(seed * _GOLDEN + 0x632BE59BD9B4E019) ^ (domain * 0xD1B54A32D192ED03))
    idx = np.asarray(indices).astype(np.uint64)
    key = _mix64(idx * np.uint64(_GOLDEN) + np.uint64(base))
    key = _mix64(key ^ np.uint64(base))
    slots = (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(_GOLDEN))[None, :]
    z = _mix64(key[:, None] + slots)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def cos_sin(angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine and sine of ``angles`` (radians), value by value with Python's :mod:`math`.

    Vectorised transcendental kernels may compute an array's tail differently from its body,
    which would make an image's parameters depend on its position in a batch; ``math`` on
    each value does not.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``float64`` arrays of the shape of ``angles``.
    """
    angles = np.asarray(angles, dtype=np.float64)
    flat = angles.ravel().tolist()
    c = np.array([math.cos(a) for a in flat], dtype=np.float64).reshape(angles.shape)
    s = np.array([math.sin(a) for a in flat], dtype=np.float64).reshape(angles.shape)
    return c, s
