"""AttentionRecorder: recorded maps equal the attention recomputed from the module's weights,
outputs are unchanged, and the model is restored exactly — also after an exception."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import make_hf_vit, make_timm_vit, make_torchvision_vit, model_state

from captum_fvit.attention import AttentionRecorder, TimmViTAdapter, TokenLayout, find_adapter
from captum_fvit.explain import logits_of


def _capture_inputs(modules):
    """Record each module's first positional input with independent hooks."""
    seen, handles = {}, []
    for i, module in enumerate(modules):

        def pre(m, args, kwargs, i=i):
            seen[i] = args[0] if args else kwargs["hidden_states"]

        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
    return seen, handles


def _softmax_attention(q, k, scale):
    return torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)


def _timm_reference(module, x):
    b, n, c = x.shape
    qkv = F.linear(x, module.qkv.weight, module.qkv.bias)
    qkv = qkv.reshape(b, n, 3, module.num_heads, c // module.num_heads).permute(2, 0, 3, 1, 4)
    q, k = module.q_norm(qkv[0]), module.k_norm(qkv[1])
    return _softmax_attention(q, k, module.scale)


def _torchvision_reference(mha, x):
    b, n, c = x.shape
    heads = mha.num_heads
    q, k, _ = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
    q = q.view(b, n, heads, c // heads).transpose(1, 2)
    k = k.view(b, n, heads, c // heads).transpose(1, 2)
    return _softmax_attention(q, k, (c // heads) ** -0.5)


def _hf_reference(module, x):
    b, n, _ = x.shape
    q = module.q_proj(x).view(b, n, -1, module.head_dim).transpose(1, 2)
    k = module.k_proj(x).view(b, n, -1, module.head_dim).transpose(1, 2)
    return _softmax_attention(q, k, module.scaling)


CASES = {
    "timm": (make_timm_vit, _timm_reference),
    "torchvision": (make_torchvision_vit, _torchvision_reference),
    "hf": (make_hf_vit, _hf_reference),
}


@pytest.mark.parametrize("family", sorted(CASES))
def test_recorded_attention_equals_softmax_of_module_weights(family, images):
    make, reference = CASES[family]
    model = make()
    modules = find_adapter(model).attention_modules(model)
    seen, handles = _capture_inputs(modules)
    try:
        with AttentionRecorder(model) as recorder, torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
    assert sorted(recorder.store.attentions) == list(range(len(modules)))
    for i, module in enumerate(modules):
        expected = reference(module, seen[i])
        got = recorder.store.attentions[i]
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.sum(-1), torch.ones_like(got.sum(-1)))


def test_timm_fused_attention_is_switched_off_only_inside(images):
    model = make_timm_vit()
    modules = find_adapter(model).attention_modules(model)
    assert all(m.fused_attn for m in modules), "timm builds these tiny models fused"
    with torch.no_grad():
        fused = model(images)
        for m in modules:
            m.fused_attn = False
        explicit = model(images)
        for m in modules:
            m.fused_attn = True
        with AttentionRecorder(model):
            assert not any(m.fused_attn for m in modules)
            recorded = model(images)
    assert all(m.fused_attn for m in modules)
    # Recording runs exactly timm's own explicit path, bit for bit ...
    assert torch.equal(recorded, explicit)
    # ... which equals the fused kernel up to float rounding.
    torch.testing.assert_close(recorded, fused, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", sorted(CASES))
def test_outputs_unchanged_by_recording(family, images):
    model = CASES[family][0]()
    with torch.no_grad():
        plain = logits_of(model(images))
        with AttentionRecorder(model):
            recorded = logits_of(model(images))
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)


def test_hf_eager_path_is_bitwise_equal(images):
    model = make_hf_vit()
    previous = model.config._attn_implementation
    with torch.no_grad():
        model.config._attn_implementation = "eager"
        eager = model(images).logits
        model.config._attn_implementation = previous
        with AttentionRecorder(model):
            assert model.config._attn_implementation == "eager"
            recorded = model(images).logits
    assert model.config._attn_implementation == previous
    assert torch.equal(recorded, eager)


@pytest.mark.parametrize("family", sorted(CASES))
@pytest.mark.parametrize("gradients", [False, True])
def test_model_restored_exactly_on_exit_and_on_exception(family, gradients, images):
    model = CASES[family][0]()
    before = model_state(model)
    with AttentionRecorder(model, gradients=gradients):
        model(images)
    assert model_state(model) == before

    class Boom(RuntimeError):
        pass

    class ExplodingListener:
        def on_attention(self, layer, probs):
            if layer == 1:
                raise Boom("raised inside the forward pass")

        def on_gradient(self, layer, grad):
            pass

    with pytest.raises(Boom):
        with AttentionRecorder(model, ExplodingListener(), gradients=gradients):
            model(images)
    assert model_state(model) == before
    # The model still works normally afterwards.
    with torch.no_grad():
        logits_of(model(images))


def test_restored_when_attach_fails_half_way(images):
    """An adapter that fails after changing two layers leaves nothing behind."""

    class FailingAdapter(TimmViTAdapter):
        def attach(self, model, layers, emit, stack):
            super().attach(model, layers[:2], emit, stack)
            raise RuntimeError("attach failed after two layers")

    model = make_timm_vit()
    before = model_state(model)
    with pytest.raises(RuntimeError, match="after two layers"):
        with AttentionRecorder(model, adapter=FailingAdapter()):
            pass
    assert model_state(model) == before
    assert all(m.fused_attn for m in TimmViTAdapter().attention_modules(model))


def test_only_requested_layers_are_unfused(images):
    model = make_timm_vit()
    modules = find_adapter(model).attention_modules(model)
    with AttentionRecorder(model, layers=[-1]) as recorder:
        assert [m.fused_attn for m in modules] == [True, True, True, False]
        with torch.no_grad():
            model(images)
    assert sorted(recorder.store.attentions) == [3]
    with pytest.raises(ValueError, match="4 attention layers"):
        AttentionRecorder(model, layers=[4])


def _copy_torchvision_into_timm(tv, vit):
    """Load a torchvision ViT's weights into an equally shaped timm ViT."""
    state = {
        "cls_token": tv.class_token,
        "pos_embed": tv.encoder.pos_embedding,
        "patch_embed.proj.weight": tv.conv_proj.weight,
        "patch_embed.proj.bias": tv.conv_proj.bias,
        "norm.weight": tv.encoder.ln.weight,
        "norm.bias": tv.encoder.ln.bias,
        "head.weight": tv.heads.head.weight,
        "head.bias": tv.heads.head.bias,
    }
    for i, layer in enumerate(tv.encoder.layers):
        p = f"blocks.{i}."
        state.update(
            {
                p + "norm1.weight": layer.ln_1.weight,
                p + "norm1.bias": layer.ln_1.bias,
                p + "attn.qkv.weight": layer.self_attention.in_proj_weight,
                p + "attn.qkv.bias": layer.self_attention.in_proj_bias,
                p + "attn.proj.weight": layer.self_attention.out_proj.weight,
                p + "attn.proj.bias": layer.self_attention.out_proj.bias,
                p + "norm2.weight": layer.ln_2.weight,
                p + "norm2.bias": layer.ln_2.bias,
                p + "mlp.fc1.weight": layer.mlp[0].weight,
                p + "mlp.fc1.bias": layer.mlp[0].bias,
                p + "mlp.fc2.weight": layer.mlp[3].weight,
                p + "mlp.fc2.bias": layer.mlp[3].bias,
            }
        )
    vit.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)


def test_attention_gradients_agree_across_families(images):
    """torchvision's gradient (derived from the module's linearity) equals timm's (autograd on
    the probability tensor itself) for the same network."""
    tv = make_torchvision_vit()
    vit = make_timm_vit(embed_dim=32, depth=3, num_heads=4, mlp_ratio=2.0)
    _copy_torchvision_into_timm(tv, vit)
    results = []
    for model in (tv, vit):
        with AttentionRecorder(model, gradients=True) as recorder:
            logits = model(images)
            recorder.backward(logits[:, 2].sum() + 0.5 * logits[:, 4].sum())
        results.append(recorder.store)
    torch.testing.assert_close(
        vit(images).detach(), tv(images).detach(), atol=1e-5, rtol=1e-5
    )
    for layer in range(3):
        torch.testing.assert_close(
            results[0].attentions[layer], results[1].attentions[layer], atol=1e-5, rtol=1e-4
        )
        torch.testing.assert_close(
            results[0].gradients[layer], results[1].gradients[layer], atol=1e-5, rtol=1e-4
        )
        assert results[1].gradients[layer].abs().max() > 0


def test_backward_leaves_parameter_grads_untouched(images):
    model = make_timm_vit()
    with AttentionRecorder(model, gradients=True) as recorder:
        recorder.backward(model(images)[:, 0].sum())
    assert all(p.grad is None for p in model.parameters())
    assert len(recorder.store.gradients) == 4


@pytest.mark.parametrize(
    "fixture, image_size, prefix, grid",
    [
        ("timm_vit", (32, 32), 1, (4, 4)),
        ("deit_distilled", (32, 32), 2, (4, 4)),
        ("vit_registers", (32, 32), 5, (4, 4)),
        ("vit_non_square", (24, 40), 1, (3, 5)),
        ("hf_deit", (32, 32), 2, (4, 4)),
        ("torchvision_vit", (32, 32), 1, (4, 4)),
    ],
)
def test_token_layout(fixture, image_size, prefix, grid, request):
    model = request.getfixturevalue(fixture)
    x = torch.randn(2, 3, *image_size)
    with AttentionRecorder(model) as recorder, torch.no_grad():
        model(x)
    layout = recorder.layout(image_size)
    assert layout == TokenLayout(num_prefix_tokens=prefix, grid=grid, patch_size=(8, 8))
    assert recorder.store.attentions[0].shape[-1] == prefix + grid[0] * grid[1]


def test_hf_vit_layout_at_another_resolution():
    model = make_hf_vit()
    x = torch.randn(1, 3, 48, 40)
    with AttentionRecorder(model) as recorder, torch.no_grad():
        model(x, interpolate_pos_encoding=True)
    assert recorder.layout((48, 40)).grid == (6, 5)


def test_unsupported_model_gets_a_clear_type_error():
    cnn = torchvision.models.resnet18(num_classes=3)
    with pytest.raises(TypeError, match="register_adapter") as info:
        AttentionRecorder(cnn)
    message = str(info.value)
    assert "timm" in message and "torchvision" in message and "transformers" in message





@pytest.mark.parametrize(
    "name", ["beit_base_patch16_224", "eva02_tiny_patch14_224", "deit3_small_patch16_224"]
)
def test_other_timm_families(name, images):
    """BEiT (relative position bias), EVA (rotary embeddings) and DeiT-III: recording runs
    timm's own explicit path bit for bit, maps are probabilities, the model is restored."""
    model = make_timm_vit(name=name, depth=2)
    modules = find_adapter(model).attention_modules(model)
    assert len(modules) == 2
    before = model_state(model)
    with torch.no_grad():
        for m in modules:
            m.fused_attn = False
        explicit = model(images)
        for m in modules:
            m.fused_attn = True
        with AttentionRecorder(model, gradients=True) as recorder:
            recorded = model(images)
    assert torch.equal(recorded, explicit)
    assert model_state(model) == before
    probs = recorder.store.attentions[1]
    assert probs.shape == (3, 3, 17, 17)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 3, 17))
    assert recorder.layout((32, 32)).grid == (4, 4)


def test_pooled_vit_layout_has_no_class_token_and_follows_the_head():
    """The explained row follows timm's head: token pooling → class token; average pooling
    (with or without a class token, e.g. BEiT) → mean query (``cls_index=None``)."""
    from captum_fvit.attention import layout_for

    cases = [
        (dict(class_token=False, global_pool="avg", reg_tokens=2), 2, None),
        (dict(class_token=True, global_pool="avg"), 1, None),
        (dict(), 1, 0),
    ]
    for options, prefix, cls in cases:
        model = make_timm_vit(depth=1, **options)
        with AttentionRecorder(model) as recorder, torch.no_grad():
            model(torch.randn(1, 3, 32, 32))
        expected = TokenLayout(
            num_prefix_tokens=prefix, grid=(4, 4), patch_size=(8, 8), cls_index=cls
        )
        assert recorder.layout((32, 32)) == expected
        assert expected.stage_grids == ((4, 4),) and expected.stage_of(0) == 0
        adapter = find_adapter(model)
        assert layout_for(model, adapter, prefix + 16, (32, 32)) == expected
    assert make_timm_vit(depth=1, name="beit_base_patch16_224").global_pool == "avg"
    beit = make_timm_vit(depth=1, name="beit_base_patch16_224")
    assert find_adapter(beit).cls_index(beit) is None


def test_layout_of_mixed_sequence_lengths_needs_a_hierarchical_adapter():
    model = make_timm_vit(depth=2)
    with pytest.raises(ValueError, match="hierarchical model needs an adapter"):
        find_adapter(model).layout(model, (32, 32), {0: 17, 1: 5})
    with pytest.raises(RuntimeError, match="no attention was recorded"):
        AttentionRecorder(model).layout((32, 32))
