"""How many noise samples a DDS map needs for a wanted seed-to-seed stability.

A DDS map is a Monte-Carlo estimate ``ĝ`` of the smoothed map ``g`` from ``n`` samples. From
the per-token mean and variance that DDS streams (``DDSResult.mean``, ``DDSResult.variance``),
:func:`predicted_seed_overlap` predicts, under the normal approximation
``ĝ_i ≈ g_i + √(v_i/n)·z_i``, the expected top-k overlap of two runs with independent seeds
(by simulation), and :func:`choose_n_samples` returns the smallest ``n`` whose prediction
reaches a target. Core maths, used by :meth:`DDSAttention.samples_for_stability
<captum_fvit.DDSAttention.samples_for_stability>` and re-exported by
:mod:`captum_fvit.evaluate.metrics.floor` (the Monte-Carlo floor).
"""

from __future__ import annotations

import warnings

import torch

from .validation import check_count, check_k

__all__ = ["choose_n_samples", "predicted_seed_overlap"]


def _topk_overlap(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """``|T_k(a) ∩ T_k(b)| / k`` per row (ties to the lower index, as
    :func:`captum_fvit.evaluate.metrics.similarity.topk_overlap`)."""

    def member(maps: torch.Tensor) -> torch.Tensor:
        top = torch.sort(maps, dim=1, descending=True, stable=True).indices[:, :k]
        return torch.zeros(maps.shape, dtype=torch.bool).scatter_(1, top, True)

    return (member(a) & member(b)).sum(dim=1).double() / k


def _check_moments(mean: torch.Tensor, variance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.as_tensor(mean).double()
    variance = torch.as_tensor(variance).double()
    if mean.dim() != 2 or mean.shape != variance.shape:
        raise ValueError(
            f"mean and variance must be N×P per-token tensors of the same shape, got "
            f"{tuple(mean.shape)} and {tuple(variance.shape)}"
        )
    if not (torch.isfinite(mean).all() and torch.isfinite(variance).all()):
        raise ValueError(
            "mean and variance must be finite (the variance needs n ≥ 2 samples per image)"
        )
    if (variance < 0).any():
        raise ValueError("variance must be ≥ 0")
    return mean, variance


def predicted_seed_overlap(
    mean: torch.Tensor,
    variance: torch.Tensor,
    k: int,
    n_samples: int,
    *,
    reps: int = 256,
    seed: int = 0,
) -> torch.Tensor:
    """Expected top-k overlap of two independent ``n_samples``-sample DDS runs, per image.

    Parameters
    ----------
    mean, variance : Tensor
        ``N×P`` per-token mean of ``h`` and its per-sample variance (``DDSResult.mean``,
        ``DDSResult.variance``), taken as the truth (a plug-in).
    k : int
        Top-k size.
    n_samples : int
        Samples of each of the two runs.
    reps : int, default 256
        Simulated pairs of runs.
    seed : int, default 0
        Seed of the simulation (common to every ``n``, so predictions are comparable).

    Returns
    -------
    Tensor
        ``N`` predicted mean overlaps in [0, 1].
    """
    mean, variance = _check_moments(mean, variance)
    n_samples = check_count(n_samples, "n_samples")
    reps = check_count(reps, "reps")
    n, p = mean.shape
    k = check_k(k, p, inclusive=True, what="tokens per map")
    generator = torch.Generator().manual_seed(int(seed))
    z = torch.randn((2, reps, n, p), generator=generator, dtype=torch.float64)
    scale = (variance / n_samples).sqrt()
    runs = mean.cpu() + scale.cpu() * z
    a = runs[0].reshape(reps * n, p)
    b = runs[1].reshape(reps * n, p)
    return _topk_overlap(a, b, k).view(reps, n).mean(dim=0).to(mean.device)


def choose_n_samples(
    mean: torch.Tensor,
    variance: torch.Tensor,
    k: int,
    target: float = 0.9,
    *,
    n_max: int = 1 << 16,
    reps: int = 256,
    seed: int = 0,
) -> torch.Tensor:
    """Smallest ``n`` whose predicted seed-to-seed top-k overlap reaches ``target``, per image.

    Parameters
    ----------
    mean, variance : Tensor
        ``N×P`` per-token mean and per-sample variance of the normalised maps from a pilot
        DDS run (``DDSAttention.details(...)`` → ``.mean``, ``.variance``).
    k : int
        Top-k size.
    target : float, default 0.9
        Wanted mean overlap of two independent runs, in (0, 1].
    n_max : int, default 65536
        Largest ``n`` considered; images that do not reach ``target`` by then get ``n_max``
        (with a warning: near-ties at the k-th token make the top-k set unstable at any
        ``n``; lower the target or k).
    reps, seed
        Simulation size and seed (:func:`predicted_seed_overlap`).

    Returns
    -------
    Tensor
        ``N`` int64 sample sizes.

    Notes
    -----
    A plug-in: the pilot's mean and variance stand for the truth. The tokens are treated as
    independent (only per-token variances are streamed); sum-normalised maps have negatively
    correlated tokens, which makes ``ĝ_i − ĝ_j`` noisier than assumed, so the prediction is
    optimistic — on a categorical toy a target of 0.9 gave a measured 0.83–0.9 (see the
    tests). Ask for a little more than you need, and check with two seeds
    (:func:`seed_overlap`). The search doubles ``n`` until the target is met, then bisects
    between the last two sizes.
    """
    if not 0 < float(target) <= 1:
        raise ValueError(f"target must lie in (0, 1], got {target}")
    n_max = check_count(n_max, "n_max")
    mean, variance = _check_moments(mean, variance)
    n_images = mean.shape[0]

    def ok(n: int) -> torch.Tensor:
        return predicted_seed_overlap(mean, variance, k, n, reps=reps, seed=seed) >= target

    chosen = torch.full((n_images,), -1, dtype=torch.long)
    low = torch.zeros(n_images, dtype=torch.long)
    n = 1
    while True:
        reached = ok(n).cpu() & (chosen < 0)
        chosen[reached] = n
        low[(chosen < 0)] = n
        if bool((chosen >= 0).all()) or n >= n_max:
            break
        n = min(2 * n, n_max)
    # Bisect each image between its last failing size and its first passing one.
    for i in range(n_images):
        hi = int(chosen[i])
        if hi <= 1:
            continue
        lo = int(low[i])
        one_m, one_v = mean[i : i + 1], variance[i : i + 1]
        while hi - lo > max(1, hi // 64):
            mid = (lo + hi) // 2
            passed = bool(
                predicted_seed_overlap(one_m, one_v, k, mid, reps=reps, seed=seed)[0] >= target
            )
            lo, hi = (lo, mid) if passed else (mid, hi)
        chosen[i] = hi
    missing = chosen < 0
    if bool(missing.any()):
        warnings.warn(
            f"{int(missing.sum())} image(s) do not reach a predicted seed-to-seed overlap of "
            f"{target:g} with n ≤ {n_max} (near-ties at the k-th token); returning n_max",
            RuntimeWarning,
            stacklevel=2,
        )
        chosen[missing] = n_max
    return chosen.to(mean.device)
