"""Sequential certification of a region: draw DDS samples look by look, stop once decided.

:func:`certify_at_radius` (:meth:`FaithfulRegion.decide
<captum_fvit.attr.region.FaithfulRegion.decide>`) answers "is x (r, β, k)-faithful?" for a
requested ℓ2 radius ``r`` ([0, 1] pixel units). After the ``n_select`` selection samples fix
the class (as in the fixed-n certificate), it draws estimation samples ``samples_per_look``
at a time (sample indices ``[0, m)``, ``[m, 2m)``, ... of the same noise stream the fixed-n
certificate uses) and, after each look, evaluates anytime-valid confidence sequences
(:mod:`captum_fvit.certify_sequential`) for every token's vote probability (Bonferroni over the
``P`` tokens at ``alpha``) and for the selected class's probability (at ``alpha_pred``).
An input stops as soon as its decision is known — *certified* or *not certified* — and the
undecided ones continue as a smaller batch, up to the budget ``n_max`` (then *undecided*:
abstain). With probability ``≥ 1 − alpha − alpha_pred`` every decision is correct and every
reported radius is valid, whenever sampling stopped.

:func:`iter_anytime_radii` / :func:`anytime_radii` give the same confidence sequences as a
radius that can be read after every look: ``R_β`` and ``R_pred`` reported at any stopping
time — after a sample budget, a time budget, or whenever the caller breaks out of the
loop — are valid certificates.

Only vote smoothing has the count statistics these sequences need; mean smoothing raises.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .. import certify as cert
from .. import certify_sequential as seq
from ..model_io import index_batch_args
from ..noise import random_seed
from ..validation import (
    check_choice,
    check_count,
    check_positive,
    check_radius,
    check_seed,
    renamed_argument,
)
from .base import prepare_inputs
from .certificate import BaseCertificate, assemble_certificates
from .selection import explained_classes

__all__ = [
    "AnytimeCertificate",
    "SequentialCertificate",
    "anytime_radii",
    "certify_at_radius",
    "iter_anytime_radii",
]

#: Default samples per look (a multiple of the noise block, so no noise draw is wasted).
DEFAULT_SAMPLES_PER_LOOK = 32
#: Deprecated name of :data:`DEFAULT_SAMPLES_PER_LOOK`.
DEFAULT_CHUNK = DEFAULT_SAMPLES_PER_LOOK


@dataclass(kw_only=True)
class AnytimeCertificate(BaseCertificate):
    """Anytime-valid radii of one input after ``n_samples`` estimation samples.

    Radii are ℓ2 in [0, 1] pixel units (``*_linf``: ℓ∞, ``R₂/√d``). Every statement holds
    with probability ``≥ confidence`` *whenever* sampling was stopped (``certified`` is
    always True: the sequences have no plug-in mode). Adds to the fields of
    :class:`~captum_fvit.attr.certificate.BaseCertificate` (whose ``lower``/``upper`` are
    the running intersection of the sequence's bounds, ``n_samples`` the samples used):

    Attributes
    ----------
    confidence_sequence : str
        ``"beta_binomial"`` or ``"union"``.
    n_max : int
        The sample budget.
    radius_beta_upper : float
        No vote probabilities within the bounds have an exact ``R_β`` above this.
    p_upper : float
        Upper bound of ``P(f(x+δ) = label)``.
    radius_pred_upper : float
        ``σ Φ⁻¹(p_upper)`` clipped at 0.
    """

    confidence_sequence: str
    n_max: int
    radius_beta_upper: float
    p_upper: float
    radius_pred_upper: float

    @property
    def method(self) -> str:
        """Deprecated name of :attr:`confidence_sequence` (removed in the next release)."""
        warnings.warn(
            "AnytimeCertificate.method is deprecated; use .confidence_sequence",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.confidence_sequence

    def summary(self) -> str:
        """One line a person can read."""
        return (
            f"anytime-valid with confidence {self.confidence:.4g} after {self.n_samples} "
            f"samples: top-{self.k} overlap ≥ {self.beta:g} within R_β={self.radius_beta:.4f}; "
            f"class {self.label} within R_pred={self.radius_pred:.4f}; faithful radius "
            f"R={self.radius:.4f} (ℓ2, [0,1] pixel units)"
        )


@dataclass(kw_only=True)
class SequentialCertificate(AnytimeCertificate):
    """The sequential answer for one input: is it (r, β, k)-faithful at ``requested_radius``?

    Adds to :class:`AnytimeCertificate` (whose radii are the anytime-valid ones at stopping):

    Attributes
    ----------
    requested_radius : float
        The ℓ2 radius ``r`` asked about ([0, 1] pixel units).
    decision : str
        ``"certified"`` (x is (r, β, k)-faithful), ``"not_certified"`` (it is not, at this
        α: the exact smoothed certificate cannot reach ``r``), or ``"undecided"``
        (abstain: the budget ran out first).
    explanation, prediction : str
        The decisions of the two parts (one may stay ``"undecided"`` when the other already
        settles ``decision`` as not certified).
    """

    requested_radius: float = 0.0
    decision: str = "undecided"
    explanation: str = "undecided"
    prediction: str = "undecided"

    @property
    def faithful(self) -> bool:
        """True when certified (r, β, k)-faithful at ``requested_radius``."""
        return self.decision == "certified"

    @property
    def abstain(self) -> bool:
        """True when the budget ran out before a decision."""
        return self.decision == "undecided"

    def summary(self) -> str:
        """One line a person can read."""
        answer = {
            "certified": "certified (r, β, k)-faithful",
            "not_certified": "NOT faithful (certainly, at this confidence)",
            "undecided": "undecided (abstain: budget spent)",
        }[self.decision]
        return (
            f"at r={self.requested_radius:.4f} (ℓ2, [0,1] pixel units): {answer} after "
            f"{self.n_samples} of at most {self.n_max} samples, confidence "
            f"{self.confidence:.4g}; explanation {self.explanation} "
            f"(R_β={self.radius_beta:.4f}, at most {self.radius_beta_upper:.4f}), prediction "
            f"{self.prediction} (class {self.label}, R_pred={self.radius_pred:.4f})"
        )


# --------------------------------------------------------------------------- the sampler
class _Sampler:
    """Draws estimation samples ``[start, stop)`` for a subset of inputs."""

    def __init__(self, region, images, seed, forward_args, target):
        if getattr(region, "smoothing", "vote") != "vote":
            raise ValueError(
                "sequential certification needs smoothing='vote' (top-k vote counts have the "
                "count statistics its confidence sequences use; the mean map has none that "
                "give a usable anytime bound): build FaithfulRegion(..., smoothing='vote')"
            )
        if region.alpha is None:
            raise ValueError(
                "sequential certification needs alpha (and alpha_pred) in (0, 1); alpha=None "
                "plug-in estimates cannot be certified sequentially"
            )
        self.region, self.dds = region, region.dds
        self.images, self.seed, self.forward_args = images, seed, forward_args
        self.n_inputs = images.shape[0]
        self.n_select = int(region.n_select)
        # Cohen's step 1: the class, from n_select samples of an independent noise stream.
        self.label = region.select(images, seed, forward_args).classes
        if target is None:
            self.explained = self.label
        else:  # one class per input, checked against the model's number of classes
            self.explained = explained_classes(
                self.dds.engine, self.dds.model, images, target, self.n_select, seed, forward_args
            )

    def draw(self, index: torch.Tensor, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Votes (M×P) and counts of the selected class (M) of inputs ``index`` over samples
        ``[start, stop)`` — the same sample indices (hence noise) as a fixed-n run."""
        index = index.to(self.images.device)
        target = self.explained[index.to(self.explained.device)]
        result = self.dds.details_prepared(  # inputs and arguments were checked once, up front
            self.images[index],
            target if self.dds.method.class_specific else None,
            self.seed,
            self.region.k,
            index_batch_args(self.forward_args, self.n_inputs, index),
            range(start, stop),
        )
        label = self.label[index.to(self.label.device)].to(result.class_counts.device)
        fresh = result.class_counts.gather(1, label[:, None])[:, 0]
        return result.votes.long(), fresh.long()


def _prepare(region, inputs, seed, n_max, samples_per_look, confidence_sequence):
    images = prepare_inputs(inputs, region.model, region.dds.normalization).images
    region.dds.engine.check_inputs(images)
    region.check_k(images)
    seed = check_seed(seed)
    seed = random_seed() if seed is None else seed
    n_max = region.n_samples if n_max is None else check_count(n_max, "n_max")
    look = DEFAULT_SAMPLES_PER_LOOK if samples_per_look is None else samples_per_look
    look = check_count(look, "samples_per_look")
    kind = check_choice(confidence_sequence, "confidence_sequence", seq.CONFIDENCE_SEQUENCES)
    return images, seed, n_max, min(look, n_max), kind


class _State:
    """Running counts and running-intersection bounds of all inputs."""

    def __init__(self, n_inputs: int, device: torch.device):
        self.n = torch.zeros(n_inputs, dtype=torch.long, device=device)
        self.count = torch.zeros(n_inputs, dtype=torch.long, device=device)
        self.votes: torch.Tensor | None = None
        self.lower = self.upper = None
        self.p_lower = torch.zeros(n_inputs, dtype=torch.float64, device=device)
        self.p_upper = torch.ones(n_inputs, dtype=torch.float64, device=device)

    def update(self, index, votes, count, n_now, alpha, alpha_pred, kind, looks):
        if self.votes is None:
            shape = (self.n.shape[0], votes.shape[1])
            self.votes = torch.zeros(shape, dtype=torch.long, device=self.n.device)
            self.lower = torch.zeros(shape, dtype=torch.float64, device=self.n.device)
            self.upper = torch.ones(shape, dtype=torch.float64, device=self.n.device)
        device = self.n.device
        self.votes[index] += votes.to(device)
        self.count[index] += count.to(self.n.device)
        self.n[index] = n_now
        n_col = self.n[index, None]
        bounds = seq.vote_cs(
            self.votes[index], n_col, alpha, confidence_sequence=kind, looks=looks
        )
        # Running intersection: on the event that every sequence covers at every look, the
        # intersection over the looks covers too.
        self.lower[index], self.upper[index] = seq.running_intersection(
            self.lower[index], self.upper[index], bounds.lower.to(device), bounds.upper.to(device)
        )
        p_lo, p_up = seq.confidence_sequence(
            self.count[index], self.n[index], alpha_pred, confidence_sequence=kind, looks=looks
        )
        self.p_lower[index], self.p_upper[index] = seq.running_intersection(
            self.p_lower[index], self.p_upper[index], p_lo.to(device), p_up.to(device)
        )


def _certificates(region, sampler, state, seed, n_max, kind, images, decisions=None, radius=0.0):
    """One :class:`AnytimeCertificate` per input (a :class:`SequentialCertificate` with
    ``decisions = (combined, explanation, prediction)`` codes at ``radius``)."""
    k, beta, sigma = region.k, region.beta, region.sigma
    expl = seq.explanation_decision(state.lower, state.upper, k, beta, sigma, radius)
    pred = seq.prediction_decision(state.p_lower, state.p_upper, sigma, radius)
    per_input = dict(
        n_samples=state.n, label=sampler.label, lower=state.lower, upper=state.upper,
        r_in=cert.radii_in(state.lower, state.upper, k, sigma),
        radius_beta_upper=expl.radius_beta_upper, p_lower=state.p_lower, p_upper=state.p_upper,
        radius_pred_upper=pred.radius_pred_upper,
    )  # fmt: skip
    shared = dict(
        certified=True, k=k, beta=beta, sigma=sigma, alpha=region.alpha,
        alpha_pred=region.alpha_pred, confidence_sequence=kind, n_select=sampler.n_select,
        n_max=n_max, seed=seed,
    )  # fmt: skip
    cls = AnytimeCertificate
    if decisions is not None:
        cls = SequentialCertificate
        shared["requested_radius"] = float(radius)
        for name, codes in zip(("decision", "explanation", "prediction"), decisions):
            per_input[name] = [seq.decision_name(code) for code in codes.tolist()]
    return assemble_certificates(
        cls, images.shape[1:], radius_beta=expl.radius_beta, radius_pred=pred.radius_pred,
        per_input=per_input, shared=shared,
    )  # fmt: skip


def _deprecated_names(samples_per_look, chunk, confidence_sequence, method, where):
    look = renamed_argument(samples_per_look, chunk, "samples_per_look", "chunk", None, where, 4)
    kind = renamed_argument(confidence_sequence, method, "confidence_sequence", "method",
                            "beta_binomial", where, 4)  # fmt: skip
    return look, kind


# --------------------------------------------------------------------------- public API
def certify_at_radius(
    region,
    inputs,
    radius: float,
    seed: int | None = None,
    forward_args: tuple = (),
    target=None,
    *,
    n_max: int | None = None,
    samples_per_look: int | None = None,
    confidence_sequence: str = "beta_binomial",
    stop: str = "faithful",
    time_budget_s: float | None = None,
    chunk: int | None = None,
    method: str | None = None,
) -> list[SequentialCertificate]:
    """Decide sequentially whether each input is (radius, β, k)-faithful.

    Parameters
    ----------
    region : FaithfulRegion
        Supplies the DDS pipeline, ``k``, ``beta``, ``alpha``, ``alpha_pred``, ``n_select``
        and the default budget ``n_samples`` (vote smoothing only).
    inputs : Tensor or tuple of one Tensor
        ``N×C×H×W`` batch in the model's normalisation.
    radius : float
        ℓ2 radius ``r ≥ 0`` to decide, in [0, 1] pixel units.
    seed : int, optional
        Seed of all noise draws (drawn from torch's generator if ``None``).
    forward_args : tuple, optional
        Extra positional arguments of the model.
    target : optional
        Class to explain (class-specific methods); default the selected class. The
        prediction is always certified for the selected class.
    n_max : int, optional
        Estimation-sample budget per input (default ``region.n_samples``); at the budget the
        decision is ``"undecided"`` (abstain).
    samples_per_look : int, optional
        Samples between looks (default 32). Fewer stop closer to the earliest possible
        sample but run more, smaller batches.
    confidence_sequence : {"beta_binomial", "union"}, default "beta_binomial"
        Confidence sequence (:mod:`captum_fvit.certify_sequential`); ``"union"`` spends α
        over the ``⌈n_max / samples_per_look⌉`` pre-declared looks.
    stop : {"faithful", "both"}, default "faithful"
        Stop an input when the combined answer is known (a single "not certified" part
        settles it), or only when both parts are decided.
    time_budget_s : float, optional
        Stop every input after the look during which this many seconds passed (its answer
        may then be ``"undecided"``); the reported radii stay valid.
    chunk, method : optional
        Deprecated names of ``samples_per_look`` and ``confidence_sequence``.

    Returns
    -------
    list of SequentialCertificate
        One per input; ``n_samples`` is the number of estimation samples it used.
    """
    look, kind = _deprecated_names(
        samples_per_look, chunk, confidence_sequence, method, "certify_at_radius"
    )
    images, seed, n_max, look, kind = _prepare(region, inputs, seed, n_max, look, kind)
    radius = check_radius(radius)
    stop = check_choice(stop, "stop", ("faithful", "both"))
    if time_budget_s is not None:
        time_budget_s = check_positive(time_budget_s, "time_budget_s", " seconds")
    started = time.perf_counter()
    forward_args = tuple(forward_args) if forward_args is not None else ()
    sampler = _Sampler(region, images, seed, forward_args, target)
    schedule = seq.look_schedule(n_max, look)
    looks = len(schedule) if kind == "union" else None
    n_inputs, device = images.shape[0], images.device
    state = _State(n_inputs, device)
    e_code = torch.full((n_inputs,), seq.UNDECIDED, dtype=torch.int8)
    p_code = e_code.clone()
    combined = e_code.clone()
    active = torch.ones(n_inputs, dtype=torch.bool)
    done_samples = 0
    for total in schedule:
        index = active.nonzero()[:, 0]
        votes, count = sampler.draw(index.to(device), done_samples, total)
        state.update(
            index.to(device), votes, count, total, region.alpha, region.alpha_pred, kind, looks
        )
        expl = seq.explanation_decision(
            state.lower[index], state.upper[index], region.k, region.beta, region.sigma, radius
        )
        pred = seq.prediction_decision(
            state.p_lower[index], state.p_upper[index], region.sigma, radius
        )
        e_code[index], p_code[index] = expl.decision.cpu(), pred.decision.cpu()
        combined[index] = seq.combine_decisions(e_code[index], p_code[index])
        if stop == "faithful":
            settled = combined[index] != seq.UNDECIDED
        else:
            settled = (e_code[index] != seq.UNDECIDED) & (p_code[index] != seq.UNDECIDED)
        active[index[settled]] = False
        done_samples = total
        out_of_time = time_budget_s is not None and time.perf_counter() - started >= time_budget_s
        if not bool(active.any()) or out_of_time:
            break
    return _certificates(
        region, sampler, state, seed, n_max, kind, images, (combined, e_code, p_code), radius
    )


def iter_anytime_radii(
    region,
    inputs,
    seed: int | None = None,
    forward_args: tuple = (),
    target=None,
    *,
    n_max: int | None = None,
    samples_per_look: int | None = None,
    confidence_sequence: str = "beta_binomial",
    chunk: int | None = None,
    method: str | None = None,
) -> Iterator[list[AnytimeCertificate]]:
    """Yield anytime-valid certificates of every input after each look.

    Stop iterating whenever you like (a deadline, radii large enough, ...): the last
    certificates you received hold with probability ``≥ 1 − alpha − alpha_pred``. With the
    default ``confidence_sequence="beta_binomial"`` the sequence has no horizon; ``n_max``
    (default ``region.n_samples``) only ends the iteration. Parameters as in
    :func:`certify_at_radius`.

    Yields
    ------
    list of AnytimeCertificate
        One per input, after ``samples_per_look``, ``2 samples_per_look``, ... samples.
    """
    look, kind = _deprecated_names(
        samples_per_look, chunk, confidence_sequence, method, "iter_anytime_radii"
    )
    images, seed, n_max, look, kind = _prepare(region, inputs, seed, n_max, look, kind)
    return _iterate(region, images, seed, tuple(forward_args or ()), target, n_max, look, kind)


def _iterate(region, images, seed, forward_args, target, n_max, look, kind):
    sampler = _Sampler(region, images, seed, forward_args, target)
    schedule = seq.look_schedule(n_max, look)
    looks = len(schedule) if kind == "union" else None
    index = torch.arange(images.shape[0], device=images.device)
    state = _State(images.shape[0], images.device)
    done_samples = 0
    for total in schedule:
        votes, count = sampler.draw(index, done_samples, total)
        state.update(index, votes, count, total, region.alpha, region.alpha_pred, kind, looks)
        done_samples = total
        yield _certificates(region, sampler, state, seed, n_max, kind, images)


def anytime_radii(
    region,
    inputs,
    seed: int | None = None,
    forward_args: tuple = (),
    target=None,
    *,
    n_max: int | None = None,
    time_budget_s: float | None = None,
    samples_per_look: int | None = None,
    confidence_sequence: str = "beta_binomial",
    chunk: int | None = None,
    method: str | None = None,
) -> list[AnytimeCertificate]:
    """Anytime-valid ``R_β``, ``R_pred`` and ``R`` within a sample and/or time budget.

    Runs :func:`iter_anytime_radii` until ``n_max`` samples (default ``region.n_samples``)
    or until the look during which ``time_budget_s`` seconds passed, and returns the last
    certificates; they are valid whenever the loop stopped.
    """
    look, kind = _deprecated_names(
        samples_per_look, chunk, confidence_sequence, method, "anytime_radii"
    )
    if time_budget_s is not None:
        time_budget_s = check_positive(time_budget_s, "time_budget_s", " seconds")
    started = time.perf_counter()
    last = None
    for last in iter_anytime_radii(
        region, inputs, seed, forward_args, target, n_max=n_max, samples_per_look=look,
        confidence_sequence=kind,
    ):  # fmt: skip
        if time_budget_s is not None and time.perf_counter() - started >= time_budget_s:
            break
    return last
