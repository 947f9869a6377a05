"""Argument checks shared by every public entry point, with errors that name the fix.

Every public function and constructor validates its arguments once, here, before any work:
counts must be integers (``n_samples=2.5`` or ``True`` is an error, never a silent 2 or 1),
seeds must be integers (a ``torch.Generator`` cannot be split per noise sample), σ must be a
positive number in [0, 1] pixel units, probabilities must lie in their intervals, and images
must be finite floating-point ``N×C×H×W`` batches. Warnings that a result may not mean what
the user thinks (un-normalised 0–255 pixels, a model in training mode, a model whose input
normalisation is unknown) are issued once per model.
"""

from __future__ import annotations

import math
import numbers
import threading
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "check_image_batch",
    "check_positive",
    "check_count",
    "check_seed",
    "check_k",
    "check_eps",
    "check_steps",
    "check_alpha",
    "check_norm",
    "check_same_shape",
    "check_probability",
    "check_choice",
    "check_radius",
    "check_sigma",
    "check_pixel_range",
    "renamed_argument",
    "warn_once",
    "warn_if_training",
]

_WARNED: dict[str, weakref.WeakSet] = {}
_WARNED_LOCK = threading.Lock()


def check_image_batch(inputs: object, name: str = "inputs") -> torch.Tensor:
    """Check that ``inputs`` is a finite floating ``N×C×H×W`` tensor and return it.

    Raises
    ------
    TypeError
        If ``inputs`` is not a floating-point tensor (uint8 images get the conversion to use).
    ValueError
        If it is not 4-D, is empty, or holds NaN/inf values.
    """
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape N×C×H×W, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        if inputs.dtype == torch.uint8:
            raise TypeError(
                f"{name} are uint8 images (0–255); the model takes normalised floats: convert "
                "with `pixels = x.float() / 255` and then `Normalization(...).from_pixels(pixels)` "
                "(or the model's own preprocessing)"
            )
        raise TypeError(
            f"{name} must be a floating-point tensor (got {inputs.dtype}); convert images with "
            "`.float()` and normalise them the way the model expects"
        )
    if inputs.dim() != 4:
        hint = " (add a batch dimension with `x.unsqueeze(0)`)" if inputs.dim() == 3 else ""
        raise ValueError(
            f"{name} must be a 4-D batch N×C×H×W, got shape {tuple(inputs.shape)}{hint}"
        )
    if inputs.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (N = 0)")
    finite = torch.isfinite(inputs.reshape(inputs.shape[0], -1)).all(dim=1)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0, 0])
        raise ValueError(
            f"{name} contains NaN or infinite values (first in input {first}); clean or "
            "re-normalise the images first"
        )
    return inputs


def check_positive(value: float, name: str, unit: str = "") -> float:
    """Check ``value`` is a finite real number > 0 and return it as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number{unit}, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0{unit}, got {value}")
    return value


def check_sigma(sigma: object) -> float:
    """Validate a noise level and return it as a Python float.

    Parameters
    ----------
    sigma : float or 0-d torch.Tensor
        Noise standard deviation in [0, 1] pixel units.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``sigma`` is not a finite number > 0.
    """
    if isinstance(sigma, torch.Tensor):
        if sigma.numel() != 1:
            raise ValueError(
                "sigma must be a single number (the noise std in [0, 1] pixel "
                f"units), got a tensor of shape {tuple(sigma.shape)}; pass one "
                "float per call."
            )
        sigma = sigma.item()
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise ValueError(
            "sigma must be a float: the std of the Gaussian noise in [0, 1] "
            f"pixel units (e.g. 0.25); got {sigma!r} of type {type(sigma).__name__}."
        )
    value = float(sigma)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(
            "sigma must be a finite float > 0 (the std of the Gaussian noise "
            f"in [0, 1] pixel units, e.g. 0.25); got {value!r}. Use a positive "
            "noise level; sigma = 0 means no smoothing, which needs no denoiser."
        )
    return value


def check_radius(value: float, name: str = "radius") -> float:
    """A finite ℓ2 radius ≥ 0 in [0, 1] pixel units."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number (ℓ2, [0, 1] pixel units), got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number ≥ 0 ([0, 1] pixel units), got {value}")
    return value


def check_count(value: object, name: str, minimum: int = 1) -> int:
    """An integer count ≥ ``minimum``; floats, bools and strings are refused, not truncated.

    Raises
    ------
    TypeError
        For a non-integer (``2.5``, ``2.0``, ``True``, ``"8"``).
    ValueError
        For an integer below ``minimum``.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an integer ≥ {minimum}, got {value!r} ({type(value).__name__}); "
            f"pass e.g. {name}={max(minimum, 1)}"
        )
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value}")
    return value


def check_seed(seed: object) -> int | None:
    """``None`` or an integer seed in ``[0, 2**63)``.

    A ``torch.Generator`` is refused: noise sample ``s`` is drawn from a generator seeded by
    ``(seed, s)`` so that results do not depend on chunking or on the other inputs, which a
    single shared generator cannot give.
    """
    if seed is None:
        return None
    if isinstance(seed, torch.Generator):
        raise TypeError(
            "seed must be an int, not a torch.Generator: captum-fvit seeds every noise sample "
            "from (seed, sample index) so that results do not depend on batch_size; pass e.g. "
            "seed=0 (or seed=generator.initial_seed())"
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int (e.g. seed=0), got {seed!r} ({type(seed).__name__})")
    seed = int(seed)
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must lie in [0, 2**63), got {seed}")
    return seed


def check_k(
    k: object,
    n: int | None = None,
    *,
    inclusive: bool = False,
    name: str = "k",
    what: str = "patch tokens",
) -> int:
    """Top-k size: an integer ≥ 1 and, when ``n`` is known, at most ``n``.

    Parameters
    ----------
    k : int
        The top-k size.
    n : int, optional
        How many entries there are (patch tokens, map entries).
    inclusive : bool, default False
        ``False``: ``k < n`` (certificates need a (k+1)-th token to compare with);
        ``True``: ``k ≤ n`` (metrics such as the top-k overlap accept every entry).
    name, what : str
        The argument's name and what ``n`` counts, for the message.

    Raises
    ------
    TypeError
        For a non-integer ``k`` (``2.5``, ``True``, ``"8"``).
    ValueError
        For ``k < 1`` or ``k`` too large for ``n``.
    """
    if inclusive and n is not None:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            check_count(k, name)  # raises the TypeError every count gets
        k = int(k)
        if not 1 <= k <= n:
            raise ValueError(
                f"{name} must lie in [1, {n}] (the number of {what}), got {k}; choose a "
                f"{name} in that range"
            )
        return k
    k = check_count(k, name)
    if n is None:
        return k
    if not inclusive and k >= n:
        raise ValueError(
            f"{name}={k} must be smaller than the number of {what} ({n}); choose a "
            f"smaller {name} (at most {n - 1})"
        )
    return k


def check_eps(eps: object, name: str = "eps") -> float:
    """A perturbation budget: a finite number ≥ 0 in [0, 1] pixel units (e.g. 8/255).

    Raises
    ------
    TypeError
        For a non-number (a 0-d tensor is accepted).
    ValueError
        For a negative or non-finite budget.
    """
    if isinstance(eps, torch.Tensor) and eps.numel() == 1:
        eps = eps.item()
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1] pixel units (e.g. 8/255), got {eps!r}")
    value = float(eps)
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{name} must be a finite number ≥ 0 in [0, 1] pixel units (e.g. 8/255), got {value}"
        )
    return value


def check_steps(steps: object, name: str = "steps") -> int:
    """An iteration count: an integer ≥ 1 (``TypeError`` for non-integers)."""
    return check_count(steps, name)


def check_alpha(alpha: object, name: str = "alpha", *, allow_none: bool = False) -> float | None:
    """A failure probability in (0, 1) (``None`` too when ``allow_none``: a plug-in estimate).

    Raises
    ------
    TypeError
        For a non-number (or ``None`` where a certificate needs a level).
    ValueError
        Outside (0, 1).
    """
    if alpha is None:
        if allow_none:
            return None
        raise TypeError(
            f"{name} must be a failure probability in (0, 1), e.g. 0.001; got None (this "
            "computation has no plug-in mode)"
        )
    return check_probability(alpha, f"{name} (failure probability, e.g. 0.001)")


#: Perturbation norms of the gradient attacks.
NORMS = ("linf", "l2")


def check_norm(norm: object) -> str:
    """``"linf"`` or ``"l2"``."""
    return check_choice(norm, "norm", NORMS)


def check_same_shape(
    a: torch.Tensor, b: torch.Tensor, names: tuple[str, str] = ("a", "b")
) -> None:
    """Raise ``ValueError`` if two map batches differ in shape, naming both shapes."""
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}; compare maps of the same images at the same resolution (token "
            "maps with token maps, pixel maps with pixel maps)"
        )


def check_probability(
    value: object, name: str, *, low_open: bool = True, high_open: bool = True
) -> float:
    """A number in ``(0, 1)`` (``low_open``/``high_open`` control the ends)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (math.isfinite(value) and low_ok and high_ok):
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ValueError(f"{name} must lie in {interval}, got {value}")
    return value


def check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    """One of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def warn_once(key: str, owner: object, message: str, category=UserWarning) -> None:
    """Warn ``message`` once per ``owner`` object (e.g. per model) and ``key``."""
    with _WARNED_LOCK:
        seen = _WARNED.setdefault(key, weakref.WeakSet())
        try:
            if owner in seen:
                return
            seen.add(owner)
        except TypeError:  # not weak-referenceable: warn every time
            pass
    warnings.warn(message, category, stacklevel=3)


def warn_if_training(model: object) -> None:
    """Warn once if ``model`` is in training mode (dropout makes every map random)."""
    if isinstance(model, torch.nn.Module) and model.training:
        warn_once(
            "training",
            model,
            f"{type(model).__name__} is in training mode: dropout changes the attention and the "
            "logits from call to call. Call model.eval() before explaining it.",
        )


def check_pixel_range(pixels: torch.Tensor, model: object) -> None:
    """Warn once per model when un-normalised pixels lie far outside [0, 1].

    σ, ε and radii are in [0, 1] pixel units; images in [0, 255] (or normalised twice) make
    them meaningless. "Far" is below −5 or above 6: images in [0, 1] never get there.
    """
    low, high = float(pixels.amin()), float(pixels.amax())
    if low < -5.0 or high > 6.0:
        warn_once(
            "pixel_range",
            model,
            f"after undoing the model's normalisation the inputs range over [{low:.3g}, "
            f"{high:.3g}], far outside [0, 1] pixel units, so σ, ε and radii lose their meaning. "
            "Divide 0–255 images by 255 before normalising, or pass the model's input_mean/"
            "input_std.",
        )


def renamed_argument(value: Any, old_value: Any, name: str, old_name: str, default: Any,
                     where: str, stacklevel: int = 3) -> Any:  # fmt: skip
    """Resolve a renamed keyword: ``value``, or the deprecated ``old_value`` with a warning.

    Parameters
    ----------
    value : Any
        Value of the new keyword (``default`` when not given).
    old_value : Any
        Value of the deprecated keyword; ``None`` when not given.
    name, old_name : str
        The new and the old keyword.
    default : Any
        Default of the new keyword (passing both names is an error).
    where : str
        The function, for the messages.
    stacklevel : int, default 3
        Warning stack level (3: the caller of the function calling this).

    Raises
    ------
    TypeError
        When both names are given.
    """
    if old_value is None:
        return value
    if value is not default and value != default:
        raise TypeError(
            f"{where} got {name}= and its deprecated old name {old_name}=; pass {name}= only"
        )
    warnings.warn(
        f"{where}: {old_name}= is deprecated (removed in the next release); use {name}=",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    return old_value
