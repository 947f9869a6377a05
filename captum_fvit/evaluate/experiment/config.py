"""What an evaluation runs: :class:`EvaluationConfig` and its validation.

A configuration names entries of two registries: explanation *variants*
(:data:`~captum_fvit.evaluate.experiment.variants.VARIANTS`: vanilla, smoothgrad, identity, dds) and
*attacks* (:data:`~captum_fvit.evaluate.attacks.registry.ATTACKS`: transfer and adaptive). Presets
(:mod:`~captum_fvit.evaluate.experiment.presets`, e.g. the paper's evaluation) are configurations.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import InitVar, asdict, dataclass

from ...explain import METHODS
from ...validation import (
    check_count,
    check_eps,
    check_norm,
    check_probability,
    check_radius,
    check_sigma,
    renamed_argument,
)
from ..attacks.registry import get_attack
from .variants import VARIANTS

__all__ = ["EvaluationConfig", "VARIANTS", "attack_threat"]

#: The pseudo-attack name of the clean rows (ε = 0).
CLEAN = "clean"


def attack_threat(name: str) -> str | None:
    """``"transfer"`` or ``"adaptive"`` for a registered attack, ``None`` for clean/none."""
    if name in (CLEAN, "none"):
        return None
    return get_attack(name).threat


@dataclass
class EvaluationConfig:
    """What to evaluate. Every size (ε, σ) is in [0, 1] pixel units.

    Attributes
    ----------
    methods : sequence of str
        Explanation methods (``"raw"``, ``"rollout"``, ``"grad_rollout"``, ``"attn_gradcam"``).
    variants : sequence of str
        Names of :data:`~captum_fvit.evaluate.experiment.variants.VARIANTS` (``"vanilla"``,
        ``"smoothgrad"``, ``"identity"``, ``"dds"``).
    eps : sequence of float
        Attack radii (pixel units; 0 = clean, always added). The paper sweeps 0..16/255, ℓ∞.
    attack : str or sequence of str
        One or several names of :data:`~captum_fvit.evaluate.attacks.registry.ATTACKS` (``"pgd"`` on
        the plain ViT's prediction — the paper's protocol —, ``"eot_pgd"``, ``"topk"``,
        ``"smooth_pgd"``, ``"adaptive_topk"``) or ``"none"``. Prediction attacks run once per
        batch and ε; explanation attacks once per method (every variant explains the same
        attacked image).
    norm : str
        ``"linf"`` or ``"l2"`` (checked against each attack's supported norms).
    attack_steps : int
        Steps of the transfer attacks.
    adaptive_steps : int, optional
        Steps of the adaptive attacks (default ``attack_steps``).
    n_eot : int
        Noise samples per step of attacks through the smoothing.
    n_adaptive_images : int, optional
        Only the first images get the (costly) adaptive attacks; ``None`` = all.
    sigma : float
        Noise std of every smoothed variant (pixel units).
    n_samples : int
        Samples per image of every smoothed variant.
    k : int
        Top-k size for V_k, the top-k attacks and the certificate.
    floor : bool
        Also explain the clean images with a second, independent seed: smoothed rows get the
        Monte-Carlo floor (``floor_overlap``) and ``topk_overlap_indep``.
    certify : bool
        Also certify faithful regions (costly: ``certify_n_samples`` samples per image and
        method).
    certify_methods : sequence of str, optional
        Methods to certify (default: all of ``methods``).
    certify_n_samples, certify_n_select, beta, alpha : int, int, float, float
        FaithfulRegion settings (``n_samples``, ``n_select``, β, α); ``certify_n`` and
        ``certify_n0`` are the deprecated names of ``certify_n_samples`` and
        ``certify_n_select``.
    certify_radius : float, optional
        Instead of the maximal radii from ``certify_n_samples`` samples, decide with the anytime-valid
        sequential test whether each image is (r, β, k)-faithful at this ℓ2 radius ([0, 1]
        pixel units), stopping as soon as decided (budget ``certify_n_samples`` samples).
    batch_size : int
        Images per batch (the unit of streaming, resuming and sharding); smoothed variants
        run chunks of ``max(4·batch_size, 16)`` noisy images.
    seed : int
        Seed of attacks and smoothing noise (batch ``b`` attacks with seed ``seed + b``).
    figure_images : int
        Images shown in the heat-map figures.
    """

    methods: Sequence[str] = ("raw", "rollout", "grad_rollout")
    variants: Sequence[str] = ("vanilla", "dds")
    eps: Sequence[float] = (0.0, 2 / 255, 4 / 255, 8 / 255)
    attack: str | Sequence[str] = "pgd"
    norm: str = "linf"
    attack_steps: int = 10
    adaptive_steps: int | None = None
    n_eot: int = 8
    n_adaptive_images: int | None = None
    sigma: float = 0.25
    n_samples: int = 16
    k: int = 10
    floor: bool = False
    certify: bool = False
    certify_methods: Sequence[str] | None = None
    certify_n_samples: int = 200
    certify_n_select: int = 32
    certify_radius: float | None = None
    beta: float = 0.6
    alpha: float = 0.01
    batch_size: int = 16
    seed: int = 0
    figure_images: int = 4
    certify_n0: InitVar[int | None] = None
    certify_n: InitVar[int | None] = None

    def __post_init__(self, certify_n0: int | None, certify_n: int | None) -> None:
        self.certify_n_select = renamed_argument(
            self.certify_n_select, certify_n0, "certify_n_select", "certify_n0", 32,
            "EvaluationConfig", stacklevel=4,
        )  # fmt: skip
        self.certify_n_samples = renamed_argument(
            self.certify_n_samples, certify_n, "certify_n_samples", "certify_n", 200,
            "EvaluationConfig", stacklevel=4,
        )  # fmt: skip

    @property
    def attacks(self) -> tuple[str, ...]:
        """The attack names (``()`` for ``"none"``)."""
        names = (self.attack,) if isinstance(self.attack, str) else tuple(self.attack)
        return tuple(n for n in names if n != "none")

    def validate(self) -> None:
        """Raise a ``ValueError``/``TypeError`` naming the fix for anything that cannot run."""
        self._validate_names()
        if not self.eps:
            raise ValueError("give at least one eps (0 = clean)")
        if any(isinstance(e, bool) or not math.isfinite(float(e)) or e < 0 for e in self.eps):
            raise ValueError(f"eps must be finite and ≥ 0 (pixel units), got {list(self.eps)}")
        for e in self.eps:
            check_eps(e)
        for name in ("n_samples", "k", "batch_size", "attack_steps", "n_eot", "certify_n_samples",
                     "certify_n_select"):  # fmt: skip
            check_count(getattr(self, name), name)
        if self.adaptive_steps is not None:
            check_count(self.adaptive_steps, "adaptive_steps")
        if self.n_adaptive_images is not None:
            check_count(self.n_adaptive_images, "n_adaptive_images", minimum=0)
        check_count(self.figure_images, "figure_images", minimum=0)
        check_count(self.seed, "seed", minimum=0)
        check_sigma(self.sigma)
        check_probability(self.beta, "beta", high_open=False)
        check_probability(self.alpha, "alpha")
        if self.certify_radius is not None:
            if not self.certify:
                raise ValueError("certify_radius needs certify=True (--certify)")
            check_radius(self.certify_radius, "certify_radius")

    def _validate_names(self) -> None:
        if not self.methods:
            raise ValueError("give at least one method")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ValueError(
                f"variants must be a non-empty subset of {list(VARIANTS)}, got {list(self.variants)}"
            )
        check_norm(self.norm)
        for name in self.attacks:
            get_attack(name, self.norm)
        extra = [m for m in (self.certify_methods or ()) if m not in self.methods]
        if extra:
            raise ValueError(f"certify_methods {extra} must be among methods {list(self.methods)}")

    @property
    def eps_list(self) -> list[float]:
        """The sorted radii of the sweep, with 0 (clean) always included."""
        return sorted({float(e) for e in self.eps} | {0.0})

    @property
    def certified_methods(self) -> list[str]:
        """Methods certified when :attr:`certify` is set."""
        return list(self.certify_methods or self.methods) if self.certify else []

    def steps_of(self, attack: str) -> int:
        """Steps of ``attack``: ``adaptive_steps`` for adaptive attacks, else ``attack_steps``."""
        if attack_threat(attack) == "adaptive" and self.adaptive_steps is not None:
            return self.adaptive_steps
        return self.attack_steps

    def to_dict(self) -> dict:
        """Plain-Python copy (lists, floats) for JSON, with the full ε sweep."""
        data = asdict(self)
        for name, value in data.items():
            if isinstance(value, tuple):
                data[name] = list(value)
        data["methods"] = list(self.methods)
        data["variants"] = list(self.variants)
        data["attack"] = list(self.attacks) or ["none"]
        data["threats"] = {a: attack_threat(a) for a in self.attacks}
        data["certify_methods"] = self.certified_methods or None
        data["eps"] = self.eps_list
        return data
