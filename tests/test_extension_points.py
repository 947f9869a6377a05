"""Extension points: a new explanation method, attack and denoiser plug in without touching
the library — each is written here, in one file, and registered (or passed) through the public
API; the whole pipeline (AttentionMap, DDSAttention, the evaluation harness) then uses it by
name. (A new attention adapter is tutorial 05, ``register_adapter``.) Each extension is checked
against an independent computation, not only for running."""

from __future__ import annotations

import pytest
import torch
from conftest import make_timm_vit

from captum_fvit import AttentionMap, DDSAttention
from captum_fvit.data import ShapesBenchmark
from captum_fvit.evaluate import EvaluationConfig, evaluate, topk_overlap
from captum_fvit.evaluate.attacks import ATTACKS, register_attack
from captum_fvit.explain import METHODS, TokenMapAccumulator, TokenMapMethod, register_method
from captum_fvit.noise import ESTIMATION_STREAM, draw_noise
from captum_fvit.space import resolve_normalization


class _FirstLayerRows(TokenMapAccumulator):
    def on_attention(self, layer, probs):
        if layer == 0:
            self.row = probs[:, :, self.cls_index, :].mean(dim=1)

    def result(self, layout):
        return self.row[:, layout.patch_slice]


class FirstLayerAttention(TokenMapMethod):
    """The class-token row of the first layer, heads averaged (written from scratch here)."""

    name = "first_layer_test"

    def layers(self, num_layers):
        return [0]

    def accumulator(self, num_layers, cls_index, layer_stages=None):
        return _FirstLayerRows(num_layers, cls_index, layer_stages)


@pytest.fixture
def new_method():
    register_method(FirstLayerAttention)
    yield FirstLayerAttention.name
    del METHODS[FirstLayerAttention.name]


def _timm_first_layer_rows(model, x):
    """Independent reference: the first block's attention recomputed from its weights."""
    block = model.blocks[0]
    with torch.no_grad():
        tokens = model._pos_embed(model.patch_embed(x))
        h = block.norm1(tokens)
        attn = block.attn
        b, t, c = h.shape
        qkv = attn.qkv(h).reshape(b, t, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        probs = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    return probs[:, :, 0, 1:].mean(dim=1)


def test_a_new_method_works_by_name_everywhere(new_method, images):
    model = make_timm_vit(depth=2)
    maps = AttentionMap(model, new_method).token_map(images)
    torch.testing.assert_close(maps, _timm_first_layer_rows(model, images), rtol=1e-5, atol=1e-6)
    smoothed = DDSAttention(model, None, new_method, sigma=0.1, n_samples=2).details(images, seed=0)
    assert smoothed.mean.shape == maps.shape and torch.isfinite(smoothed.mean).all()


def _fgsm(context, pixels, target, eps, *, norm, steps, seed):
    """One signed-gradient step on the plain model's cross-entropy (transfer)."""
    x = pixels.detach().requires_grad_(True)
    logits = context.model(context.normalization.from_pixels(x))
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, target), x)
    return (pixels + eps * grad.sign()).clamp(0, 1).detach()


@pytest.fixture
def new_attack():
    register_attack("fgsm_test", _fgsm, norms=("linf",), description="one FGSM step")
    yield "fgsm_test"
    del ATTACKS["fgsm_test"]


def test_a_new_attack_runs_in_the_harness_by_name(new_attack):
    model = make_timm_vit(depth=2, num_classes=6)
    dataset = ShapesBenchmark(2, image_size=32, seed=5)
    config = EvaluationConfig(
        methods=["raw"], variants=["vanilla"], eps=[4 / 255], attack=new_attack, n_samples=2,
        k=4, batch_size=2, seed=1,
    )  # fmt: skip
    result = evaluate(model, dataset, config=config, progress=False)
    (row,) = [r for r in result.rows if r["eps"] == 4 / 255 and r.get("variant") == "vanilla"]
    assert row["attack"] == new_attack and row["threat"] == "transfer"
    # The same attack by hand gives the row's top-k overlap.
    batch = dataset.batch(range(2))
    norm = resolve_normalization(model)
    pixels = batch["image"]
    target = batch["label"]
    adversarial = _fgsm(
        type("Context", (), {"model": model, "normalization": norm})(), pixels, target, 4 / 255,
        norm="linf", steps=1, seed=1,
    )  # fmt: skip
    explainer = AttentionMap(model, "raw")
    clean = explainer.token_map(norm.from_pixels(pixels))
    attacked = explainer.token_map(norm.from_pixels(adversarial))
    assert row["topk_overlap"] == pytest.approx(float(topk_overlap(clean, attacked, 4).mean()))


class Shrink:
    """A denoiser is any callable ``(x_noisy, sigma, generator) -> x`` in [0, 1] pixels."""

    def __call__(self, x, sigma, generator=None):
        return 0.5 + (x - 0.5) / (1 + 4 * sigma**2)


def test_a_new_denoiser_is_a_callable_and_dds_equals_a_plain_loop(images):
    model = make_timm_vit(depth=2)
    n, sigma = 5, 0.2
    dds = DDSAttention(model, Shrink(), "rollout", sigma=sigma, n_samples=n, batch_size=3)
    result = dds.details(images, seed=4)
    norm = resolve_normalization(model)
    pixels = norm.to_pixels(images)
    noise = draw_noise(4, 0, n, tuple(pixels.shape[1:]), sigma, stream=ESTIMATION_STREAM)
    explainer = AttentionMap(model, "rollout")
    maps = []
    for s in range(n):  # the reference: one sample at a time
        denoised = Shrink()(pixels + noise[s], sigma)
        m = explainer.token_map(norm.from_pixels(denoised)).double().clamp(min=0)
        maps.append(m / m.sum(dim=1, keepdim=True))
    torch.testing.assert_close(result.mean.double(), torch.stack(maps).mean(0), rtol=1e-5, atol=1e-7)
