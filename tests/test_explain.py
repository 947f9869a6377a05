"""Explanation methods against independent plain-loop references (numpy, one sample and one
layer at a time), batch consistency, and head fusion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from captum_fvit.attention import AttentionRecorder, TokenLayout
from captum_fvit.explain import (
    METHODS,
    TokenMapExplainer,
    attention_gradcam,
    attention_rollout,
    gradient_rollout,
    logits_of,
    make_method,
    raw_attention,
)


def _record(model, images, target):
    with AttentionRecorder(model, gradients=True) as recorder:
        logits = logits_of(model(images))
        recorder.backward(logits[torch.arange(len(images)), target].sum())
        layout = recorder.layout(images.shape[-2:])
    store = recorder.store
    layers = sorted(store.attentions)
    attns = [store.attentions[i].double().numpy() for i in layers]
    grads = [store.gradients[i].double().numpy() for i in layers]
    return attns, grads, layout


def _rollout_reference(attns, n, cls, prefix, start=0, fusion="mean"):
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}[fusion]
    tokens = attns[0].shape[-1]
    out = []
    for s in range(n):
        product = np.eye(tokens)
        for layer in range(start, len(attns)):
            a = fuse(attns[layer][s], axis=0)
            a = (a + np.eye(tokens)) / 2
            a = a / a.sum(axis=1, keepdims=True)
            product = a @ product
        out.append(product[cls, prefix:])
    return np.stack(out)


def _grad_rollout_reference(attns, grads, n, cls, prefix):
    tokens = attns[0].shape[-1]
    out = []
    for s in range(n):
        relevance = np.eye(tokens)
        for layer in range(len(attns)):
            cam = np.maximum(grads[layer][s] * attns[layer][s], 0).mean(axis=0)
            relevance = relevance + cam @ relevance
        out.append(relevance[cls, prefix:])
    return np.stack(out)


def _gradcam_reference(attns, grads, n, cls, prefix):
    out = []
    for s in range(n):
        row = attns[-1][s][:, cls, prefix:]
        grad = grads[-1][s][:, cls, prefix:]
        weights = grad.mean(axis=1, keepdims=True)
        out.append(np.maximum((weights * row).mean(axis=0), 0))
    return np.stack(out)


@pytest.mark.parametrize("fixture", ["timm_vit", "deit_distilled", "vit_registers", "hf_vit"])
def test_methods_match_plain_loop_references(fixture, request):
    model = request.getfixturevalue(fixture)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([0, 3, 1])
    attns, grads, layout = _record(model, images, target)
    n, cls, prefix = len(images), 0, layout.num_prefix_tokens

    explainers = {
        name: TokenMapExplainer(model, name) for name in ("rollout", "grad_rollout", "attn_gradcam")
    }
    got = {name: e(images, target).maps.double().numpy() for name, e in explainers.items()}
    np.testing.assert_allclose(got["rollout"], _rollout_reference(attns, n, cls, prefix), atol=1e-6)
    np.testing.assert_allclose(
        got["grad_rollout"], _grad_rollout_reference(attns, grads, n, cls, prefix), atol=1e-6
    )
    np.testing.assert_allclose(
        got["attn_gradcam"], _gradcam_reference(attns, grads, n, cls, prefix), atol=1e-6
    )
    # The functional forms on recorded maps agree with the hooked runs.
    t_attns = [torch.from_numpy(a) for a in attns]
    t_grads = [torch.from_numpy(g) for g in grads]
    np.testing.assert_allclose(attention_rollout(t_attns, layout).numpy(), got["rollout"], atol=1e-6)
    np.testing.assert_allclose(
        gradient_rollout(t_attns, t_grads, layout).numpy(), got["grad_rollout"], atol=1e-6
    )
    np.testing.assert_allclose(
        attention_gradcam(t_attns, t_grads, layout).numpy(), got["attn_gradcam"], atol=1e-6
    )


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_options_and_raw_fusion(timm_vit, images, fusion):
    attns, _, layout = _record(timm_vit, images, torch.zeros(3, dtype=torch.long))
    got = TokenMapExplainer(timm_vit, "rollout", start_layer=1, head_fusion=fusion)(images).maps
    ref = _rollout_reference(attns, 3, 0, 1, start=1, fusion=fusion)
    np.testing.assert_allclose(got.double().numpy(), ref, atol=1e-6)

    raw = TokenMapExplainer(timm_vit, "raw", head_fusion=fusion)(images).maps.double().numpy()
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}[fusion]
    np.testing.assert_allclose(raw, fuse(attns[-1][:, :, 0, 1:], axis=1), atol=1e-6)


def test_raw_attention_rows_sum_to_one_over_all_tokens(timm_vit, images):
    attns, _, layout = _record(timm_vit, images, torch.zeros(3, dtype=torch.long))
    full = TokenLayout(num_prefix_tokens=0, grid=(1, layout.num_tokens), patch_size=(8, 8))
    rows = raw_attention([torch.from_numpy(a) for a in attns], full)  # every token kept
    torch.testing.assert_close(rows.sum(-1), torch.ones(3, dtype=rows.dtype))
    patches_only = TokenMapExplainer(timm_vit, "raw")(images).maps
    assert (patches_only.sum(-1) < 1).all() and (patches_only >= 0).all()


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("fixture", ["timm_vit", "torchvision_vit", "hf_vit"])
def test_batch_equals_single_calls(method, fixture, request):
    model = request.getfixturevalue(fixture)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    explainer = TokenMapExplainer(model, method)
    batch = explainer(images)
    singles = torch.cat([explainer(images[i : i + 1]).maps for i in range(4)])
    torch.testing.assert_close(batch.maps, singles, atol=1e-6, rtol=1e-5)
    if explainer.method.class_specific:
        # target=None explains the predicted class of the same forward pass.
        assert torch.equal(batch.target, batch.logits.argmax(1))
        explicit = explainer(images, batch.logits.argmax(1)).maps
        torch.testing.assert_close(batch.maps, explicit)


def test_class_specific_maps_depend_on_the_target(timm_vit, images):
    explainer = TokenMapExplainer(timm_vit, "grad_rollout")
    a = explainer(images, 0).maps
    b = explainer(images, 1).maps
    assert not torch.allclose(a, b)


def test_unknown_method_and_bad_options():
    with pytest.raises(ValueError, match="unknown explanation method 'smoothgrad'.*rollout"):
        make_method("smoothgrad")
    with pytest.raises(ValueError, match="head_fusion"):
        make_method("raw", head_fusion="median")
    with pytest.raises(ValueError, match="bad options"):
        make_method("rollout", layer=3)


def test_start_layer_out_of_range(timm_vit):
    with pytest.raises(ValueError, match="start_layer=7"):
        TokenMapExplainer(timm_vit, "rollout", start_layer=7)


def _mean_query_references(attns, grads, prefix, fusion="mean"):
    """Plain loops for pooled models: the explained row is the mean of the patch rows."""
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}[fusion]
    n, tokens = attns[0].shape[0], attns[0].shape[-1]
    refs = {"raw": [], "rollout": [], "grad_rollout": [], "attn_gradcam": []}
    for s in range(n):
        product, relevance = np.eye(tokens), np.eye(tokens)
        for layer in range(len(attns)):
            a = attns[layer][s]
            step = (a.mean(0) + np.eye(tokens)) / 2
            product = (step / step.sum(1, keepdims=True)) @ product
            relevance = relevance + np.maximum(grads[layer][s] * a, 0).mean(0) @ relevance
        refs["rollout"].append(product[prefix:].mean(0)[prefix:])
        refs["grad_rollout"].append(relevance[prefix:].mean(0)[prefix:])
        rows = attns[-1][s][:, prefix:, :].mean(1)  # heads × T: mean query per head
        grad_rows = grads[-1][s][:, prefix:, :].mean(1)
        refs["raw"].append(fuse(rows, axis=0)[prefix:])
        weights = grad_rows[:, prefix:].mean(1, keepdims=True)
        refs["attn_gradcam"].append(np.maximum((weights * rows[:, prefix:]).mean(0), 0))
    return {k: np.stack(v) for k, v in refs.items()}


@pytest.mark.parametrize(
    "options, prefix",
    [
        (dict(class_token=False, global_pool="avg", reg_tokens=2), 2),  # pooled, registers
        (dict(class_token=False, global_pool="avg"), 0),  # pooled, no prefix at all
        (dict(class_token=True, global_pool="avg"), 1),  # class token present but unused
    ],
)
def test_pooled_vits_explain_the_mean_query(options, prefix):
    from conftest import make_timm_vit

    model = make_timm_vit(depth=3, **options)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    target = torch.tensor([2, 0, 4])
    attns, grads, layout = _record(model, images, target)
    assert layout.cls_index is None and layout.mean_query and layout.num_prefix_tokens == prefix
    refs = _mean_query_references(attns, grads, prefix)
    for method in sorted(METHODS):
        got = TokenMapExplainer(model, method)(images, target)
        assert got.layout == layout and got.maps.shape == (3, 16)
        np.testing.assert_allclose(got.maps.double().numpy(), refs[method], atol=1e-6)
    # The functional forms read the mean query from the layout as well.
    t_attns = [torch.from_numpy(a) for a in attns]
    np.testing.assert_allclose(
        attention_rollout(t_attns, layout).numpy(), refs["rollout"], atol=1e-6
    )
    max_raw = TokenMapExplainer(model, "raw", head_fusion="max")(images).maps
    np.testing.assert_allclose(
        max_raw.double().numpy(), _mean_query_references(attns, grads, prefix, "max")["raw"],
        atol=1e-6,
    )


def test_pooled_rollout_is_a_distribution_over_all_tokens():
    """Rows of rolled-out attention sum to 1, so the mean query's map over patches plus the
    register tokens' share is exactly 1 — a check independent of the loop references."""
    from conftest import make_timm_vit

    model = make_timm_vit(depth=2, class_token=False, global_pool="avg", reg_tokens=2)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    attns, _, layout = _record(model, images, torch.zeros(2, dtype=torch.long))
    full = TokenLayout(0, (1, layout.num_tokens), (8, 8), cls_index=None)
    # A layout with every token as a "patch" averages all rows: the map sums to 1.
    everything = attention_rollout([torch.from_numpy(a) for a in attns], full)
    torch.testing.assert_close(everything.sum(-1), torch.ones(2, dtype=everything.dtype))


def test_unsupported_pooling_is_refused_with_the_fix():
    from conftest import make_timm_vit

    model = make_timm_vit(depth=1, class_token=False, global_pool="max")
    with pytest.raises(ValueError, match="global_pool='max'.*global_pool='avg'"):
        TokenMapExplainer(model, "rollout")
