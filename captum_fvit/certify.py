"""Certificates for smoothed explanations and predictions, as pure tensor functions.

Notation (all tensors are batched over leading dimensions, tokens on the last one)::

    h : R^d -> [0, 1]^T     a per-token explanation statistic of one noisy input
    g(x) = E[h(x + delta)], delta ~ N(0, sigma^2 I)    the smoothed explanation

``vote`` smoothing uses ``h_i = 1[i in top-k(a)]`` (so ``g_i`` is the probability that token
``i`` is in the top-k and ``sum(g) = k``); ``mean`` smoothing uses ``h = a / sum(a)``.

**Lemma** (Salman et al. 2019, Lemma 2). For any measurable ``h: R^d -> [0, 1]``,
``x -> Phi^{-1}(g(x))`` is ``1/sigma``-Lipschitz, so for ``||Delta||_2 <= R``::

    Phi(Phi^{-1}(g(x)) - R/sigma) <= g(x + Delta) <= Phi(Phi^{-1}(g(x)) + R/sigma).

Given lower/upper bounds ``lo <= g(x) <= up`` holding for all ``T`` tokens at once, token ``i``
stays in the top-k of ``g(x + Delta)`` for every ``||Delta||_2 < r_in_i`` with::

    r_in_i  = max(0, sigma/2 * (Phi^{-1}(lo_i) - Phi^{-1}(kth largest up_j, j != i)))
    r_out_j = max(0, sigma/2 * (Phi^{-1}(kth largest lo_i, i != j) - Phi^{-1}(up_j)))

(``r_out_j``: token ``j`` stays *out* of the top-k). The tokens with ``r_in > R`` form the
faithful region ``C(R)``; they are in the top-k of both ``g(x)`` and ``g(x + Delta)``, so the
top-k overlap is at least ``|C(R)|/k``. The ``beta``-overlap radius is the ``ceil(beta k)``-th
largest ``r_in``; the guarantee holds on the *open* ball ``||Delta||_2 < R_beta`` (on its
boundary a tie is possible).

All radii are L2 distances in the units of the noise, i.e. ``[0, 1]`` pixel units when the noise
is added to the ``[0, 1]`` image; ``l2_to_linf`` converts them to L-infinity radii. Results are
float64 tensors on the device of the input. Passing ``alpha=None`` gives plug-in *estimates*
(bounds = point estimates): fast, but **not** certificates, and flagged ``certified=False``.

References
----------
Cohen, Rosenfeld & Kolter (2019), "Certified adversarial robustness via randomized smoothing".
Salman et al. (2019), "Provably robust deep learning via adversarially trained smoothed
classifiers", Lemma 2.
Maurer & Pontil (2009), "Empirical Bernstein bounds and sample variance penalization", Thm. 4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from scipy.stats import beta as beta_dist
from torch import Tensor

from .validation import (
    check_alpha,
    check_count,
    check_k,
    check_probability,
    check_radius,
    check_sigma,
)

__all__ = [
    "Bounds",
    "as_counts",
    "as_probabilities",
    "as_sample_sizes",
    "check_bound_pair",
    "kth_largest_of_others",
    "probit_margin",
    "ExplanationCertificate",
    "PredictionCertificate",
    "certify_explanation",
    "certify_prediction",
    "clopper_pearson_bounds",
    "clopper_pearson_lower",
    "empirical_bernstein_bounds",
    "faithful_region",
    "l2_to_linf",
    "mean_bounds",
    "overlap_count",
    "overlap_radius",
    "prediction_radius",
    "radii_in",
    "radii_out",
    "require_gaussian",
    "sample_mean_variance",
    "select_class",
    "vote_bounds",
]

_GAUSSIAN_NAMES = frozenset({"gaussian", "normal", "gauss"})
_TOL = 1e-6  # slack for float32 round-off when checking that probabilities lie in [0, 1]


# --------------------------------------------------------------------------- validation
# Argument checks live in captum_fvit.validation; the helpers below check the *tensors* of
# the maths (counts, sample sizes, bounds) and are public for captum_fvit.certify_sequential.
def require_gaussian(noise: str) -> None:
    """Raise unless ``noise`` names Gaussian noise, the only noise the certificates cover.

    Parameters
    ----------
    noise : str
        Name of the smoothing noise (``"gaussian"``; ``"laplace"``, ``"uniform"``, ... raise).

    Raises
    ------
    ValueError
        For any non-Gaussian noise: the Lipschitz lemma behind every radius here holds for
        Gaussian smoothing only.
    """
    if not isinstance(noise, str) or noise.strip().lower() not in _GAUSSIAN_NAMES:
        raise ValueError(
            f"certification requires Gaussian noise, got noise={noise!r}: the Lipschitz lemma "
            "(Salman et al. 2019) behind the certified radii holds only for Gaussian smoothing. "
            "Use noise='gaussian' to certify; other noises can still smooth explanations, "
            "but without a certificate."
        )


_N_NAME = "n (number of noise samples)"


def as_sample_sizes(n: int | Tensor, like: Tensor, minimum: int = 1) -> Tensor:
    """Sample size(s) ``n`` as a float64 tensor on ``like``'s device, checked integral.

    Parameters
    ----------
    n : int or Tensor
        Number of samples: one int, or a tensor of integers broadcastable to ``like``.
    like : Tensor
        Gives the device.
    minimum : int, default 1
        Smallest allowed ``n`` (2 where a sample variance is needed).

    Returns
    -------
    Tensor
        float64 sample sizes.

    Raises
    ------
    TypeError
        For a non-integer ``n`` (``2.5``, ``True``).
    ValueError
        For ``n < minimum`` or a tensor holding non-integers.
    """
    hint = " (the empirical Bernstein bound needs a sample variance)" if minimum > 1 else ""
    if not isinstance(n, Tensor):
        n = check_count(n, _N_NAME + hint, minimum)
        return torch.tensor(float(n), dtype=torch.float64, device=like.device)
    n_t = n.detach().to(device=like.device, dtype=torch.float64)
    if not bool(torch.all(n_t == torch.round(n_t))) or bool(torch.any(n_t < minimum)):
        raise ValueError(f"{_N_NAME}{hint} must be integers ≥ {minimum}; got {n!r}")
    return n_t


def as_counts(counts: Tensor, n: Tensor) -> Tensor:
    """``counts`` as float64 on ``n``'s device, checked to be integers in ``[0, n]``.

    Parameters
    ----------
    counts : Tensor
        How many of the ``n`` samples voted (any shape broadcastable with ``n``).
    n : Tensor
        Sample sizes from :func:`as_sample_sizes`.

    Raises
    ------
    ValueError
        For negative, fractional or too large counts.
    """
    c = torch.as_tensor(counts).detach().to(dtype=torch.float64)
    if c.device != n.device:
        c = c.to(n.device)
    if not bool(torch.all((c == torch.round(c)) & (c >= 0) & (c <= n))):
        raise ValueError(
            "counts must be integers in [0, n] (how many of the n noisy samples voted)"
        )
    return c


def as_probabilities(x: Tensor, name: str) -> Tensor:
    """``x`` as float64 probabilities, clipped to ``[0, 1]`` after a float32 round-off slack.

    Raises
    ------
    ValueError
        For values outside ``[0, 1]`` (beyond ``1e-6``) or NaN; ``name`` is in the message.
    """
    p = torch.as_tensor(x).to(dtype=torch.float64)
    if not bool(torch.all((p >= -_TOL) & (p <= 1 + _TOL))):  # also rejects NaN
        raise ValueError(f"{name} must be probabilities in [0, 1] (no NaN)")
    return p.clamp(0.0, 1.0)


def check_bound_pair(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Lower and upper bounds ``(..., T)`` as float64 probabilities, checked ``lower <= upper``.

    Raises
    ------
    ValueError
        For different shapes, a missing token dimension, values outside ``[0, 1]`` or a
        lower bound above its upper bound.
    """
    lo, up = as_probabilities(lower, "lower bounds"), as_probabilities(upper, "upper bounds")
    if lo.shape != up.shape or lo.dim() == 0:
        raise ValueError(
            f"lower and upper must have the same shape (..., T); got {lo.shape} and {up.shape}"
        )
    if bool(torch.any(lo > up + _TOL)):
        raise ValueError("every lower bound must be <= its upper bound")
    return lo, up


# --------------------------------------------------------------------------- confidence bounds
class Bounds(NamedTuple):
    """Per-token bounds on the smoothed explanation ``g(x)``, shape ``(..., T)``.

    Attributes
    ----------
    lower, upper : Tensor
        float64 bounds in ``[0, 1]``.
    certified : bool
        ``True`` if ``lower <= g <= upper`` holds for all tokens with probability ``>= 1 - alpha``;
        ``False`` for plug-in estimates (``lower == upper`` = point estimate).
    alpha : float or None
        The simultaneous failure probability, ``None`` for plug-in estimates.
    """

    lower: Tensor
    upper: Tensor
    certified: bool
    alpha: float | None


def clopper_pearson_bounds(
    counts: Tensor, n: int | Tensor, alpha: float, *, simultaneous_over: int = 1
) -> tuple[Tensor, Tensor]:
    """Two-sided exact (Clopper-Pearson) binomial confidence bounds.

    Each interval has level ``alpha / simultaneous_over``, so by Bonferroni the
    ``simultaneous_over`` intervals hold together with probability ``>= 1 - alpha``. Equal to
    ``statsmodels`` ``proportion_confint(counts, n, alpha / simultaneous_over, method="beta")``.

    Parameters
    ----------
    counts : Tensor
        Successes out of ``n``, integers in ``[0, n]``, any shape.
    n : int or Tensor
        Number of trials (broadcastable to ``counts``), ``>= 1``.
    alpha : float
        Failure probability in ``(0, 1)``.
    simultaneous_over : int, optional
        Number of intervals that must hold simultaneously (Bonferroni), default 1.

    Returns
    -------
    lower, upper : Tensor
        float64 bounds on the success probability, shape of ``counts``, on its device.
    """
    alpha = check_alpha(alpha) / check_count(simultaneous_over, "simultaneous_over")
    like = torch.as_tensor(counts)
    n_t = as_sample_sizes(n, like)
    c = as_counts(like, n_t)
    c_np, n_np = c.cpu().numpy(), torch.broadcast_to(n_t, c.shape).cpu().numpy()
    # Beta quantiles; parameters kept > 0 where the bound is 0 or 1 by convention.
    lo = beta_dist.ppf(alpha / 2, c_np.clip(min=1), n_np - c_np + 1)
    up = beta_dist.ppf(1 - alpha / 2, c_np + 1, (n_np - c_np).clip(min=1))
    lower = torch.as_tensor(lo, dtype=torch.float64).to(c.device).where(c > 0, 0.0)
    upper = torch.as_tensor(up, dtype=torch.float64).to(c.device).where(c < n_t, 1.0)
    return lower, upper


def clopper_pearson_lower(counts: Tensor, n: int | Tensor, alpha: float) -> Tensor:
    """One-sided Clopper-Pearson lower bound ``beta.ppf(alpha, c, n - c + 1)`` (0 when ``c = 0``).

    Returns
    -------
    Tensor
        float64 lower bound holding with probability ``>= 1 - alpha`` (one-sided).
    """
    # A two-sided interval at level 2*alpha has exactly this lower end.
    alpha = check_alpha(alpha)
    like = torch.as_tensor(counts)
    n_t = as_sample_sizes(n, like)
    c = as_counts(like, n_t)
    c_np, n_np = c.cpu().numpy(), torch.broadcast_to(n_t, c.shape).cpu().numpy()
    lo = beta_dist.ppf(alpha, c_np.clip(min=1), n_np - c_np + 1)
    return torch.as_tensor(lo, dtype=torch.float64).to(c.device).where(c > 0, 0.0)


def empirical_bernstein_bounds(
    mean: Tensor, variance: Tensor, n: int | Tensor, alpha: float, *, simultaneous_over: int = 1
) -> tuple[Tensor, Tensor]:
    """Two-sided empirical Bernstein bounds for the mean of ``[0, 1]`` variables.

    Maurer & Pontil (2009, Thm. 4): for i.i.d. ``Z_i in [0, 1]``, ``n >= 2``, with probability
    ``>= 1 - delta``, ``E Z - mean <= sqrt(2 V ln(2/delta) / n) + 7 ln(2/delta) / (3 (n - 1))``,
    ``V`` the **unbiased** sample variance (divisor ``n - 1``). Applying it to ``Z`` and ``1 - Z``
    at ``delta = alpha / (2 m)`` each, ``m = simultaneous_over``, gives
    ``|mean - E Z| <= sqrt(2 V L / n) + 7 L / (3 (n - 1))`` with ``L = ln(4 m / alpha)``, for all
    ``m`` intervals at once with probability ``>= 1 - alpha``.

    Parameters
    ----------
    mean : Tensor
        Sample means in ``[0, 1]``.
    variance : Tensor
        **Unbiased** sample variances (``ddof=1``; see ``sample_mean_variance``), same shape.
        The biased (divisor ``n``) variance is smaller and would make the bound unsound.
    n : int or Tensor
        Number of samples, ``>= 2``.
    alpha : float
        Failure probability in ``(0, 1)``.
    simultaneous_over : int, optional
        Number of intervals that must hold simultaneously (Bonferroni), default 1.

    Returns
    -------
    lower, upper : Tensor
        float64 bounds clipped to ``[0, 1]``, shape of ``mean``.
    """
    alpha, m = check_alpha(alpha), check_count(simultaneous_over, "simultaneous_over")
    mu = as_probabilities(mean, "mean")
    var = torch.as_tensor(variance).to(device=mu.device, dtype=torch.float64)
    if var.shape != mu.shape or bool(torch.any(torch.isnan(var))) or bool(torch.any(var < -_TOL)):
        raise ValueError("variance must be non-negative, with the same shape as mean")
    n_t = as_sample_sizes(n, mu, minimum=2)
    log_term = math.log(4.0 * m / alpha)
    eps = torch.sqrt(2.0 * var.clamp_min(0.0) * log_term / n_t)
    eps = eps + 7.0 * log_term / (3.0 * (n_t - 1.0))
    return (mu - eps).clamp(0.0, 1.0), (mu + eps).clamp(0.0, 1.0)


def sample_mean_variance(samples: Tensor, dim: int = 0) -> tuple[Tensor, Tensor]:
    """Sample mean and **unbiased** sample variance (divisor ``n - 1``) along ``dim``.

    This is the ``V_n`` of Maurer & Pontil, ``sum_{i<j} (Z_i - Z_j)^2 / (n (n - 1))``.

    Returns
    -------
    mean, variance : Tensor
        float64, ``dim`` reduced.
    """
    z = torch.as_tensor(samples).to(dtype=torch.float64)
    if z.shape[dim] < 2:
        raise ValueError("need at least 2 samples along dim for a sample variance")
    return z.mean(dim=dim), z.var(dim=dim, correction=1)


def vote_bounds(counts: Tensor, n: int | Tensor, alpha: float | None) -> Bounds:
    """Bounds on vote-smoothed ``g_i = P(token i in top-k)`` from top-k counts.

    Parameters
    ----------
    counts : Tensor
        ``(..., T)`` integer counts: in how many of the ``n`` noisy samples token ``i`` was in
        the top-k.
    n : int or Tensor
        Number of noise samples (broadcastable to ``counts[..., 0]`` if a tensor of shape
        ``(..., 1)``).
    alpha : float or None
        Failure probability; the ``T`` Clopper-Pearson intervals hold simultaneously with
        probability ``>= 1 - alpha`` (Bonferroni, each at ``alpha / T``). ``None``: plug-in
        estimate ``(c + 1/2) / (n + 1)`` (never exactly 0 or 1), ``certified=False``.

    Returns
    -------
    Bounds
    """
    like = torch.as_tensor(counts)
    if like.dim() == 0:
        raise ValueError("counts must have a token dimension (..., T)")
    if alpha is None:
        n_t = as_sample_sizes(n, like)
        p = (as_counts(like, n_t) + 0.5) / (n_t + 1.0)
        return Bounds(p, p, certified=False, alpha=None)
    lower, upper = clopper_pearson_bounds(like, n, alpha, simultaneous_over=like.shape[-1])
    return Bounds(lower, upper, certified=True, alpha=float(alpha))


def mean_bounds(mean: Tensor, variance: Tensor, n: int | Tensor, alpha: float | None) -> Bounds:
    """Bounds on mean-smoothed ``g = E[a / sum(a)]`` from the sample mean and variance.

    Parameters
    ----------
    mean, variance : Tensor
        ``(..., T)`` sample mean and **unbiased** sample variance of ``h = a / sum(a)`` over
        the ``n`` noisy samples.
    n : int or Tensor
        Number of noise samples, ``>= 2``.
    alpha : float or None
        Failure probability; the ``T`` empirical Bernstein intervals hold simultaneously with
        probability ``>= 1 - alpha``. ``None``: plug-in estimate ``(n mean + 1/2) / (n + 1)``
        (order-preserving, never exactly 0 or 1), ``certified=False``.

    Returns
    -------
    Bounds
    """
    mu = as_probabilities(mean, "mean")
    if mu.dim() == 0:
        raise ValueError("mean must have a token dimension (..., T)")
    if alpha is None:
        n_t = as_sample_sizes(n, mu)
        p = (n_t * mu + 0.5) / (n_t + 1.0)
        return Bounds(p, p, certified=False, alpha=None)
    T = mu.shape[-1]
    lower, upper = empirical_bernstein_bounds(mu, variance, n, alpha, simultaneous_over=T)
    return Bounds(lower, upper, certified=True, alpha=float(alpha))


# --------------------------------------------------------------------------- radii
def kth_largest_of_others(values: Tensor, k: int) -> Tensor:
    """For each token ``i``, the k-th largest of ``values[..., j]`` over ``j != i`` (vectorised).

    ``values`` is ``(..., T)`` with ``k < T``; the result has its shape. The competitor term
    of :func:`radii_in` (on the upper bounds) and :func:`radii_out` (on the lower bounds).

    Removing a value ``>= v_(k)`` (the k-th largest overall) from the multiset makes ``v_(k+1)``
    the k-th largest; removing a smaller one leaves ``v_(k)``. Ties need no special care.
    """
    top = values.topk(k + 1, dim=-1).values
    kth, kth_next = top[..., k - 1 : k], top[..., k : k + 1]
    return torch.where(values >= kth, kth_next, kth)


def probit_margin(a: Tensor, b: Tensor, sigma: float) -> Tensor:
    """``max(0, sigma/2 (Phi^{-1}(a) - Phi^{-1}(b)))``; ``inf - inf`` (a tie at 0 or 1) gives 0.

    ``a`` and ``b`` are probabilities in ``[0, 1]`` (already checked); the result is an L2
    radius in the units of ``sigma`` ([0, 1] pixel units).
    """
    gap = torch.special.ndtri(a) - torch.special.ndtri(b)
    gap = torch.where(torch.isnan(gap), torch.zeros_like(gap), gap)
    return (0.5 * sigma * gap).clamp_min(0.0)


def radii_in(lower: Tensor, upper: Tensor, k: int, sigma: float) -> Tensor:
    """Per-token L2 radius within which token ``i`` provably stays in the top-k of ``g``.

    ``r_in_i = max(0, sigma/2 (Phi^{-1}(lower_i) - Phi^{-1}(k-th largest upper_j, j != i)))``.

    Parameters
    ----------
    lower, upper : Tensor
        ``(..., T)`` bounds on ``g(x)`` in ``[0, 1]``, valid for all tokens at once.
    k : int
        Top-k size, ``1 <= k < T``.
    sigma : float
        Noise standard deviation ([0, 1] pixel units).

    Returns
    -------
    Tensor
        ``(..., T)`` float64 radii (same units as ``sigma``); 0 = not certified in. ``+inf`` only
        for exact bounds with ``lower_i = 1`` beating every competitor for all inputs.
    """
    lo, up = check_bound_pair(lower, upper)
    k, sigma = check_k(k, lo.shape[-1]), check_sigma(sigma)
    return probit_margin(lo, kth_largest_of_others(up, k), sigma)


def radii_out(lower: Tensor, upper: Tensor, k: int, sigma: float) -> Tensor:
    """Per-token L2 radius within which token ``j`` provably stays out of the top-k of ``g``.

    ``r_out_j = max(0, sigma/2 (Phi^{-1}(k-th largest lower_i, i != j) - Phi^{-1}(upper_j)))``.
    Parameters and returns as in ``radii_in``.
    """
    lo, up = check_bound_pair(lower, upper)
    k, sigma = check_k(k, lo.shape[-1]), check_sigma(sigma)
    return probit_margin(kth_largest_of_others(lo, k), up, sigma)


def overlap_count(k: int, beta: float) -> int:
    """Smallest ``m`` with ``m / k >= beta``, i.e. ``ceil(beta k)`` without float round-off.

    (``math.ceil(0.3 * 10)`` is 4 because ``0.3 * 10 == 3.0000000000000004``; this returns 3.)
    """
    k = check_count(k, "k (the top-k size, a positive integer)")
    beta = check_probability(beta, "beta (the certified top-k overlap fraction)", high_open=False)
    m = max(1, math.ceil(beta * k))
    while m > 1 and (m - 1) / k >= beta:
        m -= 1
    return m


def overlap_radius(r_in: Tensor, k: int, beta: float) -> Tensor:
    """Certified beta-overlap radius ``R_beta``: the ``ceil(beta k)``-th largest ``r_in``.

    For every ``||Delta||_2 < R_beta``, ``|top-k(g(x)) & top-k(g(x + Delta))| / k >= beta``.

    Parameters
    ----------
    r_in : Tensor
        ``(..., T)`` radii from ``radii_in``.
    k : int
        The top-k size used for ``r_in``.
    beta : float
        Required overlap fraction in ``(0, 1]``.

    Returns
    -------
    Tensor
        ``(...)`` float64 radii; 0 means abstain (fewer than ``ceil(beta k)`` tokens certified).
    """
    r = torch.as_tensor(r_in).to(dtype=torch.float64)
    if r.dim() == 0:
        raise ValueError("r_in must have a token dimension (..., T)")
    m = overlap_count(check_k(k, r.shape[-1]), beta)
    return r.topk(m, dim=-1).values[..., m - 1]


def faithful_region(r_in: Tensor, radius: float | Tensor) -> Tensor:
    """Faithful region ``C(R) = {i : r_in_i > R}``: top-k tokens for every ``||Delta||_2 <= R``.

    Parameters
    ----------
    r_in : Tensor
        ``(..., T)`` radii from ``radii_in``.
    radius : float or Tensor
        L2 radius ``R >= 0``, a scalar or one per input (shape ``(...)``).

    Returns
    -------
    Tensor
        ``(..., T)`` bool mask.
    """
    r = torch.as_tensor(r_in)
    R = torch.as_tensor(radius, dtype=r.dtype, device=r.device)
    if bool(torch.any(R < 0)) or bool(torch.any(torch.isnan(R))):
        raise ValueError(f"radius must be >= 0; got {radius!r}")
    return r > (R.unsqueeze(-1) if R.dim() > 0 else R)


@dataclass(frozen=True)
class ExplanationCertificate:
    """Per-token radii of a smoothed explanation; ``certified=False`` marks plug-in estimates.

    Attributes
    ----------
    r_in, r_out : Tensor
        ``(..., T)`` float64 L2 radii from ``radii_in`` / ``radii_out``.
    k : int
    sigma : float
    certified : bool
    alpha : float or None
    """

    r_in: Tensor
    r_out: Tensor
    k: int
    sigma: float
    certified: bool
    alpha: float | None

    def overlap_radius(self, beta: float) -> Tensor:
        """``R_beta`` per input (0 = abstain); see ``overlap_radius``."""
        return overlap_radius(self.r_in, self.k, beta)

    def faithful_region(self, radius: float | Tensor) -> Tensor:
        """Bool mask ``r_in > radius``; see ``faithful_region``."""
        return faithful_region(self.r_in, radius)


def certify_explanation(
    bounds: Bounds, k: int, sigma: float, noise: str = "gaussian"
) -> ExplanationCertificate:
    """Radii for all tokens from ``vote_bounds`` / ``mean_bounds`` output (Gaussian noise only)."""
    require_gaussian(noise)
    return ExplanationCertificate(
        r_in=radii_in(bounds.lower, bounds.upper, k, sigma),
        r_out=radii_out(bounds.lower, bounds.upper, k, sigma),
        k=k,
        sigma=float(sigma),
        certified=bounds.certified,
        alpha=bounds.alpha,
    )


# --------------------------------------------------------------------------- prediction
def select_class(counts_n0: Tensor) -> Tensor:
    """Cohen et al. CERTIFY step 1: the most frequent class among ``n0`` selection samples.

    Parameters
    ----------
    counts_n0 : Tensor
        ``(..., C)`` class counts from the selection samples (not reused for estimation).

    Returns
    -------
    Tensor
        ``(...)`` int64 class indices (lowest index on ties).
    """
    c = torch.as_tensor(counts_n0)
    if c.dim() == 0 or c.shape[-1] < 1:
        raise ValueError("counts_n0 must have a class dimension (..., C)")
    return c.argmax(dim=-1)


def prediction_radius(
    count: Tensor, n: int | Tensor, alpha: float | None, sigma: float
) -> tuple[Tensor, Tensor]:
    """Cohen et al. (2019) certified L2 radius of the smoothed classifier's prediction.

    ``p_lower = beta.ppf(alpha, c, n - c + 1)`` (one-sided Clopper-Pearson); abstain if
    ``p_lower <= 1/2``, else ``radius = sigma Phi^{-1}(p_lower)``.

    Parameters
    ----------
    count : Tensor
        How many of ``n`` fresh noise samples gave the selected class.
    n : int or Tensor
        Number of fresh samples, ``>= 1``.
    alpha : float or None
        Failure probability; ``None`` gives the plug-in ``p = (c + 1/2) / (n + 1)`` (not certified).
    sigma : float
        Noise standard deviation ([0, 1] pixel units).

    Returns
    -------
    radius : Tensor
        float64 L2 radius (0 where abstaining).
    abstain : Tensor
        bool, ``True`` where ``p_lower <= 1/2``.
    """
    return _prediction(count, n, alpha, sigma)[:2]


def _prediction(count, n, alpha, sigma) -> tuple[Tensor, Tensor, Tensor]:
    sigma = check_sigma(sigma)
    like = torch.as_tensor(count)
    if alpha is None:
        n_t = as_sample_sizes(n, like)
        p = (as_counts(like, n_t) + 0.5) / (n_t + 1.0)
    else:
        p = clopper_pearson_lower(like, n, alpha)
    abstain = p <= 0.5
    radius = torch.where(abstain, torch.zeros_like(p), sigma * torch.special.ndtri(p))
    return radius, abstain, p


@dataclass(frozen=True)
class PredictionCertificate:
    """Certified prediction of the smoothed classifier; ``certified=False`` marks plug-in estimates.

    Attributes
    ----------
    label : Tensor
        Selected class (kept even where abstaining).
    radius : Tensor
        float64 L2 radius, 0 where abstaining.
    abstain : Tensor
        bool.
    p_lower : Tensor
        Lower bound (or plug-in estimate) of ``P(f(x + delta) = label)``.
    certified : bool
    """

    label: Tensor
    radius: Tensor
    abstain: Tensor
    p_lower: Tensor
    certified: bool


def certify_prediction(
    counts_n0: Tensor,
    count_fn: Tensor,
    n: int | Tensor,
    alpha: float | None,
    sigma: float,
    noise: str = "gaussian",
) -> PredictionCertificate:
    """Cohen et al. CERTIFY from selection counts and the fresh count of the selected class.

    Parameters
    ----------
    counts_n0 : Tensor
        ``(..., C)`` class counts of the ``n0`` selection samples.
    count_fn : Tensor
        ``(...)`` count of ``select_class(counts_n0)`` among ``n`` *fresh* samples (the caller
        counts it, since which class to count depends on the selection).
    n, alpha, sigma, noise
        As in ``prediction_radius``; ``noise`` must be Gaussian.
    """
    require_gaussian(noise)
    label = select_class(counts_n0)
    radius, abstain, p = _prediction(count_fn, n, alpha, sigma)
    return PredictionCertificate(label, radius, abstain, p, certified=alpha is not None)


def l2_to_linf(radius: float | Tensor, d: int | tuple[int, ...]) -> Tensor:
    """Convert an L2 radius to an L-infinity radius: ``R_inf = R_2 / sqrt(d)``.

    Sound because ``||Delta||_2 <= sqrt(d) ||Delta||_inf``.

    Parameters
    ----------
    radius : float or Tensor
        L2 radius ([0, 1] pixel units).
    d : int or tuple of int
        Input dimension ``C*H*W`` of the image the noise is added to, or its shape ``(C, H, W)``.

    Returns
    -------
    Tensor
        float64 L-infinity radius.
    """
    dim = math.prod(d) if isinstance(d, (tuple, list, torch.Size)) else d
    dim = check_count(dim, "d (the input dimension C*H*W)")
    if not isinstance(radius, Tensor):
        radius = check_radius(radius)
    r = torch.as_tensor(radius).to(dtype=torch.float64)
    if bool(torch.any(r < 0)) or bool(torch.any(torch.isnan(r))):
        raise ValueError(
            "radius must hold L2 radii >= 0 in [0, 1] pixel units (no NaN); got negative or "
            "NaN entries"
        )
    return r / math.sqrt(dim)
