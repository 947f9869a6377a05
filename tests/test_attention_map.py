"""AttentionMap as a Captum Attribution: shapes, tuple conventions, Captum metrics and
NoiseTunnel, pixel upsampling, and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from captum.attr import NoiseTunnel, visualization
from captum.metrics import infidelity, sensitivity_max
from conftest import make_timm_vit, model_state

from captum_fvit import AttentionMap, TokenLayout, tokens_to_pixels


@pytest.mark.parametrize("method", ["raw", "rollout", "grad_rollout", "attn_gradcam"])
@pytest.mark.parametrize("fixture", ["timm_vit", "torchvision_vit", "hf_vit"])
def test_attribute_shape_and_token_map(method, fixture, images, request):
    model = request.getfixturevalue(fixture)
    explainer = AttentionMap(model, method, upsample="nearest")
    attribution = explainer.attribute(images, target=1)
    assert attribution.shape == images.shape and attribution.dtype == images.dtype
    tokens = explainer.token_map(images, target=1)
    assert tokens.shape == (3, 16) and explainer.token_grid(images.shape[-2:]) == (4, 4)
    result = explainer.explain(images, target=1)
    assert result.layout.grid == (4, 4)
    torch.testing.assert_close(result.maps, tokens)
    # Nearest upsampling repeats each token over its 8×8 patch and all channels.
    expected = tokens.reshape(3, 1, 4, 4).repeat_interleave(8, 2).repeat_interleave(8, 3)
    torch.testing.assert_close(attribution, expected.expand(3, 3, 32, 32))


def test_tuple_in_tuple_out(timm_vit, images):
    explainer = AttentionMap(timm_vit)
    out = explainer.attribute((images,))
    assert isinstance(out, tuple) and len(out) == 1 and out[0].shape == images.shape
    torch.testing.assert_close(out[0], explainer.attribute(images))
    with pytest.raises(ValueError, match="additional_forward_args"):
        explainer.attribute((images, images))


def test_additional_forward_args_reach_the_model(hf_vit):
    x = torch.randn(2, 3, 48, 40)
    explainer = AttentionMap(hf_vit, "grad_rollout")
    out = explainer.attribute(x, target=0, additional_forward_args=(None, True))
    result = explainer.explain(x, target=0, additional_forward_args=(None, True))
    assert out.shape == x.shape and result.layout.grid == (6, 5)


def test_captum_metrics_and_noise_tunnel(timm_vit, images):
    explainer = AttentionMap(timm_vit, "grad_rollout")
    attribution = explainer.attribute(images, target=2)

    def perturb(x):
        noise = torch.randn_like(x) * 0.05
        return noise, x - noise

    infid = infidelity(timm_vit, perturb, images, attribution, target=2, n_perturb_samples=4)
    assert infid.shape == (3,) and torch.isfinite(infid).all()
    sens = sensitivity_max(explainer.attribute, images, target=2, n_perturb_samples=3)
    assert sens.shape == (3,) and torch.isfinite(sens).all() and (sens >= 0).all()

    tunnel = NoiseTunnel(explainer)
    smoothed = tunnel.attribute(images, nt_type="smoothgrad", nt_samples=4, stdevs=0.2, target=2)
    assert smoothed.shape == images.shape
    assert not torch.allclose(smoothed, attribution)  # noise changed something
    # With zero noise, the tunnel's average equals the plain attribution.
    still = tunnel.attribute(images, nt_type="smoothgrad", nt_samples=2, stdevs=0.0, target=2)
    torch.testing.assert_close(still, attribution, atol=1e-6, rtol=1e-5)
    assert explainer.get_name() == "AttentionMap" and not explainer.multiplies_by_inputs


def test_captum_visualization_accepts_the_attribution(timm_vit, images):
    import matplotlib

    matplotlib.use("Agg")
    attribution = AttentionMap(timm_vit).attribute(images[:1])
    figure, _ = visualization.visualize_image_attr(
        attribution[0].permute(1, 2, 0).numpy(),
        images[0].permute(1, 2, 0).numpy(),
        method="blended_heat_map",
        sign="positive",
        use_pyplot=False,
    )
    assert figure is not None


def test_tokens_to_pixels_pads_uncovered_border_with_zeros():
    layout = TokenLayout(num_prefix_tokens=1, grid=(2, 3), patch_size=(4, 4))
    maps = torch.arange(1.0, 7.0).reshape(1, 6)
    out = tokens_to_pixels(maps, layout, (10, 13), channels=2, mode="nearest")
    expected = np.zeros((10, 13))
    expected[:8, :12] = np.kron(np.arange(1.0, 7.0).reshape(2, 3), np.ones((4, 4)))
    assert out.shape == (1, 2, 10, 13)
    np.testing.assert_array_equal(out[0, 0].numpy(), expected)
    np.testing.assert_array_equal(out[0, 1].numpy(), expected)
    with pytest.raises(ValueError, match="upsample mode"):
        tokens_to_pixels(maps, layout, (8, 12), mode="area-weighted")


def test_model_restored_after_errors_inside_a_call(timm_vit, images):
    before = model_state(timm_vit)
    explainer = AttentionMap(timm_vit, "grad_rollout")
    with pytest.raises(ValueError, match="target classes"):
        explainer.attribute(images, target=99)  # fails after the forward pass
    assert model_state(timm_vit) == before
    explainer.attribute(images)
    assert model_state(timm_vit) == before


def test_bad_inputs_get_clear_errors(timm_vit, images):
    with pytest.raises(TypeError, match="not a supported Vision Transformer.*register_adapter"):
        AttentionMap(torchvision.models.resnet18(num_classes=3))
    explainer = AttentionMap(timm_vit)
    with pytest.raises(ValueError, match="4-D batch.*unsqueeze"):
        explainer.attribute(images[0])
    bad = images.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        explainer.attribute(bad)
    with pytest.raises(TypeError, match=r"uint8.*x.float\(\) / 255"):
        explainer.attribute(images.to(torch.uint8))
    with pytest.raises(ValueError, match="unknown explanation method 'gradcam'"):
        AttentionMap(timm_vit, "gradcam")
    with pytest.raises(ValueError, match="upsample"):
        AttentionMap(timm_vit, upsample="lanczos")
    with pytest.raises(ValueError, match="target has 2 entries"):
        AttentionMap(timm_vit, "grad_rollout").attribute(images, target=[0, 1])


def test_pooled_model_explains_the_mean_query():
    pooled = make_timm_vit(class_token=False, global_pool="avg", reg_tokens=2)
    explainer = AttentionMap(pooled, "rollout")
    x = torch.randn(2, 3, 32, 32)
    result = explainer.explain(x)
    assert result.layout.cls_index is None and result.maps.shape == (2, 16)
    assert explainer.attribute(x).shape == x.shape
    with pytest.raises(ValueError, match="global_pool='max'"):
        AttentionMap(make_timm_vit(class_token=False, global_pool="max"), "rollout")


def test_token_grid_without_running(vit_non_square):
    explainer = AttentionMap(vit_non_square)
    assert explainer.token_grid((24, 40)) == (3, 5)
    assert explainer.explain(torch.randn(1, 3, 24, 40)).layout.grid == (3, 5)
    # Stateless: nothing of a call is kept on the attribution object.
    before = dict(vars(explainer))
    explainer.attribute(torch.randn(1, 3, 24, 40))
    assert vars(explainer) == before
