"""Sequential certification: the confidence sequences equal independent references, cover
uniformly over time under adversarial optional stopping (where fixed-n intervals checked
repeatedly do not), the decisions follow their stated rules, the driver stops each input at
the first look that decides it using the same samples as a fixed-n run, and the soundness
attack finds no violation inside the sequentially certified radius."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_timm_vit, model_state
from scipy.optimize import brentq
from scipy.special import betaln
from scipy.stats import binom, norm
from statsmodels.stats.proportion import proportion_confint
from test_region import _overlap, _pgd_against_topk, _smoothed_topk

from captum_fvit import DDSAttention, FaithfulRegion
from captum_fvit import certify as cert
from captum_fvit import certify_sequential as sq
from captum_fvit.attr.region_sequential import (
    AnytimeCertificate,
    SequentialCertificate,
    anytime_radii,
    certify_at_radius,
    iter_anytime_radii,
)
from captum_fvit.space import resolve_normalization


def _binomial_margin(runs: int, alpha: float) -> float:
    """Largest miss rate a procedure with miss probability <= alpha shows with prob. 1 - 1e-6."""
    return binom.ppf(1 - 1e-6, runs, alpha) / runs


def _running(lower: torch.Tensor, upper: torch.Tensor):
    """Running intersection along dim 1 (the looks), by the library's step."""
    lo, up = [lower[:, 0]], [upper[:, 0]]
    for j in range(1, lower.shape[1]):
        a, b = sq.running_intersection(lo[-1], up[-1], lower[:, j], upper[:, j])
        lo.append(a)
        up.append(b)
    return torch.stack(lo, 1), torch.stack(up, 1)


# --------------------------------------------------------------------------- the sequences
def _reference_mixture_interval(s: int, t: int, alpha: float, a=0.5, b=0.5):
    """Ends of {p : B(a+s, b+t-s) / (B(a,b) p^s (1-p)^(t-s)) < 1/alpha} by scipy's brentq."""
    log_marginal = betaln(a + s, b + t - s) - betaln(a, b)

    def excess(p):
        successes = s * math.log(p) if s else 0.0
        failures = (t - s) * math.log1p(-p) if t > s else 0.0
        return log_marginal - successes - failures - math.log(1 / alpha)

    centre = s / t
    lower = 0.0 if s == 0 else brentq(excess, 1e-300, centre, xtol=1e-15, rtol=1e-14)
    upper = 1.0 if s == t else brentq(excess, centre, 1 - 1e-15, xtol=1e-15, rtol=1e-14)
    return lower, upper


def test_beta_binomial_cs_equals_root_finding_reference():
    rng = np.random.default_rng(0)
    t = rng.integers(1, 3000, 60)
    s = np.minimum(t, (rng.random(60) * (t + 1)).astype(int))
    s[:4], t[:4] = [0, 7, 0, 1], [5, 7, 1, 1]  # the edges S = 0 and S = t
    alpha = 0.01
    lower, upper = sq.beta_binomial_cs(torch.tensor(s), torch.tensor(t), alpha, simultaneous_over=4)
    for i in range(len(t)):
        ref_lo, ref_up = _reference_mixture_interval(int(s[i]), int(t[i]), alpha / 4)
        # Conservative (never inside the exact interval) and within 1e-9 of it.
        assert ref_lo - 1e-9 <= lower[i] <= ref_lo + 1e-15
        assert ref_up - 1e-15 <= upper[i] <= ref_up + 1e-9
    # vote_cs: Bonferroni over the T tokens of each input.
    votes = torch.tensor([[0, 5, 40, 40], [1, 2, 3, 4]])
    bounds = sq.vote_cs(votes, torch.tensor([[40], [4]]), 0.02)
    each = sq.beta_binomial_cs(votes, torch.tensor([[40], [4]]), 0.02 / 4)
    assert torch.equal(bounds.lower, each[0]) and torch.equal(bounds.upper, each[1])
    # A closed form: S = t gives lower = (alpha sqrt-ish factor)^(1/t) from B(t + 1/2, 1/2).
    closed = math.exp((betaln(100.5, 0.5) - betaln(0.5, 0.5) + math.log(0.001)) / 100)
    lo, up = sq.beta_binomial_cs(torch.tensor([100]), 100, 0.001)
    assert float(lo) == pytest.approx(closed, rel=1e-10) and float(up) == 1.0


def test_union_cs_is_clopper_pearson_at_alpha_over_looks_and_tokens():
    counts, n = torch.tensor([[0, 3, 50, 99, 100]]), 100
    lower, upper = sq.union_cs(counts, n, 0.05, looks=8, simultaneous_over=5)
    ref_lo, ref_up = proportion_confint(counts.numpy(), n, alpha=0.05 / 40, method="beta")
    np.testing.assert_allclose(lower.numpy(), np.nan_to_num(ref_lo, nan=0.0), atol=1e-12)
    np.testing.assert_allclose(upper.numpy(), np.nan_to_num(ref_up, nan=1.0), atol=1e-12)
    bounds = sq.vote_cs(counts, n, 0.05, confidence_sequence="union", looks=8)
    assert torch.equal(bounds.lower, lower) and bounds.certified and bounds.alpha == 0.05


def test_confidence_sequence_covers_uniformly_over_time():
    """Bernoulli streams with known p, checked at every 2nd sample: the adversary stops at the
    first look the interval misses p. The CS misses in at most alpha of the runs; the
    fixed-n Clopper–Pearson interval checked the same way misses far more often."""
    rng = np.random.default_rng(1)
    runs, alpha, looks = 1000, 0.1, np.arange(2, 201, 2)
    margin = _binomial_margin(runs, alpha)
    for p in (0.3, 0.97):
        counts = torch.tensor(np.cumsum(rng.random((runs, looks[-1])) < p, 1)[:, looks - 1])
        n = torch.tensor(looks).expand_as(counts)
        lower, upper = _running(*sq.beta_binomial_cs(counts, n, alpha))
        miss = ((lower > p) | (upper < p)).any(1).double().mean().item()
        assert miss <= alpha, (p, miss)  # by Ville's inequality (observed ~0.02)
        naive_lo, naive_up = cert.clopper_pearson_bounds(counts, n, alpha)
        naive = ((naive_lo > p) | (naive_up < p)).any(1).double().mean().item()
        assert naive > margin, f"the simulation cannot tell valid from invalid ({naive})"


def test_prediction_decisions_survive_adversarial_stopping():
    """p just below / above the threshold Φ(r/σ): a run errs if *any* look (every 8 samples up
    to 400) decides wrongly — what an adversary choosing the stopping time would exploit."""
    rng = np.random.default_rng(2)
    sigma, radius, alpha, runs = 0.25, 0.1, 0.05, 2000
    looks = np.arange(8, 401, 8)
    threshold = norm.cdf(radius / sigma)
    margin = _binomial_margin(runs, alpha)
    for p, wrong in ((threshold - 0.01, sq.CERTIFIED), (threshold + 0.01, sq.NOT_CERTIFIED)):
        counts = torch.tensor(np.cumsum(rng.random((runs, looks[-1])) < p, 1)[:, looks - 1])
        n = torch.tensor(looks).expand_as(counts)
        lower, upper = _running(*sq.confidence_sequence(counts, n, alpha))
        decision = sq.prediction_decision(lower, upper, sigma, radius).decision
        assert (decision == wrong).any(1).double().mean().item() <= margin
        naive = sq.prediction_decision(*cert.clopper_pearson_bounds(counts, n, alpha), sigma, radius)
        assert (naive.decision == wrong).any(1).double().mean().item() > margin
    # Far from the threshold every run decides, and correctly, long before the budget.
    counts = torch.tensor(np.cumsum(rng.random((runs, 64)) < 0.995, 1)[:, [31, 63]])
    lower, upper = _running(*sq.confidence_sequence(counts, torch.tensor([32, 64]).expand_as(counts), alpha))
    assert bool((sq.prediction_decision(lower, upper, sigma, radius).decision[:, 1] == sq.CERTIFIED).all())


def test_explanation_decisions_survive_adversarial_stopping():
    """Token vote streams with known g; radii around the exact R_β*(g) (r = R* counts as
    'not certified', the exact certificate's open ball). Misses of the simultaneous CS and
    wrong decisions at any of 60 looks both stay within alpha."""
    rng = np.random.default_rng(3)
    g = torch.tensor([0.6, 0.3, 0.2], dtype=torch.float64)
    k, beta, sigma, alpha, runs = 1, 1.0, 0.25, 0.3, 600
    looks = np.arange(16, 961, 16)
    exact = float(cert.overlap_radius(cert.radii_in(g, g, k, sigma), k, beta))
    margin = _binomial_margin(runs, alpha)
    votes = np.cumsum(rng.random((runs, looks[-1], 3)) < g.numpy(), 1)[:, looks - 1]
    votes = torch.tensor(votes)
    n = torch.tensor(looks)[None, :, None].expand_as(votes)
    bounds = sq.vote_cs(votes, n, alpha)
    lower, upper = _running(bounds.lower, bounds.upper)
    miss = ((lower > g) | (upper < g)).flatten(1).any(1).double().mean().item()
    assert miss <= alpha
    naive_lo, naive_up = cert.clopper_pearson_bounds(votes, n, alpha, simultaneous_over=3)
    naive = ((naive_lo > g) | (naive_up < g)).flatten(1).any(1).double().mean().item()
    assert naive > margin, naive
    decided = 0
    for factor in (0.8, 0.95, 1.0, 1.05, 1.2):
        radius = exact * factor
        wrong = sq.NOT_CERTIFIED if exact > radius else sq.CERTIFIED
        decision = sq.explanation_decision(lower, upper, k, beta, sigma, radius).decision
        assert (decision == wrong).any(1).double().mean().item() <= margin
        decided += int((decision != sq.UNDECIDED).any(1).sum())
    assert decided > 100, "the radii must be close enough to R* to be decided in some runs"


# --------------------------------------------------------------------------- the decision rules
def _reference_optimistic(lower, upper, k, sigma):
    out = []
    for i in range(len(lower)):
        others = np.sort(np.delete(lower, i))[::-1]
        margin = norm.ppf(upper[i]) - norm.ppf(others[k - 1])  # inf - inf (a tie at 1): 0
        out.append(0.0 if np.isnan(margin) else max(0.0, sigma / 2 * margin))
    return np.array(out)


def test_not_certified_rule_bounds_every_g_in_the_box():
    """R_β^opt (the m-th largest optimistic radius) is >= R_β(g', g') for every g' between the
    bounds, and R_β(lower, upper) <= R_β(g', g'): so 'not certified' (R_β^opt <= r) and
    'certified' (R_β > r) are both right whenever g lies in the box."""
    rng = np.random.default_rng(4)
    k, beta, sigma = 3, 2 / 3, 0.2
    for _ in range(20):
        centre = rng.beta(0.6, 1.2, 12)
        width = rng.uniform(0.0, 0.2, 12)
        lower = np.clip(centre - width, 0, 1)
        upper = np.clip(centre + rng.uniform(0.0, 0.2, 12), 0, 1)
        opt = sq.optimistic_radii_in(torch.tensor(lower), torch.tensor(upper), k, sigma)
        np.testing.assert_allclose(opt.numpy(), _reference_optimistic(lower, upper, k, sigma), atol=1e-12)
        decision = sq.explanation_decision(torch.tensor(lower), torch.tensor(upper), k, beta, sigma, 0.05)
        inside = torch.tensor(lower + rng.random((300, 12)) * (upper - lower))
        exact = cert.overlap_radius(cert.radii_in(inside, inside, k, sigma), k, beta)
        assert bool((exact <= decision.radius_beta_upper + 1e-12).all())
        assert bool((exact >= decision.radius_beta - 1e-12).all())
        m = cert.overlap_count(k, beta)
        assert float(decision.radius_beta_upper) == pytest.approx(np.sort(opt.numpy())[::-1][m - 1])


def test_decision_codes_follow_the_stated_rules():
    lower = torch.tensor([[0.9, 0.85, 0.1, 0.05], [0.5, 0.45, 0.4, 0.35], [0.9, 0.2, 0.2, 0.1]])
    upper = lower + torch.tensor([0.05, 0.05, 0.05, 0.05])
    k, beta, sigma = 2, 1.0, 0.25
    for radius in (0.0, 0.01, 0.1, 0.3):
        d = sq.explanation_decision(lower, upper, k, beta, sigma, radius)
        r_beta = cert.overlap_radius(cert.radii_in(lower, upper, k, sigma), k, beta)
        expected = torch.where(r_beta > radius, 1, torch.where(d.radius_beta_upper <= radius, 0, -1))
        assert torch.equal(d.decision.long(), expected) and torch.equal(d.radius_beta, r_beta)
    p_lo = torch.tensor([0.3, 0.6, 0.9, 0.999], dtype=torch.float64)
    p_up = torch.tensor([0.45, 0.7, 0.95, 1.0], dtype=torch.float64)
    d = sq.prediction_decision(p_lo, p_up, 0.25, 0.1)
    r_lo = np.where(p_lo > 0.5, 0.25 * norm.ppf(p_lo), 0.0)
    r_up = np.maximum(0.25 * norm.ppf(p_up), 0.0)
    np.testing.assert_allclose(d.radius_pred.numpy(), r_lo, rtol=1e-12)
    expected = np.where(r_lo > 0.1, 1, np.where(r_up <= 0.1, 0, -1))
    np.testing.assert_array_equal(d.decision.numpy(), expected)
    assert d.decision.tolist() == [0, -1, 1, 1]
    e = torch.tensor([1, 1, 1, 0, 0, 0, -1, -1, -1], dtype=torch.int8)
    p = torch.tensor([1, 0, -1, 1, 0, -1, 1, 0, -1], dtype=torch.int8)
    assert sq.combine_decisions(e, p).tolist() == [1, 0, -1, 0, 0, 0, -1, 0, -1]
    assert [sq.decision_name(c) for c in (1, 0, -1)] == ["certified", "not_certified", "undecided"]
    assert sq.look_schedule(100, 32) == [32, 64, 96, 100]
    assert sq.look_schedule(100, 10, growth=2.0) == [10, 30, 70, 100]


def test_running_intersection_keeps_bounds_ordered():
    before = torch.tensor([0.25, 0.25, 0.75]), torch.tensor([0.625, 0.625, 0.875])
    now = torch.tensor([0.125, 0.375, 0.125]), torch.tensor([0.5, 0.75, 0.25])
    lo, up = sq.running_intersection(*before, *now)
    assert lo.tolist() == [0.25, 0.375, 0.125] and up.tolist() == [0.5, 0.625, 0.25]  # last: disjoint
    assert lo.dtype == up.dtype == torch.float64


def test_bad_arguments_of_the_maths():
    with pytest.raises(ValueError, match="alpha"):
        sq.beta_binomial_cs(torch.tensor([1]), 2, 0.0)
    with pytest.raises(ValueError, match="counts"):
        sq.beta_binomial_cs(torch.tensor([3]), 2, 0.1)
    with pytest.raises(ValueError, match="prior"):
        sq.beta_binomial_cs(torch.tensor([1]), 2, 0.1, prior=(0.0, 1.0))
    with pytest.raises(ValueError, match="looks"):
        sq.confidence_sequence(torch.tensor([1]), 2, 0.1, confidence_sequence="union")
    with pytest.raises(ValueError, match="looks"):
        sq.confidence_sequence(torch.tensor([1]), 2, 0.1, looks=3)
    with pytest.raises(ValueError, match="confidence_sequence"):
        sq.confidence_sequence(torch.tensor([1]), 2, 0.1, confidence_sequence="hoeffding")
    with pytest.raises(ValueError, match="radius"):
        sq.prediction_decision(torch.tensor([0.6]), torch.tensor([0.7]), 0.25, -0.1)
    with pytest.raises(ValueError, match="growth"):
        sq.look_schedule(100, 10, growth=0.5)


def test_same_mistake_same_exception_type_in_the_maths():
    """Non-integer counts and non-numbers are TypeErrors, out-of-range values ValueErrors
    (as in captum_fvit.validation; these were all ValueErrors before)."""
    with pytest.raises(TypeError, match="samples_per_look must be an integer"):
        sq.look_schedule(100, 2.5)
    with pytest.raises(TypeError, match="looks must be an integer"):
        sq.union_cs(torch.tensor([1]), 2, 0.1, looks=1.5)
    with pytest.raises(TypeError, match="simultaneous_over must be an integer"):
        sq.beta_binomial_cs(torch.tensor([1]), 2, 0.1, simultaneous_over=True)
    with pytest.raises(TypeError, match="n .* must be an integer"):
        sq.beta_binomial_cs(torch.tensor([1]), 2.5, 0.1)
    with pytest.raises(TypeError, match="alpha"):
        sq.beta_binomial_cs(torch.tensor([1]), 2, None)
    with pytest.raises(TypeError, match="growth"):
        sq.look_schedule(100, 10, growth="2")
    with pytest.raises(ValueError, match="simultaneous_over must be an integer ≥ 1"):
        sq.beta_binomial_cs(torch.tensor([1]), 2, 0.1, simultaneous_over=0)
    with pytest.raises(ValueError, match="n .* ≥ 1"):
        sq.beta_binomial_cs(torch.tensor([0]), 0, 0.1)
    with pytest.raises(ValueError, match="alpha"):
        sq.beta_binomial_cs(torch.tensor([1]), 2, 1.5)


def test_deprecated_maths_names_warn_and_give_identical_results():
    counts = torch.tensor([[0, 3, 17, 40]])
    new = sq.vote_cs(counts, 40, 0.05, confidence_sequence="union", looks=8)
    with pytest.warns(DeprecationWarning, match="method= is deprecated"):
        old = sq.vote_cs(counts, 40, 0.05, method="union", looks=8)
    assert torch.equal(old.lower, new.lower) and torch.equal(old.upper, new.upper)
    new = sq.confidence_sequence(counts, 40, 0.05, confidence_sequence="beta_binomial")
    with pytest.warns(DeprecationWarning, match="use confidence_sequence="):
        old = sq.confidence_sequence(counts, 40, 0.05, method="beta_binomial")
    assert all(torch.equal(a, b) for a, b in zip(old, new))
    with pytest.warns(DeprecationWarning, match="chunk= is deprecated"):
        assert sq.look_schedule(100, chunk=30) == sq.look_schedule(100, 30) == [30, 60, 90, 100]
    with pytest.raises(TypeError, match="pass confidence_sequence="):
        sq.confidence_sequence(counts, 40, 0.05, confidence_sequence="union", method="union")
    assert sq.CS_METHODS == sq.CONFIDENCE_SEQUENCES == ("beta_binomial", "union")


# --------------------------------------------------------------------------- the driver
@pytest.fixture(scope="module")
def stable_vit():
    """The position- and content-dependent ViT of test_region (stable top-k under small noise)."""
    model = make_timm_vit(depth=2, embed_dim=48, num_heads=3)
    with torch.no_grad():
        model.pos_embed.mul_(12.0)
        model.patch_embed.proj.weight.mul_(4.0)
    return model


@pytest.fixture(scope="module")
def inputs():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.5


def _region(model, **options):
    settings = dict(k=3, beta=2 / 3, alpha=0.001, n_samples=256, n_select=16, sigma=0.12, batch_size=256)
    settings.update(options)
    return FaithfulRegion(model, None, "rollout", **settings)


def test_driver_stops_at_the_first_deciding_look_on_fixed_run_samples(stable_vit, inputs):
    """Recompute every look from a fixed-n DDS run on sample indices 0..n-1: the driver's
    bounds, radii and decisions match, each input stopped at the first look that decided it,
    and undecided inputs used the whole budget."""
    region = _region(stable_vit)
    before = model_state(stable_vit)
    radius, chunk, seed = 0.02, 32, 3
    results = certify_at_radius(region, inputs, radius, seed, n_max=256, samples_per_look=chunk)
    assert model_state(stable_vit) == before
    dds = DDSAttention(stable_vit, None, "rollout", sigma=0.12, n_select=16)
    label = region.select(inputs, seed).classes
    decisions = set()
    for i, c in enumerate(results):
        assert isinstance(c, SequentialCertificate) and c.label == int(label[i])
        lower = torch.zeros(c.lower.shape, dtype=torch.float64)
        upper = torch.ones_like(lower)
        p_lo, p_up = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
        for t in range(chunk, c.n_samples + 1, chunk):
            full = dds.details(inputs[i : i + 1], seed=seed, k=3, n_samples=t)
            b = sq.vote_cs(full.votes, t, 0.001)
            lower, upper = sq.running_intersection(lower, upper, b.lower[0], b.upper[0])
            count = full.class_counts[:, c.label]
            p_lo, p_up = sq.running_intersection(p_lo, p_up, *sq.beta_binomial_cs(count, t, 0.001))
            e = sq.explanation_decision(lower, upper, 3, 2 / 3, 0.12, radius).decision
            p = sq.prediction_decision(p_lo, p_up, 0.12, radius).decision
            combined = int(sq.combine_decisions(e, p))
            if t < c.n_samples:
                assert combined == sq.UNDECIDED, f"input {i} should have stopped at {t}"
        assert torch.allclose(c.lower, lower, rtol=0, atol=1e-15)
        assert torch.allclose(c.upper, upper, rtol=0, atol=1e-15)
        assert c.p_lower == pytest.approx(float(p_lo), abs=1e-15)
        assert c.decision == sq.decision_name(combined)
        assert c.explanation == sq.decision_name(int(e)) and c.prediction == sq.decision_name(int(p))
        r_beta = cert.overlap_radius(cert.radii_in(lower, upper, 3, 0.12), 3, 2 / 3)
        assert c.radius_beta == pytest.approx(float(r_beta), abs=1e-15)
        assert c.radius == min(c.radius_beta, c.radius_pred)
        if c.decision == "undecided":
            assert c.n_samples == 256
        decisions.add(c.decision)
        assert c.confidence == pytest.approx(0.998) and "samples" in c.summary()
    assert "certified" in decisions and len({c.n_samples for c in results}) > 1


def test_region_certify_at_radius_and_batch_independence(stable_vit, inputs):
    """FaithfulRegion.decide(x, r) is the sequential test; an input's answer does not
    depend on the other inputs of its batch; the same seed gives the same answer."""
    region = _region(stable_vit)
    via_region = region.decide(inputs, 0.03, seed=5, n_max=128)
    direct = certify_at_radius(region, inputs, 0.03, 5, n_max=128)
    for a, b in zip(via_region, direct):
        assert (a.decision, a.n_samples, a.radius_beta) == (b.decision, b.n_samples, b.radius_beta)
        assert torch.equal(a.lower, b.lower)
    alone = certify_at_radius(region, inputs[2:3], 0.03, 5, n_max=128)[0]
    assert (alone.decision, alone.n_samples) == (direct[2].decision, direct[2].n_samples)
    assert torch.equal(alone.lower, direct[2].lower)
    both = certify_at_radius(region, inputs, 0.03, 5, n_max=128, stop="both")
    assert all(b.n_samples >= d.n_samples for b, d in zip(both, direct))
    assert all(b.explanation != "undecided" and b.prediction != "undecided"
               for b in both if b.n_samples < 128)


def test_anytime_radii_are_the_running_sequence(stable_vit, inputs):
    region = _region(stable_vit)
    history = list(iter_anytime_radii(region, inputs[:2], seed=2, n_max=96, samples_per_look=32))
    assert [h[0].n_samples for h in history] == [32, 64, 96]
    assert all(isinstance(c, AnytimeCertificate) for c in history[-1])
    # Bounds only tighten, radii only grow.
    for before, after in zip(history, history[1:]):
        for a, b in zip(before, after):
            assert bool((b.lower >= a.lower).all()) and bool((b.upper <= a.upper).all())
            assert b.radius_beta >= a.radius_beta and b.radius_pred >= a.radius_pred
    last = anytime_radii(region, inputs[:2], seed=2, n_max=96, samples_per_look=32)
    assert [c.radius for c in last] == [c.radius for c in history[-1]]
    quick = anytime_radii(
        region, inputs[:2], seed=2, n_max=96, samples_per_look=32, time_budget_s=1e-9
    )
    assert [c.n_samples for c in quick] == [32, 32]
    union = anytime_radii(
        region, inputs[:1], seed=2, n_max=96, samples_per_look=32, confidence_sequence="union"
    )[0]
    full = DDSAttention(stable_vit, None, "rollout", sigma=0.12).details(
        inputs[:1], seed=2, k=3, n_samples=96
    )
    cp_lo, _ = cert.clopper_pearson_bounds(
        full.votes[0], 96, 0.001, simultaneous_over=full.votes.shape[1] * 3
    )
    assert bool((union.lower >= cp_lo - 1e-15).all()) and union.confidence_sequence == "union"


def test_driver_rejects_what_it_cannot_certify(stable_vit, inputs):
    with pytest.raises(ValueError, match="smoothing='vote'"):
        certify_at_radius(_region(stable_vit, smoothing="mean"), inputs, 0.01, 0)
    with pytest.raises(ValueError, match="alpha"):
        certify_at_radius(_region(stable_vit, alpha=None), inputs, 0.01, 0)
    region = _region(stable_vit)
    with pytest.raises(ValueError, match="radius"):
        certify_at_radius(region, inputs, -0.1, 0)
    with pytest.raises(TypeError, match="samples_per_look"):
        certify_at_radius(region, inputs, 0.1, 0, samples_per_look=2.5)
    with pytest.raises(ValueError, match="confidence_sequence"):
        certify_at_radius(region, inputs, 0.1, 0, confidence_sequence="wald")
    with pytest.raises(ValueError, match="stop"):
        certify_at_radius(region, inputs, 0.1, 0, stop="never")
    with pytest.raises(TypeError, match="seed"):
        certify_at_radius(region, inputs, 0.1, 1.5)


def test_soundness_inside_the_sequentially_certified_radius(stable_vit):
    """The radius reported when the sequential test stops survives PGD and random directions
    on the smoothed top-k (as in test_region), while 25x the radius breaks it."""
    k, beta, sigma, n_check = 3, 2 / 3, 0.12, 600
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 32, 32, generator=generator) * 0.5
    region = _region(stable_vit, n_samples=800)
    results = certify_at_radius(region, images, 0.03, seed=1, samples_per_look=64)
    radii = torch.tensor([c.radius_beta for c in results])
    certified = torch.tensor([c.explanation == "certified" for c in results])
    assert int(certified.sum()) >= 2, [c.summary() for c in results]
    assert all(c.n_samples < 800 for c, ok in zip(results, certified) if ok)
    assert bool((radii[certified] > 0.03).all())
    norm_ = resolve_normalization(stable_vit)
    pixels = norm_.to_pixels(images)[certified]
    radii = radii[certified].view(-1, 1, 1, 1)
    clean = _smoothed_topk(stable_vit, pixels, sigma, k, n_check, 7, norm_)
    direction = torch.randn(pixels.shape, generator=generator)
    direction = direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    shifted = _smoothed_topk(stable_vit, pixels + 0.999 * radii * direction, sigma, k, n_check, 8, norm_)
    delta = _pgd_against_topk(stable_vit, pixels, clean, 0.999 * radii, sigma, norm_, steps=8)
    attacked = _smoothed_topk(stable_vit, pixels + delta, sigma, k, n_check, 20, norm_)
    assert bool((_overlap(clean, shifted, k) >= beta).all())
    assert bool((_overlap(clean, attacked, k) >= beta).all())
    big = _pgd_against_topk(stable_vit, pixels, clean, 25 * radii, sigma, norm_, steps=8)
    broken = _smoothed_topk(stable_vit, pixels + big, sigma, k, n_check, 21, norm_)
    assert bool((_overlap(clean, broken, k) < beta).any())


def test_deprecated_driver_paths_warn_and_give_identical_results(stable_vit, inputs):
    """certify(x, radius=r) → decide(x, r); chunk= → samples_per_look=; method= →
    confidence_sequence=; n= → n_samples=; certificate .method/.n → the new fields."""
    region = _region(stable_vit)
    new = region.decide(inputs[:2], 0.03, seed=5, n_max=64, samples_per_look=32)
    with pytest.warns(DeprecationWarning, match=r"use FaithfulRegion.decide"):
        old = region.certify(inputs[:2], seed=5, radius=0.03, n_max=64, chunk=32)
    with pytest.warns(DeprecationWarning, match="chunk= is deprecated"):
        chunked = region.decide(inputs[:2], 0.03, seed=5, n_max=64, chunk=32)
    for a, b, c in zip(old, new, chunked, strict=True):
        assert isinstance(a, SequentialCertificate)
        assert (a.decision, a.n_samples, a.radius) == (b.decision, b.n_samples, b.radius)
        assert (c.decision, c.n_samples, c.radius) == (b.decision, b.n_samples, b.radius)
        assert torch.equal(a.lower, b.lower) and torch.equal(c.upper, b.upper)
    union = anytime_radii(region, inputs[:1], seed=2, n_max=64, samples_per_look=32,
                          confidence_sequence="union")[0]  # fmt: skip
    with pytest.warns(DeprecationWarning) as caught:
        legacy = anytime_radii(region, inputs[:1], seed=2, n_max=64, chunk=32, method="union")[0]
    messages = " ".join(str(w.message) for w in caught)
    assert "chunk= is deprecated" in messages and "method= is deprecated" in messages
    assert torch.equal(union.lower, legacy.lower) and union.radius == legacy.radius
    with pytest.warns(DeprecationWarning, match="confidence_sequence"):
        assert legacy.method == "union"
    via_method = region.anytime_radii(
        inputs[:1], seed=2, n_max=64, samples_per_look=32, confidence_sequence="union"
    )[0]
    assert torch.equal(via_method.lower, union.lower) and via_method.radius == union.radius
    with pytest.warns(DeprecationWarning, match="n= is deprecated"):
        renamed = _region(stable_vit, n_samples=None, n=256)
    assert renamed.n_samples == region.n_samples == 256
    with pytest.warns(DeprecationWarning, match="n_samples"):
        assert region.n == 256
    with pytest.raises(TypeError, match="pass n_samples="):
        _region(stable_vit, n_samples=128, n=256)
    with pytest.raises(TypeError, match="unexpected keyword"), pytest.warns(DeprecationWarning):
        region.certify(inputs[:1], seed=0, radius=0.03, n_maximum=64)
    with pytest.raises(ValueError, match="decide"):
        region.certify(inputs[:1], seed=0, stop="both")


def test_certificate_records_share_one_base(stable_vit, inputs):
    """The fixed-n, anytime and sequential records are BaseCertificates: the shared fields
    mean the same, so the sequential record at the fixed run's samples and level agrees
    with the anytime one, and ``region_at``/``confidence`` work on all of them."""
    from dataclasses import fields

    from captum_fvit import BaseCertificate, RegionCertificate

    region = _region(stable_vit)
    fixed = region.certify(inputs[:1], seed=4)[0]
    history = list(region.iter_anytime_radii(inputs[:1], seed=4, n_max=64))
    decided = region.decide(inputs[:1], 0.0, seed=4, n_max=64, stop="both")[0]
    anytime = history[decided.n_samples // 32 - 1][0]  # the look at which decide stopped
    shared = {f.name for f in fields(BaseCertificate)}
    for record in (fixed, anytime, decided):
        assert isinstance(record, BaseCertificate) and shared <= {f.name for f in fields(record)}
        assert record.confidence == pytest.approx(0.998)
        assert torch.equal(record.region_at(0.01), record.r_in > 0.01)
        assert record.radius == min(record.radius_beta, record.radius_pred)
        assert record.radius_linf == pytest.approx(record.radius / math.sqrt(3 * 32 * 32))
    assert isinstance(fixed, RegionCertificate) and fixed.n_samples == 256
    assert anytime.label == decided.label == fixed.label
    assert anytime.n_samples == decided.n_samples and history[-1][0].n_samples == 64
    for name in shared:
        a, b = getattr(anytime, name), getattr(decided, name)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, name
