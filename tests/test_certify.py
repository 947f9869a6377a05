"""Tests for captum_fvit.certify against independent references.

References used here never call certify.py's internals: plain numpy loops over tokens,
scipy.stats.norm / beta, statsmodels' proportion_confint, closed-form smoothed functions and
exact minimum-norm attacks on them.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy.stats import beta as beta_dist
from scipy.stats import binom, norm
from statsmodels.stats.proportion import proportion_confint

from captum_fvit import certify as C

# ----------------------------------------------------------------------------- references


def ref_kth_of_others(values: np.ndarray, i: int, k: int) -> float:
    others = [values[j] for j in range(len(values)) if j != i]
    return sorted(others, reverse=True)[k - 1]


def ref_margin(a: float, b: float, sigma: float) -> float:
    """max(0, sigma/2 (ppf(a) - ppf(b))), written with explicit cases (no inf arithmetic)."""
    if a <= b:  # Phi^-1 is increasing: no positive margin (covers the 0/0 and 1/1 ties)
        return 0.0
    if a == 1.0 or b == 0.0:  # a > b: the margin is unbounded
        return math.inf
    return max(0.0, sigma / 2 * (norm.ppf(a) - norm.ppf(b)))


def ref_radii(lower: np.ndarray, upper: np.ndarray, k: int, sigma: float):
    """Loop reference for r_in and r_out, shapes (N, T)."""
    N, T = lower.shape
    r_in, r_out = np.zeros((N, T)), np.zeros((N, T))
    for n in range(N):
        for i in range(T):
            r_in[n, i] = ref_margin(lower[n, i], ref_kth_of_others(upper[n], i, k), sigma)
            r_out[n, i] = ref_margin(ref_kth_of_others(lower[n], i, k), upper[n, i], sigma)
    return r_in, r_out


def ref_overlap_radius(r_in_row: np.ndarray, k: int, beta: float) -> float:
    m = math.ceil(Fraction(str(beta)) * k)  # exact ceil(beta k) on the decimal beta
    return sorted(r_in_row, reverse=True)[m - 1]


def topk_set(values: np.ndarray, k: int) -> set[int]:
    return set(np.argsort(-values)[:k].tolist())


class LinearProbitTokens:
    """Tokens h_i(x) = Phi((w_i.x + b_i)/s); with N(0, sigma^2 I) noise, exactly
    g_i(x) = Phi((w_i.x + b_i)/a_i), a_i = sqrt(s^2 + sigma^2 |w_i|^2).
    So z_i(x) = Phi^-1(g_i(x)) = u_i.x + c_i is affine with |u_i| = |w_i|/a_i < 1/sigma."""

    def __init__(self, W: np.ndarray, b: np.ndarray, s: float, sigma: float):
        self.W, self.b, self.s, self.sigma = W, b, s, sigma
        a = np.sqrt(s**2 + sigma**2 * (W**2).sum(1))
        self.U, self.c = W / a[:, None], b / a

    def h(self, x: np.ndarray) -> np.ndarray:
        return norm.cdf((x @ self.W.T + self.b) / self.s)

    def z(self, x: np.ndarray) -> np.ndarray:
        return x @ self.U.T + self.c

    def g(self, x: np.ndarray) -> np.ndarray:
        return norm.cdf(self.z(x))


def min_norm_in_polyhedron(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin |D| s.t. A D >= b, by KKT active-set enumeration (A has few rows)."""
    if np.all(b <= 0):
        return np.zeros(A.shape[1])
    best = None
    rows = range(A.shape[0])
    for size in range(1, A.shape[0] + 1):
        for act in itertools.combinations(rows, size):
            Aa, ba = A[list(act)], b[list(act)]
            lam = np.linalg.solve(Aa @ Aa.T, ba)
            if np.any(lam < -1e-12):
                continue
            D = Aa.T @ lam
            if np.all(A @ D >= b - 1e-9) and (best is None or D @ D < best @ best):
                best = D
    assert best is not None
    return best


def exact_eviction(tokens: LinearProbitTokens, x: np.ndarray, i: int, k: int) -> np.ndarray:
    """Smallest Delta after which k other tokens have g_j >= g_i (token i out of the top-k)."""
    z, U = tokens.z(x), tokens.U
    others = [j for j in range(len(z)) if j != i]
    best = None
    for S in itertools.combinations(others, k):
        A = np.stack([U[j] - U[i] for j in S])  # z_j(x+D) - z_i(x+D) >= 0
        b = np.array([z[i] - z[j] for j in S])
        D = min_norm_in_polyhedron(A, b)
        if best is None or D @ D < best @ best:
            best = D
    return best


# ----------------------------------------------------------------------------- exactness


def test_linear_probit_smoothing_formula_holds_by_monte_carlo():
    """The closed form used as ground truth below is itself right (MC, 5 standard errors)."""
    rng = np.random.default_rng(0)
    d, T, sigma, s = 4, 3, 0.5, 0.3
    tok = LinearProbitTokens(rng.normal(size=(T, d)), rng.normal(size=T), s, sigma)
    x = rng.normal(size=d) * 0.3
    h = tok.h(x + sigma * rng.normal(size=(200_000, d)))
    se = h.std(0) / math.sqrt(len(h))
    np.testing.assert_array_less(np.abs(h.mean(0) - tok.g(x)), 5 * se + 1e-12)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_radii_equal_closed_form_on_exact_smoothed_values(k):
    rng = np.random.default_rng(1)
    N, T, d, sigma = 5, 7, 6, 0.25
    G = []
    for _ in range(N):
        tok = LinearProbitTokens(rng.normal(size=(T, d)), rng.normal(size=T), 0.2, sigma)
        G.append(tok.g(rng.normal(size=d) * 0.2))
    G = np.array(G)
    r_in_ref, r_out_ref = ref_radii(G, G, k, sigma)
    g_t = torch.tensor(G)
    r_in, r_out = C.radii_in(g_t, g_t, k, sigma), C.radii_out(g_t, g_t, k, sigma)
    np.testing.assert_allclose(r_in.numpy(), r_in_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(r_out.numpy(), r_out_ref, rtol=1e-9, atol=1e-12)
    # exactly k tokens are certified in (exact values, no ties), the others certified out
    assert ((r_in_ref > 0).sum(1) == k).all() and ((r_out_ref > 0).sum(1) == T - k).all()


def test_two_token_certificate_is_tight():
    """h_1 = 1[w.x > 0], h_2 = 1 - h_1, |w| = 1: g_1 = Phi(w.x / sigma); the top-1 order of g
    flips exactly at distance w.x, and the certified radius equals it."""
    rng = np.random.default_rng(2)
    d, sigma, margin = 5, 0.5, 0.3
    w = rng.normal(size=d)
    w /= np.linalg.norm(w)
    x = rng.normal(size=d)
    x += (margin - w @ x) * w  # now w.x = margin

    def g(xx):
        g1 = norm.cdf(w @ xx / sigma)
        return np.array([g1, 1 - g1])

    gx = torch.tensor(g(x))[None]
    r_in = C.radii_in(gx, gx, 1, sigma)
    assert r_in[0, 0].item() == pytest.approx(margin, rel=1e-10)
    assert r_in[0, 1].item() == 0.0
    assert C.overlap_radius(r_in, 1, 1.0).item() == pytest.approx(margin, rel=1e-10)
    assert C.radii_out(gx, gx, 1, sigma)[0, 1].item() == pytest.approx(margin, rel=1e-10)
    eps = 1e-6
    assert np.argmax(g(x - (margin - eps) * w)) == 0  # just inside: unchanged
    assert np.argmax(g(x - (margin + eps) * w)) == 1  # just beyond: the order flips
    # on the sphere |Delta| = R_beta itself the two tokens tie: the guarantee is for |Delta| < R
    gb = g(x - margin * w)
    assert gb[0] == pytest.approx(gb[1], abs=1e-12)


def _probit_token_families(rng, n_configs, T, d):
    """Random token weights, and near-collinear (+/- v) ones where the bound is nearly tight."""
    for c in range(n_configs):
        if c % 2 == 0:
            W = rng.normal(size=(T, d))
        else:
            v = rng.normal(size=d)
            v /= np.linalg.norm(v)
            W = rng.choice([-1.0, 1.0], size=(T, 1)) * v + 0.05 * rng.normal(size=(T, d))
        yield W, rng.normal(size=T) * 0.5


@pytest.mark.parametrize("k", [1, 2])
def test_per_token_radius_never_exceeds_exact_eviction_distance(k):
    """Soundness: r_in_i <= the exact minimum |Delta| that pushes token i out of the top-k of
    the exact smoothed g (computed by a min-norm QP). Also nearly tight on collinear tokens."""
    rng = np.random.default_rng(3)
    T, d, sigma, s = 6, 4, 0.5, 0.02
    ratios = []
    for W, b in _probit_token_families(rng, 16, T, d):
        tok = LinearProbitTokens(W, b, s, sigma)
        x = rng.normal(size=d) * 0.2
        gx = torch.tensor(tok.g(x))[None]
        r_in = C.radii_in(gx, gx, k, sigma)[0].numpy()
        for i in topk_set(tok.g(x), k):
            D = exact_eviction(tok, x, i, k)
            e = np.linalg.norm(D)
            assert r_in[i] <= e * (1 + 1e-9) + 1e-12
            # the QP answer really evicts token i (the reference is not vacuous)
            assert i not in topk_set(tok.g(x + D * (1 + 1e-6) + 1e-12), k)
            ratios.append(r_in[i] / e)
    assert max(ratios) > 0.98  # the comparison has teeth: the bound is nearly attained


@pytest.mark.parametrize("k,beta", [(1, 1.0), (3, 1.0), (3, 0.6), (4, 0.5)])
def test_overlap_radius_is_sound_under_random_and_adversarial_perturbations(k, beta):
    rng = np.random.default_rng(4)
    T, d, sigma, s = 7, 5, 0.5, 0.02
    m = math.ceil(Fraction(str(beta)) * k)
    violations_at_double = 0
    for W, b in _probit_token_families(rng, 12, T, d):
        tok = LinearProbitTokens(W, b, s, sigma)
        x = rng.normal(size=d) * 0.2
        gx_np = tok.g(x)
        gx = torch.tensor(gx_np)[None]
        r_in = C.radii_in(gx, gx, k, sigma)
        R = C.overlap_radius(r_in, k, beta).item()
        assert R > 0
        top0 = topk_set(gx_np, k)
        # candidate directions: random, every token's exact eviction direction, and the sum of
        # the eviction directions of the k - m + 1 least robust tokens (all must be evicted)
        dirs = list(rng.normal(size=(200, d)))
        evict = {i: exact_eviction(tok, x, i, k) for i in top0}
        dirs += [D for D in evict.values() if np.linalg.norm(D) > 0]
        weakest = sorted(top0, key=lambda i: np.linalg.norm(evict[i]))[: k - m + 1]
        dirs.append(sum(evict[i] / np.linalg.norm(evict[i]) for i in weakest))
        for D in dirs:
            u = D / np.linalg.norm(D)
            for scale in (R * (1 - 1e-9), R * rng.uniform()):
                overlap = len(top0 & topk_set(tok.g(x + scale * u), k)) / k
                assert overlap >= beta - 1e-12
            if len(top0 & topk_set(tok.g(x + 2 * R * u), k)) / k < beta:
                violations_at_double += 1
    if beta == 1.0:  # the search is strong enough to break a radius twice too large
        assert violations_at_double > 0


def test_pairwise_difference_bound_is_never_tighter_than_the_closed_form():
    """Design check: certifying i over j via the [0, 1] function (h_i - h_j + 1)/2 gives
    sigma Phi^-1((lo_i - up_j + 1)/2); whenever that is positive it never beats
    sigma/2 (Phi^-1(lo_i) - Phi^-1(up_j)) (Phi(m) >= (Phi(m-t) + Phi(m+t))/2 for m > 0), so the
    per-token closed form is kept."""
    rng = np.random.default_rng(9)
    a, b = rng.uniform(size=(2, 200_000))
    pairwise = norm.ppf((a - b + 1) / 2)
    closed = (norm.ppf(a) - norm.ppf(b)) / 2
    pos = pairwise > 0
    assert pos.sum() > 50_000
    assert np.all(closed[pos] >= pairwise[pos] - 1e-12)


# ----------------------------------------------------------------------------- confidence bounds


def test_clopper_pearson_equals_statsmodels_at_the_bonferroni_level():
    rng = np.random.default_rng(5)
    n, T, alpha = 50, 9, 0.05
    counts = rng.integers(0, n + 1, size=(6, T))
    counts[0, :3] = [0, n, 1]
    b = C.vote_bounds(torch.tensor(counts), n, alpha)
    lo_ref, up_ref = proportion_confint(counts, n, alpha=alpha / T, method="beta")
    np.testing.assert_allclose(b.lower.numpy(), lo_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b.upper.numpy(), up_ref, rtol=1e-12, atol=1e-14)
    assert b.certified and b.alpha == alpha
    assert b.lower[0, 0] == 0.0 and b.upper[0, 1] == 1.0
    # the per-interval version is the same thing at level alpha (no Bonferroni)
    lo1, up1 = C.clopper_pearson_bounds(torch.tensor(counts), n, alpha)
    lo1_ref, up1_ref = proportion_confint(counts, n, alpha=alpha, method="beta")
    np.testing.assert_allclose(lo1.numpy(), lo1_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(up1.numpy(), up1_ref, rtol=1e-12, atol=1e-14)


def test_clopper_pearson_accepts_per_input_n():
    counts = torch.tensor([[0, 5, 10], [3, 3, 20]])
    n = torch.tensor([[10], [20]])
    lo, up = C.clopper_pearson_bounds(counts, n, 0.1, simultaneous_over=3)
    lo_ref, up_ref = proportion_confint(counts.numpy(), n.numpy(), alpha=0.1 / 3, method="beta")
    np.testing.assert_allclose(lo.numpy(), lo_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(up.numpy(), up_ref, rtol=1e-12, atol=1e-14)


def test_empirical_bernstein_matches_maurer_pontil_formula():
    mean = torch.tensor([[0.0, 0.1, 0.5, 0.98]], dtype=torch.float64)
    var = torch.tensor([[0.0, 0.02, 0.25, 0.01]], dtype=torch.float64)
    n, alpha, T = 200, 0.01, 4
    b = C.mean_bounds(mean, var, n, alpha)
    L = math.log(4 * T / alpha)  # two-sided (x2), Bonferroni over T (xT)
    eps = np.sqrt(2 * var.numpy() * L / n) + 7 * L / (3 * (n - 1))
    np.testing.assert_allclose(b.lower.numpy(), np.clip(mean.numpy() - eps, 0, 1), rtol=1e-12)
    np.testing.assert_allclose(b.upper.numpy(), np.clip(mean.numpy() + eps, 0, 1), rtol=1e-12)
    assert b.certified


def test_sample_variance_is_maurer_pontil_vn():
    """V_n = sum_{i<j} (Z_i - Z_j)^2 / (n (n-1)): the unbiased variance, not the biased one."""
    z = torch.rand(9, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mean, var = C.sample_mean_variance(z, dim=0)
    n = z.shape[0]
    vn = sum((z[i] - z[j]) ** 2 for i in range(n) for j in range(i + 1, n)) / (n * (n - 1))
    torch.testing.assert_close(var, vn, rtol=1e-12, atol=0)
    torch.testing.assert_close(mean, z.mean(0))
    assert not torch.allclose(var, z.var(0, correction=0))


def _max_failures(reps: int, alpha: float) -> int:
    """If the true miss rate is <= alpha, P(misses > this) <= 1e-6 (binomial tail)."""
    return int(binom.ppf(1 - 1e-6, reps, alpha))


def test_simultaneous_clopper_pearson_coverage():
    """Top-1 votes over T tokens are multinomial with known g; all T intervals must cover at
    once in >= 1 - alpha of repetitions. Without Bonferroni they would not (the test can fail)."""
    rng = np.random.default_rng(6)
    T, n, reps, alpha = 12, 100, 4000, 0.1
    p = rng.dirichlet(np.ones(T))
    counts = torch.tensor(rng.multinomial(n, p, size=reps))
    pt = torch.tensor(p)

    def misses(lo, up):
        return int((~((lo <= pt) & (pt <= up)).all(-1)).sum())

    b = C.vote_bounds(counts, n, alpha)
    assert misses(b.lower, b.upper) <= _max_failures(reps, alpha)
    naive = C.clopper_pearson_bounds(counts, n, alpha)  # per-token level only
    assert misses(*naive) > _max_failures(reps, alpha)


def test_simultaneous_empirical_bernstein_coverage():
    """Mean smoothing: h is a probability vector (Dirichlet, known mean)."""
    rng = np.random.default_rng(7)
    T, n, reps, alpha = 8, 100, 2000, 0.1
    conc = rng.uniform(0.2, 2.0, size=T)
    g = conc / conc.sum()
    h = torch.tensor(rng.dirichlet(conc, size=(reps, n)))
    mean, var = C.sample_mean_variance(h, dim=1)
    b = C.mean_bounds(mean, var, n, alpha)
    gt = torch.tensor(g)
    miss = int((~((b.lower <= gt) & (gt <= b.upper)).all(-1)).sum())
    assert miss <= _max_failures(reps, alpha)
    assert (b.upper - b.lower).mean() < 0.5  # informative, not the trivial [0, 1]


# ----------------------------------------------------------------------------- prediction


def test_cohen_radius_and_abstention():
    counts = torch.tensor([1000, 990, 700, 530, 500, 0])
    n, alpha, sigma = 1000, 0.001, 0.25
    radius, abstain = C.prediction_radius(counts, n, alpha, sigma)
    for c, r, a in zip(counts.tolist(), radius.tolist(), abstain.tolist()):
        p_low = beta_dist.ppf(alpha, c, n - c + 1) if c > 0 else 0.0
        if p_low > 0.5:
            assert not a and r == pytest.approx(sigma * norm.ppf(p_low), rel=1e-10)
        else:
            assert a and r == 0.0
    assert abstain.tolist() == [False, False, False, True, True, True]
    # c = n: p_lower = alpha^(1/n) < 1, a finite radius
    assert radius[0].item() == pytest.approx(sigma * norm.ppf(alpha ** (1 / n)), rel=1e-10)


def test_certify_prediction_selects_argmax_and_labels_plugin():
    counts_n0 = torch.tensor([[1, 90, 9], [50, 0, 50]])
    cert = C.certify_prediction(counts_n0, torch.tensor([95, 40]), 100, 0.01, 0.5)
    assert cert.label.tolist() == [1, 0]
    assert cert.abstain.tolist() == [False, True] and cert.certified
    plug = C.certify_prediction(counts_n0, torch.tensor([100, 40]), 100, None, 0.5)
    assert not plug.certified and torch.isfinite(plug.radius).all()
    assert plug.p_lower[0].item() == pytest.approx(100.5 / 101)
    with pytest.raises(ValueError, match="Gaussian"):
        C.certify_prediction(counts_n0, torch.tensor([95, 40]), 100, 0.01, 0.5, noise="laplace")


# ----------------------------------------------------------------------------- plug-in


def test_plugin_vote_counts_0_and_n_give_finite_radii_labelled_uncertified():
    n = 64
    counts = torch.tensor([[n, n, 0, 0, 7], [0, 0, 0, n, n]])
    b = C.vote_bounds(counts, n, None)
    assert not b.certified and b.alpha is None
    assert ((b.lower > 0) & (b.upper < 1)).all()
    np.testing.assert_allclose(b.lower.numpy(), (counts.numpy() + 0.5) / (n + 1))
    cert = C.certify_explanation(b, 2, 0.25)
    assert not cert.certified
    assert torch.isfinite(cert.r_in).all() and torch.isfinite(cert.r_out).all()
    assert (cert.r_in[0, :2] > 0).all() and (cert.r_in[1, 3:] > 0).all()
    # the certified version on the same counts is labelled certified
    assert C.certify_explanation(C.vote_bounds(counts, n, 0.01), 2, 0.25).certified


def test_plugin_mean_of_exactly_0_or_1_is_finite():
    mean = torch.tensor([[1.0, 0.0, 0.0]])
    b = C.mean_bounds(mean, torch.zeros(1, 3), 10, None)
    assert not b.certified
    r = C.radii_in(b.lower, b.upper, 1, 0.5)
    assert torch.isfinite(r).all() and r[0, 0] > 0


# ----------------------------------------------------------------------------- vectorisation


@pytest.mark.parametrize("T,k", [(7, 1), (7, 3), (7, 5), (7, 6), (2, 1)])
def test_vectorised_radii_match_loop_reference_with_ties_and_extremes(T, k):
    rng = np.random.default_rng(8 + T + k)
    N, sigma = 300, 0.3
    a = np.round(rng.uniform(size=(N, T)), 1)  # many ties, exact 0s and 1s
    b = np.round(rng.uniform(size=(N, T)), 1)
    lower, upper = np.minimum(a, b), np.maximum(a, b)
    lower[:40] = upper[:40]  # exact-value rows (lower == upper, may be 0 or 1)
    r_in_ref, r_out_ref = ref_radii(lower, upper, k, sigma)
    r_in = C.radii_in(torch.tensor(lower), torch.tensor(upper), k, sigma)
    r_out = C.radii_out(torch.tensor(lower), torch.tensor(upper), k, sigma)
    assert not torch.isnan(r_in).any() and not torch.isnan(r_out).any()
    np.testing.assert_allclose(r_in.numpy(), r_in_ref, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(r_out.numpy(), r_out_ref, rtol=1e-10, atol=1e-14)
    assert np.isinf(r_in_ref).any() or T == 2 or k > 1  # the extremes were exercised
    for beta in (0.3, 0.5, 0.7, 1.0):
        R = C.overlap_radius(r_in, k, beta).numpy()
        R_ref = [ref_overlap_radius(row, k, beta) for row in r_in_ref]
        np.testing.assert_allclose(R, R_ref, rtol=1e-10, atol=1e-14)
        mask = C.faithful_region(r_in, torch.tensor(R))
        assert (mask.numpy() == (r_in_ref > np.array(R)[:, None])).all()


def test_batched_leading_dims_float32_input_and_device():
    g = torch.rand(2, 3, 10, generator=torch.Generator().manual_seed(1))  # float32
    r = C.radii_in(g, g, 4, 0.5)
    assert r.shape == (2, 3, 10) and r.dtype == torch.float64 and r.device == g.device
    ref, _ = ref_radii(g.double().reshape(6, 10).numpy(), g.double().reshape(6, 10).numpy(), 4, 0.5)
    np.testing.assert_allclose(r.reshape(6, 10).numpy(), ref, rtol=1e-9, atol=1e-12)
    assert C.overlap_radius(r, 4, 0.5).shape == (2, 3)
    assert C.faithful_region(r, 0.01).shape == (2, 3, 10)


def test_infinities_never_produce_nan():
    lo = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.2, 0.1, 0.0]], dtype=torch.float64)
    r_in = C.radii_in(lo, lo, 1, 1.0)
    r_out = C.radii_out(lo, lo, 1, 1.0)
    assert not torch.isnan(r_in).any() and not torch.isnan(r_out).any()
    assert r_in[0].tolist() == [0.0, 0.0, 0.0, 0.0]  # tie at 1: nothing certified in
    assert math.isinf(r_out[0, 2]) and math.isinf(r_out[0, 3])  # g = 0 never reaches g = 1
    assert r_out[0, :2].eq(0).all()
    assert math.isinf(r_in[1, 0]) and r_in[1, 1:].eq(0).all()  # g = 1 exactly beats g < 1
    assert math.isinf(r_out[1, 3])  # g = 0 exactly never reaches a token with g > 0


# ----------------------------------------------------------------------------- overlap count, l_inf


@pytest.mark.parametrize("beta", [0.07, 0.14, 0.28, 0.3, 0.5, 0.7, 1.0, 0.05, 1 / 3])
@pytest.mark.parametrize("k", [1, 3, 10, 25, 50, 100])
def test_overlap_count_is_exact_ceil(beta, k):
    m = C.overlap_count(k, beta)
    assert m / k >= beta and (m == 1 or (m - 1) / k < beta)
    if beta != 1 / 3:
        assert m == math.ceil(Fraction(str(beta)) * k)


def test_overlap_count_avoids_float_ceil_pitfall():
    # 0.14 * 50 == 7.000000000000001, so a naive ceil asks for 8 of 50 tokens instead of 7
    assert math.ceil(0.14 * 50) == 8
    assert C.overlap_count(50, 0.14) == 7
    r_in = torch.arange(60, 0, -1, dtype=torch.float64)[None]  # 60 > 59 > ... > 1
    assert C.overlap_radius(r_in, 50, 0.14).item() == 54.0  # the 7th largest, not the 8th


def test_l2_to_linf():
    r = torch.tensor([0.5, 1.0])
    torch.testing.assert_close(C.l2_to_linf(r, 3 * 32 * 32), r.double() / math.sqrt(3072))
    torch.testing.assert_close(C.l2_to_linf(r, (3, 32, 32)), r.double() / math.sqrt(3072))
    # soundness of the conversion: the worst Delta with |Delta|_inf = R_inf has |Delta|_2 = R_2
    d, R2 = 3072, 0.5
    delta = np.full(d, C.l2_to_linf(R2, d).item())
    assert np.linalg.norm(delta) == pytest.approx(R2, rel=1e-12)


# ----------------------------------------------------------------------------- bad input


def test_certified_radius_excludes_infinity_for_estimated_bounds():
    """Estimated bounds are never exactly 0/1 in the wrong place: c = n gives lower < 1."""
    n = 30
    b = C.vote_bounds(torch.tensor([[n, 0, 0, 0]]), n, 0.05)
    assert b.lower[0, 0] < 1 and b.upper[0, 1] > 0
    assert torch.isfinite(C.radii_in(b.lower, b.upper, 1, 0.5)).all()


@pytest.mark.parametrize(
    "call,match",
    [
        (
            lambda: C.radii_in(torch.rand(2, 5), torch.ones(2, 5), 5, 0.5),
            "must be smaller than the number of patch tokens \\(5\\)",
        ),
        (lambda: C.radii_out(torch.rand(2, 5), torch.ones(2, 5), 7, 0.5), r"patch tokens \(5\)"),
        (lambda: C.radii_in(torch.rand(2, 5), torch.ones(2, 5), 0, 0.5), "k must be an integer ≥ 1"),
        (lambda: C.radii_in(torch.rand(2, 5), torch.ones(2, 5), 2, 0.0), "sigma"),
        (lambda: C.radii_in(torch.rand(2, 5), torch.ones(2, 5), 2, -1.0), "sigma"),
        (lambda: C.radii_in(torch.ones(2, 5), torch.zeros(2, 5), 2, 0.5), "lower bound must be <="),
        (lambda: C.radii_in(torch.full((2, 5), 1.5), torch.full((2, 5), 1.5), 2, 0.5), r"\[0, 1\]"),
        (lambda: C.radii_in(torch.rand(2, 5), torch.ones(2, 4), 2, 0.5), "same shape"),
        (lambda: C.radii_in(torch.full((1, 3), math.nan), torch.ones(1, 3), 1, 0.5), "no NaN"),
        (lambda: C.overlap_radius(torch.rand(2, 5), 2, 0.0), "beta"),
        (lambda: C.overlap_radius(torch.rand(2, 5), 2, 1.2), "beta"),
        (lambda: C.overlap_radius(torch.rand(2, 5), 5, 0.5), r"patch tokens \(5\)"),
        (lambda: C.vote_bounds(torch.tensor([[1, 2]]), 10, 0.0), "alpha"),
        (lambda: C.vote_bounds(torch.tensor([[1, 2]]), 10, 1.0), "alpha"),
        (lambda: C.vote_bounds(torch.tensor([[1, 2]]), 10, 1.5), "alpha"),
        (lambda: C.vote_bounds(torch.tensor([[1, 2]]), 0, 0.1), "n .* ≥ 1"),
        (lambda: C.vote_bounds(torch.tensor([[1, 11]]), 10, 0.1), r"integers in \[0, n\]"),
        (lambda: C.vote_bounds(torch.tensor([[-1, 1]]), 10, 0.1), "counts"),
        (lambda: C.vote_bounds(torch.tensor([[0.5, 1.0]]), 10, 0.1), "counts"),
        (lambda: C.mean_bounds(torch.rand(1, 3), torch.rand(1, 3), 1, 0.1), "≥ 2"),
        (lambda: C.mean_bounds(torch.rand(1, 3), -torch.ones(1, 3), 5, 0.1), "variance"),
        (lambda: C.prediction_radius(torch.tensor(5), 10, 0.01, 0.0), "sigma"),
        (lambda: C.prediction_radius(torch.tensor(5), 10, 2.0, 0.5), "alpha"),
        (lambda: C.require_gaussian("laplace"), "Gaussian"),
        (lambda: C.require_gaussian("uniform"), "Gaussian"),
        (
            lambda: C.certify_explanation(
                C.vote_bounds(torch.tensor([[3, 1]]), 4, 0.1), 1, 0.5, noise="laplace"
            ),
            "Gaussian",
        ),
        (lambda: C.l2_to_linf(1.0, 0), "C\\*H\\*W"),
        (lambda: C.overlap_count(0, 0.5), "positive integer"),
    ],
)
def test_bad_input_raises_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: C.vote_bounds(torch.tensor([[1, 2]]), 10.5, 0.1), "n .* must be an integer"),
        (lambda: C.vote_bounds(torch.tensor([[1, 2]]), True, 0.1), "n .* must be an integer"),
        (lambda: C.radii_in(torch.rand(2, 5), torch.ones(2, 5), 2.5, 0.5), "k must be an integer"),
        (lambda: C.overlap_radius(torch.rand(2, 5), True, 0.5), "k must be an integer"),
        (lambda: C.overlap_count(2.0, 0.5), "k .* must be an integer"),
        (lambda: C.clopper_pearson_bounds(torch.tensor([1]), 4, 0.1, simultaneous_over=1.5),
         "simultaneous_over must be an integer"),
        (lambda: C.clopper_pearson_lower(torch.tensor([1]), 4, "0.1"), "alpha"),
        (lambda: C.clopper_pearson_lower(torch.tensor([1]), 4, None), "alpha"),
        (lambda: C.overlap_radius(torch.rand(2, 5), 2, "0.5"), "beta"),
        (lambda: C.l2_to_linf(1.0, 3.5), "C\\*H\\*W"),
    ],
)
def test_non_integer_counts_and_non_numbers_raise_type_error(call, match):
    """The same mistake raises the same type as everywhere (captum_fvit.validation): a
    non-integer count or a non-number is a TypeError, an out-of-range value a ValueError."""
    with pytest.raises(TypeError, match=match):
        call()


def test_public_helpers_check_tensors():
    """The tensor checks certify_sequential uses are public and behave as documented."""
    n = C.as_sample_sizes(torch.tensor([[3], [4]]), torch.zeros(1))
    assert n.dtype == torch.float64 and n.flatten().tolist() == [3.0, 4.0]
    with pytest.raises(ValueError, match="≥ 2"):
        C.as_sample_sizes(torch.tensor([1]), torch.zeros(1), minimum=2)
    with pytest.raises(ValueError, match="counts"):
        C.as_counts(torch.tensor([5.0]), torch.tensor(4.0, dtype=torch.float64))
    lo, up = C.check_bound_pair(torch.tensor([0.25, 1 + 1e-7]), torch.tensor([0.5, 1.0]))
    assert lo.tolist() == [0.25, 1.0] and up.dtype == torch.float64
    values = torch.tensor([[0.875, 0.5, 0.75, 0.125]])
    # For each i the 2nd largest of the others: drop 0.875 -> 0.5, drop 0.5 -> 0.75, ...
    assert C.kth_largest_of_others(values, 2).tolist() == [[0.5, 0.75, 0.5, 0.75]]
    margin = C.probit_margin(torch.tensor([0.9, 0.1]), torch.tensor([0.5, 0.5]), 0.5)
    assert margin[0].item() == pytest.approx(0.25 * norm.ppf(0.9)) and margin[1].item() == 0.0


def test_gaussian_noise_is_accepted():
    C.require_gaussian("gaussian")
    C.require_gaussian("Normal")
