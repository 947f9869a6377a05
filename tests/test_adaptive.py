"""Differentiable DDS, adaptive attacks, the shared top-k ascent, baselines, Monte-Carlo floor
and certificate checks, against hand-checkable cases (the paper preset's test lives in
tests/test_cli.py).

The main toy is a "probit ViT" registered through a custom attention adapter: one attention
layer whose class-token row over its two patch tokens is ``(Φ(z), 1 − Φ(z))`` with
``z = w·x + b`` (x in [0, 1] pixels), and whose two logits are ``log Φ(v), log Φ(−v)`` with
``v = u·x + c``. With the identity denoiser and Gaussian noise δ ~ N(0, σ²I) everything
has a closed form (E[Φ(a + w·δ)] = Φ(a / √(1 + σ²‖w‖²))):

* the DDS mean map (raw attention): ``g₁(x) = Φ(z/s_w)``, ``∇g₁ = φ(z/s_w)/s_w · w``;
* the smoothed softmax: ``p̄₀(x) = Φ(v/s_u)``, ``∇(−log p̄₀) = −φ(v/s_u)/(s_u Φ(v/s_u)) · u``;
* the vote-smoothed map for k = 1: ``P(token 1 in top-1) = Φ(z/(σ‖w‖))``; the exact ℓ2
  distance at which the smoothed top token flips is ``z/‖w‖``.
"""

from __future__ import annotations

import copy
import math
from contextlib import ExitStack

import numpy as np
import pytest
import torch
from conftest import make_timm_vit, make_tiny_unet, model_state
from scipy import stats as sps
from torch import nn

from captum_fvit import DDSAttention, FaithfulRegion
from captum_fvit.attention import AttentionAdapter, register_adapter
from captum_fvit.evaluate.attacks.adaptive import adaptive_topk, smooth_pgd
from captum_fvit.differentiable import DifferentiableDDS
from captum_fvit.explain.base import at_least_float32, graph_kept, keep_graph
from captum_fvit.noise import draw_noise
from captum_fvit.space import Normalization

SIGMA = 0.25
IDENTITY = Normalization((0.0,), (1.0,))


class _Probe(nn.Module):
    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return probs


class ProbitViT(nn.Module):
    """1×8×16 images (two 8×8 patches); see the module docstring."""

    def __init__(self, w: torch.Tensor, b: float, u: torch.Tensor, c: float) -> None:
        super().__init__()
        self.register_buffer("w", w.reshape(-1).clone())
        self.register_buffer("u", u.reshape(-1).clone())
        self.b, self.c = float(b), float(c)
        self.attn = _Probe()
        self.cls_token = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        p = torch.special.ndtr(flat @ self.w + self.b)
        n = x.shape[0]
        probs = torch.zeros(n, 1, 3, 3, dtype=x.dtype, device=x.device)
        probs = probs + torch.eye(3, dtype=x.dtype)  # patch rows attend to themselves
        row = torch.stack([torch.zeros_like(p), p, 1 - p], dim=1)
        probs = torch.cat([row[:, None, None, :], probs[:, :, 1:, :]], dim=2)
        probs = self.attn(probs)
        v = flat @ self.u + self.c
        logits = torch.stack([torch.special.log_ndtr(v), torch.special.log_ndtr(-v)], dim=1)
        return logits + 0 * probs[:, 0, 0, :2]


class ProbitAdapter(AttentionAdapter):
    family = "probit-toy"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, ProbitViT)

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [model.attn]

    def patch_size(self, model: nn.Module) -> tuple[int, int]:
        return (8, 8)

    def num_prefix_tokens(self, model: nn.Module) -> int:
        return 1

    def attach(self, model, layers, emit, stack: ExitStack) -> None:
        def hook(_module, _args, probs):
            emit(0, probs, probs, None)

        stack.callback(model.attn.register_forward_hook(hook).remove)


register_adapter(ProbitAdapter())


def _unit(seed: int, scale: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(128, generator=g, dtype=torch.float64)
    return v / v.norm() * scale


def make_toy(w_norm=4.0, u_norm=4.0, b=0.0, c=0.0) -> ProbitViT:
    w = _unit(1, w_norm)
    u = _unit(2, u_norm)
    u = u - (u @ w) / (w @ w) * w  # the label direction is orthogonal to the map's
    u = u / u.norm() * u_norm
    return ProbitViT(w, b, u, c).double().eval()


def toy_image(model: ProbitViT, z: float, v: float) -> torch.Tensor:
    """A 1×1×8×16 image in (0, 1) with w·x + b = z and u·x + c = v exactly."""
    base = torch.full((128,), 0.5, dtype=torch.float64)
    w, u = model.w, model.u
    base = base + (z - (base @ w + model.b)) / (w @ w) * w
    base = base + (v - (base @ u + model.c)) / (u @ u) * u
    assert base.min() > 0 and base.max() < 1
    return base.view(1, 1, 8, 16)


# -- keep_graph ----------------------------------------------------------------------------
def test_keep_graph_is_scoped_and_stops_detaching():
    x = torch.rand(3, requires_grad=True)
    assert not graph_kept() and not at_least_float32(x * 2).requires_grad
    with keep_graph():
        assert graph_kept()
        y = at_least_float32((x * 2).half())
        assert y.requires_grad and y.dtype == torch.float32
    assert not graph_kept()


# -- closed forms: values and EOT gradients ------------------------------------------------
def test_eot_gradient_of_the_map_is_unbiased_and_equals_the_per_sample_average():
    model = make_toy()
    z, v = 0.6, 0.3
    x = toy_image(model, z, v)
    n = 3000
    dds = DifferentiableDDS(model, None, "raw", SIGMA, normalization=IDENTITY, batch_size=512)
    est = dds.gradient(x, n, seed=4, map_weights={"raw": torch.tensor([[1.0, 0.0]])})
    w = model.w.numpy()
    # Independent reference: the same noise draws, per-sample gradient φ(z + w·δ_s)·w.
    delta = draw_noise(4, 0, n, (1, 8, 16), SIGMA).double().flatten(1).numpy()
    per_sample = sps.norm.pdf(z + delta @ w)
    np.testing.assert_allclose(est.grad.flatten().numpy(), per_sample.mean() * w, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(est.maps["raw"][0, 0].item(), sps.norm.cdf(z + delta @ w).mean(), rtol=1e-6)
    # Unbiased: the closed form lies within 4 standard errors of the estimate.
    s_w = math.sqrt(1 + SIGMA**2 * float(model.w @ model.w))
    exact = sps.norm.pdf(z / s_w) / s_w
    coefficient = float(est.grad.flatten() @ model.w) / float(model.w @ model.w)
    se = per_sample.std(ddof=1) / math.sqrt(n)
    assert abs(coefficient - exact) < 4 * se
    value_se = sps.norm.cdf(z + delta @ w).std(ddof=1) / math.sqrt(n)
    assert abs(est.maps["raw"][0, 0].item() - sps.norm.cdf(z / s_w)) < 4 * value_se


def test_smoothed_softmax_loss_gradient_matches_the_closed_form():
    model = make_toy(u_norm=3.0)
    z, v = 0.2, 0.5
    x = toy_image(model, z, v)
    n = 4000
    dds = DifferentiableDDS(model, None, "raw", SIGMA, normalization=IDENTITY, batch_size=1000)

    def ce(maps, probs):
        return -probs[:, 0].log()

    values, est = dds.loss_gradient(x, n, seed=9, loss=ce)
    s_u = math.sqrt(1 + SIGMA**2 * float(model.u @ model.u))
    p = sps.norm.cdf(v / s_u)
    exact = -sps.norm.pdf(v / s_u) / (s_u * p)
    coefficient = float(est.grad.flatten() @ model.u) / float(model.u @ model.u)
    # The map direction w does not enter the softmax: no gradient along it.
    assert abs(float(est.grad.flatten() @ model.w)) < 1e-8
    assert abs(coefficient - exact) < 0.06 * abs(exact)
    assert abs(math.exp(-values.item()) - p) < 0.02


def test_chunking_does_not_change_values_or_gradients():
    model = make_toy()
    x = torch.cat([toy_image(model, 0.4, 0.1), toy_image(model, -0.3, 0.2)])
    weights = {"raw": torch.tensor([[1.0, -0.5], [0.3, 2.0]], dtype=torch.float64)}
    results = []
    for chunk in (3, 8, 1000):
        dds = DifferentiableDDS(model, None, "raw", SIGMA, normalization=IDENTITY, batch_size=chunk)
        results.append(dds.gradient(x, 37, seed=2, map_weights=weights))
    for other in results[1:]:
        torch.testing.assert_close(other.grad, results[0].grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(other.maps["raw"], results[0].maps["raw"], rtol=1e-10, atol=1e-12)
        assert torch.equal(other.class_counts, results[0].class_counts)


# -- the real pipeline: UNet denoiser, timm ViT, second-order grad_rollout ------------------
@pytest.fixture(scope="module")
def unet_denoiser():
    from diffusers import DDPMScheduler

    from captum_fvit.denoise import DiffusionDenoiser

    unet = make_tiny_unet(attention=False).double()
    return DiffusionDenoiser(unet, DDPMScheduler(num_train_timesteps=1000))


def test_gradient_through_unet_and_grad_rollout_matches_finite_differences(unet_denoiser):
    model = copy.deepcopy(make_timm_vit(depth=2)).double()
    state = model_state(model)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = 0.1 + 0.8 * x
    weights = torch.randn(2, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    dds = DifferentiableDDS(
        model, unet_denoiser, ["grad_rollout", "rollout"], 0.1, batch_size=3,
    )
    assert unet_denoiser.differentiable is False  # the caller's denoiser is not changed
    target = torch.tensor([1, 3])
    est = dds.gradient(x, 2, seed=5, map_weights={"grad_rollout": weights}, target=target)
    assert model_state(model) == state and all(p.grad is None for p in model.parameters())
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    h = 1e-5

    def objective(pixels):
        maps = dds.estimate(pixels, 2, seed=5, target=target).maps["grad_rollout"]
        return float((weights * maps).sum())

    numeric = (objective(x + h * direction) - objective(x - h * direction)) / (2 * h)
    analytic = float((est.grad * direction).sum())
    assert abs(analytic) > 1e-6
    assert abs(numeric - analytic) <= 1e-4 * abs(analytic) + 1e-9
    # Other chunking, same gradient; and its values equal DDSAttention's (same seed, stream 0).
    again = DifferentiableDDS(model, unet_denoiser, ["grad_rollout", "rollout"], 0.1, batch_size=4)
    other = again.gradient(x, 2, seed=5, map_weights={"grad_rollout": weights}, target=target)
    torch.testing.assert_close(other.grad, est.grad, rtol=1e-9, atol=1e-12)
    normalization = dds.normalization
    reference = DDSAttention(model, unet_denoiser, "rollout", sigma=0.1, n_samples=2, autocast=False)
    details = reference.details(normalization.from_pixels(x), seed=5)
    torch.testing.assert_close(est.maps["rollout"], details.mean.to(torch.float64), rtol=1e-6, atol=1e-9)


# -- attacks: the ε-ball and the pixel box ---------------------------------------------------
@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.6)])
def test_adaptive_attacks_keep_the_ball_and_the_pixel_box(norm, eps):
    model = make_toy()
    # Saturated pixels: the box must clip the steps.
    x = (torch.rand(2, 1, 8, 16, generator=torch.Generator().manual_seed(3)) > 0.5).double()
    adv = smooth_pgd(model, None, x, torch.tensor([0, 0]), eps, SIGMA, 4, norm=norm, steps=4,
                     normalization=IDENTITY, seed=1)
    topk = adaptive_topk(model, None, x, 1, eps, SIGMA, "raw", 4, norm=norm, steps=4,
                         normalization=IDENTITY, seed=1, keep_label=False)
    for moved in (adv, topk.adversarial):
        delta = moved - x
        size = delta.abs().flatten(1).amax(1) if norm == "linf" else delta.flatten(1).norm(dim=1)
        assert (size <= eps + 1e-9).all() and (size > 0).all()
        assert moved.min() >= 0 and moved.max() <= 1
    # Same seed, same result, bit for bit.
    again = smooth_pgd(model, None, x, torch.tensor([0, 0]), eps, SIGMA, 4, norm=norm, steps=4,
                       normalization=IDENTITY, seed=1)
    assert torch.equal(again, adv)


def flip_denoiser(x_noisy, sigma, generator=None):
    """A 'denoiser' mapping x to 1 − x: gradients of the plain model point the wrong way."""
    return 1 - x_noisy


def _flip_toy():
    model = make_toy()
    s_w, s_u = float(model.w.sum()), float(model.u.sum())
    # Chosen so that at the test image z = z' = 0.5 and v = v' = 1 (plain and flipped).
    model.b, model.c = 0.5 - s_w / 2, 1.0 - s_u / 2
    return model, toy_image(model, 0.5, 1.0)


def test_adaptive_attacks_beat_transfer_attacks_when_the_surrogate_is_wrong():
    from captum_fvit.evaluate import AttentionSurrogate, pgd_attack, topk_explanation_attack

    model, x = _flip_toy()

    def flipped(adv):  # z' and v' of the DDS pipeline (closed form: it sees 1 − x)
        return float(model.w @ (1 - adv).flatten() + model.b), float(model.u @ (1 - adv).flatten() + model.c)

    eps = 0.05
    transfer = topk_explanation_attack(
        None, model, x, 1, eps, steps=10, normalization=IDENTITY,
        surrogate_map_fn=AttentionSurrogate(model, "raw"),
    ).adversarial
    adaptive = adaptive_topk(model, flip_denoiser, x, 1, eps, SIGMA, "raw", 8, steps=10,
                             normalization=IDENTITY, seed=0)
    z_transfer, _ = flipped(transfer)
    z_adaptive, v_adaptive = flipped(adaptive.adversarial)
    assert z_transfer > 0.5  # the transfer attack *raised* the smoothed mass on the top token
    assert z_adaptive < 0  # the adaptive attack moved the smoothed top token away ...
    assert v_adaptive > 0 and bool(adaptive.label_kept.all())  # ... keeping the label
    assert float(adaptive.mass_adversarial) < 0.5 < float(adaptive.mass_clean)

    pgd = pgd_attack(model, x, torch.tensor([0]), eps, steps=10, normalization=IDENTITY, seed=0)
    smooth = smooth_pgd(model, flip_denoiser, x, torch.tensor([0]), eps, SIGMA, 8, steps=10,
                        normalization=IDENTITY, seed=0)
    assert flipped(pgd)[1] > 1  # transfer PGD made the smoothed classifier *more* confident
    assert flipped(smooth)[1] < 0  # smooth_pgd changed the smoothed class


# -- the one label-preserving ascent, by hand ----------------------------------------------
def _linear_probe(calls):
    """D(x) = Σ x (gradient 1), label kept while the first pixel stays below 0.555."""
    from captum_fvit.evaluate.attacks.topk_ascent import Probe

    def evaluate(x, step):
        calls.append(step)
        return Probe(x.flatten(1).sum(1), torch.ones_like(x), x.flatten(1)[:, 0] < 0.555)

    return evaluate


def test_label_preserving_ascent_rejects_and_halves_by_hand():
    from captum_fvit.evaluate.attacks.topk_ascent import label_preserving_ascent

    x = torch.full((1, 1, 1, 4), 0.5, dtype=torch.float64)
    calls = []
    # α = 0.04: 0.54 accepted; 0.58 rejected (α → 0.02); 0.56 rejected (α → 0.01); 0.55 accepted.
    out = label_preserving_ascent(_linear_probe(calls), x, 0.1, "linf", 4, 0.04)
    assert calls == [0, 1, 2, 3, 4]
    assert int(out.accepted) == 2 and bool(out.probe.ok.all())
    torch.testing.assert_close(out.pixels, torch.full_like(x, 0.55))
    torch.testing.assert_close(out.probe.value, torch.tensor([2.2], dtype=torch.float64))
    # keep_label=False takes every step, up to the ε-ball (0.6).
    free = label_preserving_ascent(_linear_probe([]), x, 0.1, "linf", 4, 0.04, keep_label=False)
    assert int(free.accepted) == 4 and not bool(free.probe.ok.any())
    torch.testing.assert_close(free.pixels, torch.full_like(x, 0.6))


def test_label_preserving_ascent_start_falls_back_to_the_clean_image():
    from captum_fvit.evaluate.attacks.topk_ascent import label_preserving_ascent

    x = torch.full((2, 1, 1, 4), 0.5, dtype=torch.float64)
    start = torch.tensor([0.09, 0.01], dtype=torch.float64).view(2, 1, 1, 1).expand_as(x)
    calls = []
    out = label_preserving_ascent(_linear_probe(calls), x, 0.1, "linf", 0, 0.04, start=start)
    assert calls == [0, 0]  # the start, then the clean image once (image 0 lost its label)
    torch.testing.assert_close(out.pixels[0], x[0])
    torch.testing.assert_close(out.pixels[1], x[1] + 0.01)
    assert bool(out.probe.ok.all())
    # keep_best returns the best accepted point, the clean image included.
    best = label_preserving_ascent(lambda z, _: _decreasing(z), x, 0.1, "linf", 3, 0.04, keep_best=True)
    last = label_preserving_ascent(lambda z, _: _decreasing(z), x, 0.1, "linf", 3, 0.04)
    assert best.accepted.tolist() == last.accepted.tolist() == [3, 3]
    torch.testing.assert_close(best.pixels, x)
    torch.testing.assert_close(best.probe.value, torch.full((2,), -2.0, dtype=torch.float64))
    torch.testing.assert_close(last.pixels, torch.full_like(x, 0.6))


def _decreasing(z):
    """D(x) = −Σ x with an ascent direction that raises x (a bad gradient): every step lowers D."""
    from captum_fvit.evaluate.attacks.topk_ascent import Probe

    return Probe(-z.flatten(1).sum(1), torch.ones_like(z), torch.ones(z.shape[0], dtype=torch.bool))


# -- certificates checked by attack ----------------------------------------------------------
def test_certificate_check_finds_no_violation_and_has_teeth():
    from captum_fvit.evaluate.metrics.certificate_check import check_certificates

    model = make_toy()
    x = toy_image(model, 1.0, 1.0)
    region = FaithfulRegion(
        model, None, "raw", k=1, beta=1.0, alpha=0.001, n_samples=2000, smoothing="vote",
        sigma=SIGMA, n_select=64, input_mean=(0.0,), input_std=(1.0,),
    )
    honest = check_certificates(region, x, seed=0, steps=10, n_eot=16, n_verify=1000)
    (check,) = honest.checks
    # R_β is below the exact flip distance z/‖w‖ = 0.25 and the attack went to its edge.
    assert 0.1 < check.radius_beta < 0.25 and 0.1 < check.radius_pred < 0.25
    assert check.delta_norm_topk > 0.9 * check.radius_beta
    assert check.delta_norm_pred > 0.9 * check.radius_pred
    assert check.certified_tokens == 1
    assert honest.violations == 0
    inflated = check_certificates(region, x, seed=0, radius_scale=3.0, steps=10, n_eot=16, n_verify=1000)
    (bad,) = inflated.checks
    assert bad.token_violation and bad.prediction_violation and inflated.violations == 2


def test_certificate_check_chunk_size_is_the_deprecated_name_of_batch_size():
    """``check_certificates(chunk_size=)`` warns at the caller and gives the same report as
    ``batch_size=``; both names at once is a TypeError."""
    from captum_fvit.evaluate.metrics.certificate_check import check_certificates

    model = make_toy()
    x = toy_image(model, 1.0, 1.0)
    region = FaithfulRegion(
        model, None, "raw", k=1, beta=1.0, alpha=0.01, n_samples=200, smoothing="vote",
        sigma=SIGMA, n_select=16, input_mean=(0.0,), input_std=(1.0,),
    )
    options = dict(seed=0, steps=2, n_eot=4, n_verify=50)
    new = check_certificates(region, x, batch_size=7, **options)
    with pytest.warns(DeprecationWarning, match="check_certificates: chunk_size= is deprecated") as record:
        old = check_certificates(region, x, chunk_size=7, **options)
    assert record[0].filename == __file__
    assert new.rows() == old.rows() and new.checks[0].radius_beta > 0
    with pytest.raises(TypeError, match="pass batch_size= only"):
        check_certificates(region, x, batch_size=8, chunk_size=7, **options)


# -- Monte-Carlo floor and the choice of n -----------------------------------------------------
def test_choose_n_samples_reaches_the_target_on_an_independent_simulation():
    from captum_fvit.evaluate.metrics.floor import choose_n_samples, predicted_seed_overlap

    g = torch.tensor([[0.2, 0.17, 0.15, 0.12, 0.1, 0.09, 0.07, 0.05, 0.03, 0.02]], dtype=torch.float64)
    k, target = 3, 0.9
    rng = np.random.default_rng(0)

    def measured(draw, n, reps=600):
        a, b = (np.argsort(-(draw(n, reps) + rng.random((reps, 10)) * 1e-9), axis=1)[:, :k] for _ in range(2))
        return np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)])

    # Independent tokens (the approximation's assumption), per sample h_i ~ Bernoulli(g_i):
    # far from Gaussian per sample, Gaussian only through the CLT.
    def bernoulli(n, reps):
        return rng.binomial(n, g[0].numpy(), size=(reps, 10))

    n_star = int(choose_n_samples(g, g * (1 - g), k, target, seed=0)[0])
    assert measured(bernoulli, n_star) >= target - 0.02
    assert measured(bernoulli, max(1, n_star // 4)) < target - 0.05
    # The search returns the smallest passing n (to 1/64): 10 % fewer samples miss the target.
    assert float(predicted_seed_overlap(g, g * (1 - g), k, int(n_star * 0.9))[0]) < target
    assert float(predicted_seed_overlap(g, g * (1 - g), k, n_star)[0]) >= target

    # Sum-normalised maps have negatively correlated tokens, which the per-token variance does
    # not see: the prediction is then optimistic (documented), here by a few points.
    def categorical(n, reps):
        return rng.multinomial(n, g[0].numpy(), size=reps)

    assert target - 0.08 <= measured(categorical, n_star) < target


def test_seed_overlap_of_dds_runs_is_the_floor():
    from captum_fvit.evaluate.metrics.floor import seed_overlap

    model = make_timm_vit(depth=2)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    dds = DifferentiableDDS(model, None, "rollout", 0.25)
    a = dds.estimate(x, 4, seed=1).maps["rollout"]
    again = dds.estimate(x, 4, seed=1).maps["rollout"]
    b = dds.estimate(x, 4, seed=2).maps["rollout"]
    assert torch.equal(seed_overlap(a, again, 4), torch.ones(3))
    expected = [len(set(a[i].topk(4).indices.tolist()) & set(b[i].topk(4).indices.tolist())) / 4 for i in range(3)]
    assert seed_overlap(a, b, 4).tolist() == expected


# -- baselines -------------------------------------------------------------------------------
def test_smoothgrad_baseline_is_captum_noise_tunnel_in_pixel_sigma():
    from captum.attr import NoiseTunnel

    from captum_fvit import AttentionMap
    from captum_fvit.evaluate.experiment.baselines import SmoothGradAttention, noise_tunnel_stdev

    model = make_timm_vit(depth=2)  # mean = std = 0.5: pixel σ 0.1 is 0.2 in model units
    assert noise_tunnel_stdev(0.1, Normalization((0.5,) * 3, (0.5,) * 3)) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="different stds"):
        noise_tunnel_stdev(0.1, Normalization((0.5,) * 3, (0.2, 0.3, 0.5)))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    target = torch.tensor([1, 2])
    tiny = SmoothGradAttention(model, "grad_rollout", 1e-9, 3)
    assert isinstance(tiny.tunnel, NoiseTunnel)
    plain = AttentionMap(model, "grad_rollout").token_map(x, target=target)
    torch.testing.assert_close(tiny.token_map(x, target), plain, rtol=1e-5, atol=1e-7)
    # Reference: NoiseTunnel's own draws replayed by hand (same seed, same global-RNG calls).
    sg = SmoothGradAttention(model, "raw", 0.1, 4)
    state = torch.get_rng_state()
    got = sg.token_map(x, None, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched
    torch.manual_seed(3)
    noisy = x.repeat_interleave(4, dim=0) + torch.normal(0, 0.2, size=(8, 3, 32, 32))
    reference = AttentionMap(model, "raw").token_map(noisy).view(2, 4, -1).mean(dim=1)
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-7)
