"""Attacks on a tiny timm ViT (mean = std = 0.5): they raise their loss, respect ε in [0, 1]
pixel space (ℓ∞ and ℓ2), keep pixels in [0, 1], reproduce with a seed, leave the model
untouched; the explanation attack keeps every label while lowering the top-k mass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_unet, model_state

from captum_fvit import AttentionMap, DDSAttention, IdentityDenoiser
from captum_fvit.evaluate import (
    AttentionSurrogate,
    eot_pgd_attack,
    get_attack,
    pgd_attack,
    surrogate_like,
    topk_explanation_attack,
)
from captum_fvit.space import resolve_normalization


@pytest.fixture
def pixels():
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))


@pytest.fixture
def clean(timm_vit, pixels):
    return resolve_normalization(timm_vit).from_pixels(pixels)


def _to_pixels(model, x):
    return resolve_normalization(model).to_pixels(x)


def _ce(model, x, labels):
    with torch.no_grad():
        return F.cross_entropy(model(x), labels, reduction="none")


class Untouched:
    """Snapshot of everything an attack might change on the model."""

    def __init__(self, model):
        self.model = model
        self.weights = {k: v.clone() for k, v in model.state_dict().items()}
        self.state = model_state(model)

    def check(self):
        after = self.model.state_dict()
        assert all(torch.equal(self.weights[k], after[k]) for k in self.weights)
        assert all(p.grad is None for p in self.model.parameters())
        assert model_state(self.model) == self.state


# -- PGD ----------------------------------------------------------------------------------
def test_pgd_linf_raises_the_loss_within_eps(timm_vit, clean, pixels):
    guard = Untouched(timm_vit)
    labels = timm_vit(clean).argmax(dim=1)
    eps = 8 / 255
    adversarial = pgd_attack(timm_vit, clean, eps=eps, seed=0)
    guard.check()
    moved = _to_pixels(timm_vit, adversarial)
    assert (moved - pixels).abs().max() <= eps + 1e-6
    assert (moved - pixels).abs().max() > eps / 2
    assert moved.min() >= -1e-6 and moved.max() <= 1 + 1e-6
    assert (_ce(timm_vit, adversarial, labels) > _ce(timm_vit, clean, labels)).all()


def test_pgd_l2_respects_the_ball_and_the_pixel_box(timm_vit):
    # Saturated pixels: half the image sits at 0 or 1, where the box must clip the steps.
    pixels = (torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4)) > 0.5).float()
    clean = resolve_normalization(timm_vit).from_pixels(pixels)
    labels = torch.tensor([0, 1, 2])
    eps = 0.5
    adversarial = pgd_attack(timm_vit, clean, labels, eps, norm="l2", steps=5, seed=1)
    delta = _to_pixels(timm_vit, adversarial) - pixels
    assert (delta.flatten(1).norm(dim=1) <= eps + 1e-5).all()
    moved = pixels + delta
    assert moved.min() >= -1e-6 and moved.max() <= 1 + 1e-6
    assert _ce(timm_vit, adversarial, labels).mean() > _ce(timm_vit, clean, labels).mean()


def test_pgd_is_reproducible_with_a_seed_and_works_under_no_grad(timm_vit, clean):
    first = pgd_attack(timm_vit, clean, eps=4 / 255, steps=2, seed=5)
    with torch.no_grad():
        second = pgd_attack(timm_vit, clean, eps=4 / 255, steps=2, seed=5)
    other = pgd_attack(timm_vit, clean, eps=4 / 255, steps=2, seed=6)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_pgd_with_zero_eps_returns_the_inputs(timm_vit, clean):
    torch.testing.assert_close(pgd_attack(timm_vit, clean, eps=0.0), clean)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"norm": "l1"}, ValueError, r"norm must be one of \('linf', 'l2'\)"),
        ({"eps": -0.1}, ValueError, "eps must be a finite number ≥ 0"),
        ({"steps": 0}, ValueError, "steps must be an integer ≥ 1"),
        ({"steps": 2.5}, TypeError, "steps must be an int"),
        ({"step_size": 0.0}, ValueError, "step_size must be a finite number > 0"),
        ({"seed": 1.5}, TypeError, "seed must be an int"),
    ],
)
def test_pgd_rejects_bad_arguments(timm_vit, clean, kwargs, error, message):
    with pytest.raises(error, match=message):
        pgd_attack(timm_vit, clean, **kwargs)


def test_attacks_reject_bad_inputs(timm_vit, clean, images):
    with pytest.raises(ValueError, match="empty batch"):
        pgd_attack(timm_vit, clean[:0])
    # `images` are N(0, 1) in model space: pixels far outside [0, 1] for mean = std = 0.5.
    with pytest.raises(ValueError, match="not images in the model's normalisation"):
        pgd_attack(timm_vit, images * 3)
    with pytest.raises(ValueError, match="target has 2 entries for 4 inputs"):
        pgd_attack(timm_vit, clean, target=[0, 1])
    with pytest.raises(ValueError, match="unknown attack 'fgsm'"):
        get_attack("fgsm")
    assert get_attack("pgd").fn is not None


def test_every_registered_attack_runs_with_the_one_signature(timm_vit, clean):
    """Each registry name that validates is callable with the registry's one signature and
    returns pixels within ε (the old registry held 'topk', which validated, then TypeError)."""
    from captum_fvit import AttentionMap
    from captum_fvit.evaluate.attacks.registry import ATTACKS, AttackContext

    norm = resolve_normalization(timm_vit)
    pixels = norm.to_pixels(clean[:2]).clamp(0, 1)
    labels = torch.tensor([0, 1])
    explainer = AttentionMap(timm_vit, "raw")
    context = AttackContext(timm_vit, norm, sigma=0.1, map_fn=explainer.token_map, k=3, n_eot=2)
    for name, spec in ATTACKS.items():
        for threat in spec.norms:
            out = spec.fn(context, pixels, labels, 4 / 255, norm=threat, steps=2, seed=0)
            assert out.shape == pixels.shape and 0 <= float(out.min()) and float(out.max()) <= 1
            dist = (out - pixels).flatten(1)
            size = dist.abs().amax(1) if threat == "linf" else dist.norm(dim=1)
            assert (size <= 4 / 255 + 1e-5).all(), name
    with pytest.raises(ValueError, match="supports norm linf, not 'l2'"):
        get_attack("topk", "l2")


def test_register_attack_refuses_a_wrong_signature():
    from captum_fvit.evaluate.attacks.registry import ATTACKS, register_attack

    def old_style(model, inputs, labels, eps, sigma):  # no norm/steps/seed keywords
        return inputs

    with pytest.raises(TypeError, match="must accept"):
        register_attack("broken", old_style, norms=("linf",))
    assert "broken" not in ATTACKS


# -- EOT-PGD ------------------------------------------------------------------------------
def _smoothed_ce(model, x, labels, sigma, n=32):
    """Reference: CE of the softmax averaged over n independent Gaussian samples."""
    norm = resolve_normalization(model)
    noise = torch.randn((n, *x.shape[1:]), generator=torch.Generator().manual_seed(99)) * sigma
    with torch.no_grad():
        noisy = (norm.to_pixels(x)[None] + noise[:, None]).flatten(0, 1)
        probs = model(norm.from_pixels(noisy)).softmax(dim=1).view(n, x.shape[0], -1).mean(0)
    return F.nll_loss(probs.log(), labels, reduction="none")


def test_eot_pgd_raises_the_smoothed_loss(timm_vit, clean, pixels):
    guard = Untouched(timm_vit)
    sigma, eps = 0.12, 16 / 255
    labels = timm_vit(clean).argmax(dim=1)
    adversarial = eot_pgd_attack(
        timm_vit, IdentityDenoiser(), clean, labels, eps, sigma, n_eot=4, steps=6, seed=0
    )
    guard.check()
    moved = _to_pixels(timm_vit, adversarial)
    assert (moved - pixels).abs().max() <= eps + 1e-6
    assert moved.min() >= -1e-6 and moved.max() <= 1 + 1e-6
    before = _smoothed_ce(timm_vit, clean, labels, sigma)
    after = _smoothed_ce(timm_vit, adversarial, labels, sigma)
    assert (after > before).all()
    again = eot_pgd_attack(
        timm_vit, IdentityDenoiser(), clean, labels, eps, sigma, n_eot=4, steps=6, seed=0
    )
    assert torch.equal(adversarial, again)


def test_eot_pgd_explains_a_denoiser_that_cuts_the_gradient(timm_vit, clean):
    def no_grad_denoiser(x, sigma, generator=None):
        with torch.no_grad():
            return x.clone()

    with pytest.raises(RuntimeError, match="differentiable=True"):
        eot_pgd_attack(timm_vit, no_grad_denoiser, clean, None, 8 / 255, 0.1, 2, steps=1)
    with pytest.raises(ValueError, match="sigma must be a finite float > 0"):
        eot_pgd_attack(timm_vit, IdentityDenoiser(), clean, None, 8 / 255, 0.0, 2)
    with pytest.raises(ValueError, match="n_eot must be an integer ≥ 1"):
        eot_pgd_attack(timm_vit, IdentityDenoiser(), clean, None, 8 / 255, 0.1, 0)


def test_eot_pgd_differentiates_through_a_diffusion_denoiser(timm_vit, clean, pixels):
    """A tiny diffusers UNet built with differentiable=True passes gradients (and keeps its
    parameters' .grad empty); the default no-grad build is refused with the fix."""
    from diffusers import DDPMScheduler

    from captum_fvit import DiffusionDenoiser

    unet = make_tiny_unet().eval()
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    denoiser = DiffusionDenoiser(unet, scheduler, differentiable=True)
    eps = 8 / 255
    adversarial = eot_pgd_attack(timm_vit, denoiser, clean[:1], None, eps, 0.25, 2, steps=1, seed=0)
    delta = _to_pixels(timm_vit, adversarial) - pixels[:1]
    assert eps / 2 < delta.abs().max() <= eps + 1e-6
    assert all(p.grad is None for p in unet.parameters())
    with pytest.raises(RuntimeError, match="differentiable=True"):
        eot_pgd_attack(
            timm_vit, DiffusionDenoiser(unet, scheduler), clean[:1], None, eps, 0.25, 1, steps=1
        )


# -- the top-k explanation attack ---------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("rollout", {}),
        ("rollout", {"start_layer": 1, "head_fusion": "max"}),
        ("raw", {"layer": -2}),
    ],
)
def test_surrogate_equals_the_attention_map_and_is_differentiable(timm_vit, clean, method, options):
    guard = Untouched(timm_vit)
    explainer = AttentionMap(timm_vit, method, **options)
    surrogate = surrogate_like(explainer.token_map, timm_vit)
    assert surrogate.method == method
    x = clean.clone().requires_grad_(True)
    maps = surrogate(x)
    torch.testing.assert_close(maps.detach(), explainer.token_map(clean), atol=1e-6, rtol=1e-5)
    (grad,) = torch.autograd.grad(maps[:, 0].sum(), x)
    assert grad.abs().sum() > 0
    guard.check()


def test_topk_attack_keeps_labels_and_lowers_topk_mass(timm_vit, clean, pixels):
    guard = Untouched(timm_vit)
    explainer = AttentionMap(timm_vit, "rollout")
    eps, steps, k = 32 / 255, 8, 4
    result = topk_explanation_attack(explainer.token_map, timm_vit, clean, k, eps, steps=steps)
    guard.check()
    labels = timm_vit(clean).argmax(dim=1)
    assert torch.equal(timm_vit(result.adversarial).argmax(dim=1), labels)
    assert result.label_kept.all() and torch.equal(result.target, labels)
    # Some steps were rejected for changing the label, so the check was exercised.
    assert result.accepted_steps.min() < steps
    moved = _to_pixels(timm_vit, result.adversarial)
    assert (moved - pixels).abs().max() <= eps + 1e-6
    assert moved.min() >= -1e-6 and moved.max() <= 1 + 1e-6

    # Independent measurement of the surrogate (= rollout) top-k mass on T_k(clean map).
    def mass(x):
        maps = explainer.token_map(x)
        top = torch.sort(explainer.token_map(clean), dim=1, descending=True).indices[:, :k]
        return (maps / maps.sum(dim=1, keepdim=True)).gather(1, top).sum(dim=1)

    before, after = mass(clean), mass(result.adversarial)
    assert (after <= before + 1e-6).all() and after.mean() < before.mean()
    torch.testing.assert_close(result.surrogate_mass_adversarial, after, atol=1e-5, rtol=0)
    assert result.overlap.mean() < 1


def test_topk_attack_on_dds_uses_the_transfer_surrogate(timm_vit, clean):
    dds = DDSAttention(timm_vit, IdentityDenoiser(), "rollout", sigma=0.05, n_samples=2)
    result = topk_explanation_attack(
        lambda x: dds.token_map(x, seed=0), timm_vit, clean[:2], 3, 16 / 255, steps=3
    )
    assert "rollout" in result.surrogate
    assert result.label_kept.all()
    torch.testing.assert_close(result.clean_map, dds.token_map(clean[:2], seed=0))
    assert result.overlap.shape == (2,)


def test_topk_attack_rejects_bad_arguments(timm_vit, clean):
    explainer = AttentionMap(timm_vit, "rollout")
    for k in (16, 17):  # k = P would make the overlap 1 whatever the attack does
        with pytest.raises(ValueError, match=rf"k={k} must be smaller than the number of patch tokens \(16\)"):
            topk_explanation_attack(explainer.token_map, timm_vit, clean, k)
    with pytest.raises(TypeError, match="seed must be an int"):
        topk_explanation_attack(explainer.token_map, timm_vit, clean, 3, seed=1.5)
    with pytest.raises(ValueError, match="eps must be a finite number ≥ 0"):
        topk_explanation_attack(explainer.token_map, timm_vit, clean, 3, -1.0)
    with pytest.raises(RuntimeError, match="without gradient"):
        topk_explanation_attack(
            explainer.token_map,
            timm_vit,
            clean,
            3,
            surrogate_map_fn=explainer.token_map,
            steps=1,
        )
    with pytest.raises(ValueError, match="unknown explanation method 'saliency'"):
        AttentionSurrogate(timm_vit, "saliency")
    with pytest.raises(ValueError, match="bad options for method 'raw'"):
        AttentionSurrogate(timm_vit, "raw", start_layer=1)
    with pytest.raises(ValueError, match="out of range"):
        AttentionSurrogate(timm_vit, "rollout", start_layer=9)


# -- the surrogate is the explain methods under keep_graph --------------------------------
def test_surrogate_equals_attention_map_for_every_method(timm_vit, clean):
    """Every method of captum_fvit.explain — gradient methods included — gives AttentionMap's
    map, differentiable in the input; class-specific ones explain the given target."""
    from captum_fvit.explain import METHODS

    assert {"raw", "rollout", "grad_rollout", "attn_gradcam"} <= set(METHODS)
    guard = Untouched(timm_vit)
    target = torch.tensor([1, 0, 3, 2])
    for name in METHODS:
        surrogate = AttentionSurrogate(timm_vit, name)
        assert surrogate.method == name and name in repr(surrogate)
        x = clean.clone().requires_grad_(True)
        explainer = AttentionMap(timm_vit, name)
        for tgt in (None, target):
            maps = surrogate(x, target=tgt)
            expected = explainer.token_map(clean, target=tgt)
            torch.testing.assert_close(maps.detach(), expected, atol=1e-6, rtol=1e-5)
        (grad,) = torch.autograd.grad(maps[:, 0].sum(), x)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name
        # surrogate_like mirrors the explainer's method (grad_rollout is no longer rollout).
        assert surrogate_like(explainer.token_map, timm_vit).method == name
    guard.check()


@pytest.mark.parametrize("method", ["grad_rollout", "attn_gradcam"])
def test_gradient_method_surrogate_input_gradient_matches_finite_differences(method):
    """The input gradient of a gradient method's map (second order: ∂y/∂A taken with its
    graph) equals a central finite difference of AttentionMap's own map, in float64."""
    from conftest import make_timm_vit

    model = make_timm_vit(depth=2).double()
    pixels = 0.1 + 0.8 * torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = resolve_normalization(model).from_pixels(pixels)
    weights = torch.randn(2, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    target = torch.tensor([2, 4])
    surrogate = AttentionSurrogate(model, method)
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((weights * surrogate(leaf, target)).sum(), leaf)
    explainer = AttentionMap(model, method)

    def objective(inputs):
        return float((weights * explainer.token_map(inputs, target=target)).sum())

    h = 1e-5
    numeric = (objective(x + h * direction) - objective(x - h * direction)) / (2 * h)
    analytic = float((grad * direction).sum())
    assert abs(analytic) > 1e-6
    assert abs(numeric - analytic) <= 1e-5 * abs(analytic) + 1e-9
    # Without the second-order term (∂y/∂A detached) the gradient would be different.
    first_order = _first_order_gradient(model, method, x, target, weights)
    assert abs(float((first_order * direction).sum()) - analytic) > 1e-3 * abs(analytic)


class _KeepGraph:
    """A listener keeping each layer's attention with its graph."""

    def __init__(self):
        self.attentions = {}

    def on_attention(self, layer, probs):
        self.attentions[layer] = probs

    def on_gradient(self, layer, grad):
        pass


def _first_order_gradient(model, method, x, target, weights):
    """Reference that treats ∂y/∂A as a constant (what a detached gradient would give)."""
    from captum_fvit.attention import AttentionRecorder
    from captum_fvit.explain import make_method
    from captum_fvit.explain.base import keep_graph, run_on_maps

    listener = _KeepGraph()
    leaf = x.clone().requires_grad_(True)
    with keep_graph(), AttentionRecorder(model, listener) as recorder:
        logits = model(leaf)
        probs = [listener.attentions[i] for i in sorted(listener.attentions)]
        grads = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), probs, retain_graph=True)
        layout = recorder.layout(x.shape[-2:])
        maps = run_on_maps(make_method(method), probs, layout, [g.detach() for g in grads])
    return torch.autograd.grad((weights * maps).sum(), leaf)[0]


def test_transfer_topk_attack_targets_gradient_methods(timm_vit, clean):
    """grad_rollout can be a transfer target: its surrogate is grad_rollout itself, the
    attack keeps the labels and lowers the surrogate's (= the method's) top-k mass."""
    explainer = AttentionMap(timm_vit, "grad_rollout")
    result = topk_explanation_attack(explainer.token_map, timm_vit, clean[:2], 3, 32 / 255, steps=4)
    assert "grad_rollout" in result.surrogate
    assert result.label_kept.all()
    top = result.topk_index
    after = explainer.token_map(result.adversarial)
    mass = (after / after.sum(dim=1, keepdim=True)).gather(1, top).sum(dim=1)
    torch.testing.assert_close(result.surrogate_mass_adversarial, mass, atol=1e-5, rtol=0)
    assert (result.surrogate_mass_adversarial <= result.surrogate_mass_clean + 1e-6).all()
    assert result.surrogate_mass_adversarial.mean() < result.surrogate_mass_clean.mean()


# -- one EOT-PGD, one registry ------------------------------------------------------------
def _reference_eot_pgd(model, x, labels, eps, sigma, n_eot, steps, seed, stream):
    """Plain-loop EOT-PGD (identity denoiser, ℓ∞): random start from ATTACK_START_STREAM,
    step s on noise samples s·m … (s+1)·m − 1 of ``stream``, loss −log of the mean softmax."""
    from captum_fvit.evaluate.attacks.pixels import random_start
    from captum_fvit.noise import ATTACK_START_STREAM, draw_noise, stream_generator

    norm = resolve_normalization(model)
    pixels = norm.to_pixels(x)
    alpha = eps / 5
    delta = random_start(pixels, eps, "linf", stream_generator(seed, ATTACK_START_STREAM, 0, "cpu"))
    for step in range(steps):
        d = delta.clone().requires_grad_(True)
        noise = draw_noise(seed, step * n_eot, (step + 1) * n_eot, tuple(x.shape[1:]), sigma, stream=stream)
        losses = []
        for i in range(x.shape[0]):  # per image, per sample: a plain loop
            probs = torch.stack(
                [model(norm.from_pixels((pixels[i] + d[i] + noise[s])[None]))[0].softmax(0) for s in range(n_eot)]
            ).mean(0)
            losses.append(-probs[labels[i]].log())
        (grad,) = torch.autograd.grad(torch.stack(losses).sum(), d)
        delta = ((pixels + (delta + alpha * grad.sign()).clamp(-eps, eps)).clamp(0, 1) - pixels).detach()
    return norm.from_pixels(pixels + delta)


def test_eot_pgd_and_smooth_pgd_are_one_attack_matching_a_plain_loop():
    from conftest import make_timm_vit

    from captum_fvit.evaluate import smooth_pgd
    from captum_fvit.noise import ADAPTIVE_STREAM, EOT_STREAM

    model = make_timm_vit(depth=2).double()
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    x = resolve_normalization(model).from_pixels(pixels)
    labels = torch.tensor([1, 3])
    eps, sigma, n_eot, steps, seed = 8 / 255, 0.1, 3, 3, 11
    eot = eot_pgd_attack(model, IdentityDenoiser(), x, labels, eps, sigma, n_eot, steps=steps, seed=seed)
    smooth = smooth_pgd(model, None, x, labels, eps, sigma, n_eot, steps=steps, seed=seed, batch_size=4)
    ref_eot = _reference_eot_pgd(model, x, labels, eps, sigma, n_eot, steps, seed, EOT_STREAM)
    ref_smooth = _reference_eot_pgd(model, x, labels, eps, sigma, n_eot, steps, seed, ADAPTIVE_STREAM)
    torch.testing.assert_close(eot, ref_eot, atol=1e-9, rtol=0)
    torch.testing.assert_close(smooth, ref_smooth, atol=1e-9, rtol=0)
    assert not torch.equal(eot, smooth)  # different noise streams, same attack


def test_eot_pgd_default_labels_are_the_soft_smoothed_prediction(timm_vit, clean):
    """Without labels, eot_pgd_attack attacks argmax of the mean softmax on n_eot samples of
    EOT_LABEL_STREAM: passing those labels explicitly gives the same result."""
    from captum_fvit.evaluate import DifferentiableDDS
    from captum_fvit.noise import EOT_LABEL_STREAM

    sigma, n_eot = 0.1, 3
    pixels = _to_pixels(timm_vit, clean)
    dds = DifferentiableDDS(timm_vit, None, "raw", sigma)
    soft = dds.estimate(pixels, n_eot, 4, stream=EOT_LABEL_STREAM).mean_softmax.argmax(1)
    run = lambda labels: eot_pgd_attack(  # noqa: E731
        timm_vit, IdentityDenoiser(), clean, labels, 4 / 255, sigma, n_eot, steps=1, seed=4
    )
    assert torch.equal(run(None), run(soft))


def test_registry_says_the_threat_and_runs_the_adaptive_attacks(timm_vit, clean):
    from captum_fvit.evaluate import smooth_pgd
    from captum_fvit.evaluate.attacks.registry import ATTACKS, THREATS, AttackContext, register_attack

    threats = {name: spec.threat for name, spec in ATTACKS.items()}
    assert set(threats.values()) <= set(THREATS)
    assert threats["pgd"] == threats["topk"] == "transfer"
    assert threats["eot_pgd"] == threats["smooth_pgd"] == threats["adaptive_topk"] == "adaptive"
    assert ATTACKS["adaptive_topk"].explanation and not ATTACKS["smooth_pgd"].explanation
    with pytest.raises(ValueError, match="threat must be one of"):
        register_attack("x", ATTACKS["pgd"].fn, norms=("linf",), threat="white-box")
    assert "x" not in ATTACKS
    # The registry's smooth_pgd is smooth_pgd (same attack, same seed, same result).
    norm = resolve_normalization(timm_vit)
    pixels = norm.to_pixels(clean[:2]).clamp(0, 1)
    labels = torch.tensor([0, 1])
    context = AttackContext(timm_vit, norm, sigma=0.1, n_eot=2, batch_size=3)
    out = ATTACKS["smooth_pgd"].fn(context, pixels, labels, 4 / 255, norm="l2", steps=2, seed=3)
    direct = smooth_pgd(timm_vit, None, clean[:2], labels, 4 / 255, 0.1, 2, norm="l2", steps=2, seed=3)
    torch.testing.assert_close(out, norm.to_pixels(direct).clamp(0, 1), atol=1e-6, rtol=0)
    # adaptive_topk takes the method under attack from the context (or from map_fn).
    assert AttackContext(timm_vit, norm).method_name() == "rollout"
    assert AttackContext(timm_vit, norm, map_fn=AttentionMap(timm_vit, "raw").token_map).method_name() == "raw"
    assert AttackContext(timm_vit, norm, method="grad_rollout").differentiable_dds().class_specific


def test_old_api_names_stay_importable():
    from captum_fvit import noise
    from captum_fvit.evaluate.attacks import adaptive
    from captum_fvit.evaluate.attacks import registry as attacks

    assert (attacks.EOT_STREAM, attacks.EOT_LABEL_STREAM) == (noise.EOT_STREAM, noise.EOT_LABEL_STREAM)
    assert (adaptive.ADAPTIVE_STREAM, adaptive.ADAPTIVE_LABEL_STREAM) == (
        noise.ADAPTIVE_STREAM, noise.ADAPTIVE_LABEL_STREAM,
    )
    assert not hasattr(attacks, "smoothed_probabilities")


# -- renamed keywords (issue 20, "Names"): the old name warns and gives the same result ------
def _renamed_cases():
    from captum_fvit.evaluate import adaptive_topk, smooth_pgd

    target = [1, 0]
    common = {"eps": 4 / 255, "steps": 1, "seed": 0}
    eot = {**common, "sigma": 0.1, "n_eot": 2}
    topk = {**eot, "k": 3, "method": "raw", "n_clean": 2}
    return [
        ("pgd_attack", lambda m, x, **kw: pgd_attack(m, x, **common, **kw), "labels", "target", target),
        ("eot_pgd_attack", lambda m, x, **kw: eot_pgd_attack(m, IdentityDenoiser(), x, **eot, **kw),
         "labels", "target", target),
        ("smooth_pgd", lambda m, x, **kw: smooth_pgd(m, None, x, **eot, **kw), "labels", "target", target),
        ("smooth_pgd", lambda m, x, **kw: smooth_pgd(m, None, x, **eot, **kw), "chunk_size", "batch_size", 3),
        ("adaptive_topk", lambda m, x, **kw: adaptive_topk(m, None, x, **topk, **kw), "labels", "target", target),
        ("adaptive_topk", lambda m, x, **kw: adaptive_topk(m, None, x, **topk, **kw),
         "chunk_size", "batch_size", 3),
    ]


def _as_tensors(result):
    if isinstance(result, torch.Tensor):
        return [result]
    return [result.adversarial, result.target, result.mass_adversarial]


@pytest.mark.parametrize(
    "where, call, old, new, value", _renamed_cases(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_deprecated_keyword_warns_and_gives_the_same_result(timm_vit, clean, where, call, old, new, value):
    """``labels=`` → ``target=`` (Captum's name) and ``chunk_size=`` → ``batch_size=``: the old
    keyword warns at the caller's line and gives bit-identical results; both at once is a
    TypeError naming the new one."""
    x = clean[:2]
    expected = call(timm_vit, x, **{new: value})
    with pytest.warns(DeprecationWarning, match=f"{where}: {old}= is deprecated.*use {new}=") as record:
        legacy = call(timm_vit, x, **{old: value})
    assert all(w.filename == __file__ for w in record if issubclass(w.category, DeprecationWarning))
    for a, b in zip(_as_tensors(expected), _as_tensors(legacy), strict=True):
        assert torch.equal(a, b)
    both = {new: [2, 3] if new == "target" else 5, old: value}
    with pytest.raises(TypeError, match=f"got {new}= and its deprecated old name {old}=; pass {new}= only"):
        call(timm_vit, x, **both)


def test_target_is_where_labels_was_and_a_positional_call_still_works(timm_vit, clean):
    """The renamed keyword keeps its position: ``pgd_attack(model, x, classes, eps)``."""
    classes = torch.tensor([2, 0])
    positional = pgd_attack(timm_vit, clean[:2], classes, 4 / 255, steps=2, seed=1)
    keyword = pgd_attack(timm_vit, clean[:2], target=classes, eps=4 / 255, steps=2, seed=1)
    other = pgd_attack(timm_vit, clean[:2], target=torch.tensor([1, 1]), eps=4 / 255, steps=2, seed=1)
    assert torch.equal(positional, keyword) and not torch.equal(positional, other)


def test_result_labels_fields_are_deprecated_aliases_of_target(timm_vit, clean):
    from captum_fvit.evaluate import adaptive_topk

    result = topk_explanation_attack(AttentionMap(timm_vit, "raw").token_map, timm_vit, clean[:2], 3, steps=1)
    with pytest.warns(DeprecationWarning, match=r"ExplanationAttackResult.labels is deprecated.*\.target"):
        assert result.labels is result.target
    adaptive = adaptive_topk(timm_vit, None, clean[:2], 3, 4 / 255, 0.1, "raw", 2, steps=1, n_clean=2, seed=0)
    with pytest.warns(DeprecationWarning, match=r"AdaptiveTopKResult.labels is deprecated.*\.target"):
        assert adaptive.labels is adaptive.target


def test_an_attack_written_with_the_old_parameter_name_still_registers():
    """The registry passes ``(context, pixels, target, eps)`` positionally, so a user attack
    whose third parameter is still called ``labels`` registers and runs."""
    from captum_fvit.evaluate.attacks.registry import ATTACKS, register_attack

    def old_names(context, pixels, labels, eps, *, norm, steps, seed):
        return pixels + 0 * labels.sum()

    try:
        spec = register_attack("old_names", old_names, norms=("linf",))
        pixels = torch.rand(2, 3, 8, 8)
        assert torch.equal(spec.fn(None, pixels, torch.tensor([0, 1]), 0.1, norm="linf", steps=1, seed=0), pixels)
    finally:
        ATTACKS.pop("old_names", None)
