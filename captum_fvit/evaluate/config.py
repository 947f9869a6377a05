"""What an evaluation runs: :class:`EvaluationConfig` and its validation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ..explain import METHODS
from ..validation import check_count, check_radius
from .attacks import get_attack

__all__ = ["EvaluationConfig", "VARIANTS"]

#: Ways each method is run: plainly, and smoothed with DDS.
VARIANTS = ("vanilla", "dds")


@dataclass
class EvaluationConfig:
    """What to evaluate. Every size (ε, σ) is in [0, 1] pixel units.

    Attributes
    ----------
    methods : sequence of str
        Explanation methods (``"raw"``, ``"rollout"``, ``"grad_rollout"``, ``"attn_gradcam"``).
    variants : sequence of str
        ``"vanilla"`` and/or ``"dds"``.
    eps : sequence of float
        Attack radii (pixel units; 0 = clean, always added). The paper sweeps 0..16/255, ℓ∞.
    attack : str
        A name of :data:`~captum_fvit.evaluate.attacks.ATTACKS` (``"pgd"`` on the plain
        ViT's prediction — the paper's protocol —, ``"eot_pgd"`` through noise and denoiser,
        ``"topk"`` on each explanation) or ``"none"``.
    norm : str
        ``"linf"`` or ``"l2"`` (checked against the attack's supported norms).
    attack_steps : int
        Attack steps.
    sigma : float
        DDS noise std (pixel units).
    n_samples : int
        DDS samples per image.
    k : int
        Top-k size for V_k, the top-k attack and the certificate.
    certify : bool
        Also certify faithful regions (costly: ``certify_n`` samples per image and method).
    certify_methods : sequence of str, optional
        Methods to certify (default: all of ``methods``).
    certify_n, certify_n0, beta, alpha : int, int, float, float
        FaithfulRegion settings (``certify_n0`` selection samples).
    certify_radius : float, optional
        Instead of the maximal radii from ``certify_n`` samples, decide with the anytime-valid
        sequential test whether each image is (r, β, k)-faithful at this ℓ2 radius ([0, 1]
        pixel units), stopping as soon as decided (budget ``certify_n`` samples).
    batch_size : int
        Images per batch (the unit of streaming, resuming and sharding).
    seed : int
        Seed of attacks and DDS noise (batch ``b`` attacks with seed ``seed + b``).
    figure_images : int
        Images shown in the heat-map figures.
    """

    methods: Sequence[str] = ("raw", "rollout", "grad_rollout")
    variants: Sequence[str] = VARIANTS
    eps: Sequence[float] = (0.0, 2 / 255, 4 / 255, 8 / 255)
    attack: str = "pgd"
    norm: str = "linf"
    attack_steps: int = 10
    sigma: float = 0.25
    n_samples: int = 16
    k: int = 10
    certify: bool = False
    certify_methods: Sequence[str] | None = None
    certify_n: int = 200
    certify_n0: int = 32
    certify_radius: float | None = None
    beta: float = 0.6
    alpha: float = 0.01
    batch_size: int = 16
    seed: int = 0
    figure_images: int = 4

    def validate(self) -> None:
        """Raise a ``ValueError``/``TypeError`` naming the fix for anything that cannot run."""
        if not self.methods:
            raise ValueError("give at least one method")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ValueError(
                f"variants must be a non-empty subset of {VARIANTS}, got {list(self.variants)}"
            )
        if self.attack != "none":
            get_attack(self.attack, self.norm)
        elif self.norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {self.norm!r}")
        if not self.eps:
            raise ValueError("give at least one eps (0 = clean)")
        if any(isinstance(e, bool) or not math.isfinite(float(e)) or e < 0 for e in self.eps):
            raise ValueError(f"eps must be finite and ≥ 0 (pixel units), got {list(self.eps)}")
        extra = [m for m in (self.certify_methods or ()) if m not in self.methods]
        if extra:
            raise ValueError(f"certify_methods {extra} must be among methods {list(self.methods)}")
        for name in ("n_samples", "k", "batch_size", "attack_steps", "certify_n", "certify_n0"):
            check_count(getattr(self, name), name)
        check_count(self.figure_images, "figure_images", minimum=0)
        check_count(self.seed, "seed", minimum=0)
        if not (isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0 (pixel units), got {self.sigma!r}")
        if not 0 < self.beta <= 1:
            raise ValueError(f"beta must lie in (0, 1], got {self.beta}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")
        if self.certify_radius is not None:
            if not self.certify:
                raise ValueError("certify_radius needs certify=True (--certify)")
            check_radius(self.certify_radius, "certify_radius")

    @property
    def eps_list(self) -> list[float]:
        """The sorted radii of the sweep, with 0 (clean) always included."""
        return sorted({float(e) for e in self.eps} | {0.0})

    @property
    def certified_methods(self) -> list[str]:
        """Methods certified when :attr:`certify` is set."""
        return list(self.certify_methods or self.methods) if self.certify else []

    def to_dict(self) -> dict:
        """Plain-Python copy (lists, floats) for JSON, with the full ε sweep."""
        data = asdict(self)
        for name, value in data.items():
            if isinstance(value, tuple):
                data[name] = list(value)
        data["methods"] = list(self.methods)
        data["variants"] = list(self.variants)
        data["certify_methods"] = self.certified_methods or None
        data["eps"] = self.eps_list
        return data
