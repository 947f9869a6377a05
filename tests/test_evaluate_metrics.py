"""Evaluation metrics against independent references: SciPy (Spearman, Jensen–Shannon),
scikit-learn (average precision), NumPy (trapezoid) and small cases computed by hand
(top-k sets, pixel accuracy, cumulative mIoU, masked pixels, certified curves)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import Saliency
from captum.metrics import infidelity
from scipy.spatial.distance import jensenshannon
from scipy.stats import spearmanr

from captum_fvit import AttentionMap, DDSAttention, IdentityDenoiser, Normalization
from captum_fvit.evaluate import (
    SegmentationAccumulator,
    average_precision,
    certified_curves,
    certified_fraction,
    gaussian_perturbation,
    infidelity_score,
    jsd,
    perturbation_test,
    segmentation_test,
    sensitivity_score,
    spearman,
    topk_mass,
    topk_overlap,
    tvd,
    uniform_perturbation,
)
from captum_fvit.space import resolve_normalization


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# -- top-k overlap ------------------------------------------------------------------------
def test_topk_overlap_counts_sets_not_positions():
    """T_2(a) = {0, 1} = T_2(b), but the sorted index lists [0, 1] and [1, 0] match at no
    position: as sets V_2 = 1 (position-by-position would say 0). For k = 3 the sets
    {0, 1, 2} and {0, 1, 3} share 2 tokens."""
    a = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    b = torch.tensor([[3.0, 4.0, 1.0, 2.0, 0.0]])
    assert topk_overlap(a, b, 2).item() == 1.0
    assert topk_overlap(a, b, 3).item() == pytest.approx(2 / 3)
    assert topk_overlap(a, b, 5).item() == 1.0
    assert topk_overlap(a, -a, 2).item() == 0.0


def test_topk_overlap_matches_a_set_reference_on_pixel_maps():
    a, b = _rand(4, 3, 6, 6, seed=1), _rand(4, 3, 6, 6, seed=2)
    b[0] = a[0] * 2 + 1  # same order: overlap 1
    for k in (1, 7, 50):
        got = topk_overlap(a, b, k)
        expected = []
        for i in range(4):
            fa = a[i].flatten().numpy()
            fb = b[i].flatten().numpy()
            sa = set(np.argsort(-fa)[:k].tolist())
            sb = set(np.argsort(-fb)[:k].tolist())
            expected.append(len(sa & sb) / k)
        np.testing.assert_allclose(got.numpy(), expected)
    assert topk_overlap(a, b, 10)[0] == 1.0


def test_topk_overlap_ties_break_towards_lower_index():
    a = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    # T_2(a) = {0, 1}, T_2(b) = {1, 2}.
    assert topk_overlap(a, b, 2).item() == 0.5


@pytest.mark.parametrize("k", [0, 6, -1])
def test_topk_overlap_rejects_k_out_of_range(k):
    with pytest.raises(ValueError, match=r"k must lie in \[1, 5\]"):
        topk_overlap(torch.rand(2, 5), torch.rand(2, 5), k)


def test_topk_overlap_rejects_non_integer_k():
    with pytest.raises(TypeError, match="integer"):
        topk_overlap(torch.rand(2, 5), torch.rand(2, 5), 2.5)


# -- Spearman, JSD, TVD -------------------------------------------------------------------
def test_spearman_matches_scipy_with_ties():
    generator = torch.Generator().manual_seed(3)
    a = torch.randint(0, 4, (5, 40), generator=generator).float()
    b = torch.randint(0, 4, (5, 40), generator=generator).float()
    b[1] = a[1] * 3 - 2  # monotone: ρ = 1
    got = spearman(a, b)
    expected = [spearmanr(a[i].numpy(), b[i].numpy()).statistic for i in range(5)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert got[1].item() == pytest.approx(1.0)
    assert spearman(a, -a)[0].item() == pytest.approx(-1.0)


def test_spearman_is_nan_for_a_constant_map():
    a = torch.tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
    b = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    got = spearman(a, b)
    assert torch.isnan(got[0]) and got[1].item() == pytest.approx(-1.0)


def test_jsd_matches_scipy_squared_distance_with_zeros_and_negatives():
    a = torch.tensor([[0.0, 1.0, 3.0, 0.0], [2.0, -1.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    b = torch.tensor([[0.5, 0.0, 3.0, 0.0], [0.0, 0.0, 5.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    got = jsd(a, b)
    pa, pb = a.clamp(min=0).double().numpy(), b.clamp(min=0).double().numpy()
    # SciPy returns the Jensen–Shannon *distance*: the square root of the divergence.
    expected = [jensenshannon(pa[i], pb[i]) ** 2 for i in range(3)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-12)
    bits = jsd(a, b, base=2)
    expected_bits = [jensenshannon(pa[i], pb[i], base=2) ** 2 for i in range(3)]
    np.testing.assert_allclose(bits.numpy(), expected_bits, rtol=1e-9, atol=1e-12)
    # Disjoint supports: the maximum, ln 2 nats.
    disjoint = jsd(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    assert disjoint.item() == pytest.approx(np.log(2))


def test_tvd_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 3.0], [2.0, 2.0]])
    b = torch.tensor([[0.0, 1.0], [3.0, 1.0], [5.0, 5.0]])
    np.testing.assert_allclose(tvd(a, b).numpy(), [1.0, 0.5, 0.0])


def test_distribution_metrics_reject_maps_without_positive_mass():
    with pytest.raises(ValueError, match=r"rows \[1\] of b have no positive entry"):
        jsd(torch.ones(2, 3), torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, -2.0]]))


def test_topk_mass_is_the_normalised_share():
    maps = torch.tensor([[1.0, 1.0, 2.0, -4.0]])
    assert topk_mass(maps, torch.tensor([[2]])).item() == pytest.approx(0.5)


@pytest.mark.parametrize("metric", [spearman, jsd, tvd, lambda a, b: topk_overlap(a, b, 1)])
def test_metrics_reject_bad_inputs(metric):
    with pytest.raises(ValueError, match=r"same shape, got \(2, 4\) and \(2, 5\)"):
        metric(torch.rand(2, 4), torch.rand(2, 5))
    with pytest.raises(ValueError, match="empty"):
        metric(torch.rand(0, 4), torch.rand(0, 4))
    bad = torch.rand(2, 4)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite values \(rows \[1\]\)"):
        metric(bad, torch.rand(2, 4))
    with pytest.raises(ValueError, match="batch dimension"):
        metric(torch.rand(4), torch.rand(4))


# -- segmentation test --------------------------------------------------------------------
def _hand_case():
    maps = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[3.0, 3.0], [0.0, 0.0]]])
    masks = torch.tensor([[[0, 1], [1, 1]], [[1, 0], [0, 0]]])
    return maps, masks


def test_segmentation_by_hand():
    """Normalised maps [0, ⅓, ⅔, 1] and [1, 1, 0, 0] binarise at their mean ½ to
    [0, 0, 1, 1] and [1, 1, 0, 0]. Correct pixels 3 + 3 of 8. Background: intersections
    1 + 2, unions 2 + 3; foreground: 2 + 1 over 3 + 2, so the cumulative mIoU is 0.6 (the
    mean of per-image mIoUs would be 7/12). AP: 1 (all foreground ranked first) and ½
    (the tie {1, 1} holds one positive and one negative)."""
    maps, masks = _hand_case()
    result = segmentation_test(maps, masks)
    assert result.pixel_accuracy == pytest.approx(0.75)
    np.testing.assert_allclose(result.iou.numpy(), [0.6, 0.6])
    assert result.miou == pytest.approx(0.6)
    np.testing.assert_allclose(result.ap.numpy(), [1.0, 0.5])
    assert result.mean_ap == pytest.approx(0.75)
    assert result.n_images == 2


def test_segmentation_streaming_equals_one_shot_and_upsamples_token_maps():
    generator = torch.Generator().manual_seed(5)
    tokens = torch.rand(6, 16, generator=generator)
    masks = torch.rand(6, 32, 32, generator=generator) > 0.7
    accumulator = SegmentationAccumulator(grid=(4, 4))
    accumulator.update(tokens[:2], masks[:2])
    accumulator.update(tokens[2:], masks[2:])
    streamed = accumulator.compute()
    one_shot = segmentation_test(tokens, masks)  # 16 tokens: a square 4×4 grid
    assert streamed.pixel_accuracy == pytest.approx(one_shot.pixel_accuracy)
    assert streamed.miou == pytest.approx(one_shot.miou)
    torch.testing.assert_close(streamed.ap, one_shot.ap)
    # The same as passing the bilinearly upsampled pixel maps (with 3 identical channels).
    pixels = torch.nn.functional.interpolate(
        tokens.double().view(6, 1, 4, 4), size=(32, 32), mode="bilinear", align_corners=False
    )
    as_pixels = segmentation_test(pixels.expand(6, 3, 32, 32), masks)
    assert as_pixels.pixel_accuracy == pytest.approx(one_shot.pixel_accuracy)
    torch.testing.assert_close(as_pixels.ap, one_shot.ap)


def test_segmentation_ap_matches_sklearn():
    from sklearn import metrics as sklearn_metrics
    generator = torch.Generator().manual_seed(6)
    maps = torch.randint(0, 7, (5, 12, 12), generator=generator).float()  # many ties
    masks = torch.rand(5, 12, 12, generator=generator) > 0.6
    result = segmentation_test(maps, masks)
    expected = [
        sklearn_metrics.average_precision_score(masks[i].flatten(), maps[i].flatten())
        for i in range(5)
    ]
    np.testing.assert_allclose(result.ap.numpy(), expected, rtol=1e-12)
    assert result.mean_ap == pytest.approx(np.mean(expected))
    # Chefer et al.'s code: AP over (1 - map vs background) ++ (map vs foreground).
    two_class = segmentation_test(maps, masks, ap_mode="two_class")
    for i in range(5):
        flat = maps[i].flatten().double()
        norm = (flat - flat.min()) / (flat.max() - flat.min())
        scores = torch.cat([1 - norm, norm]).numpy()
        targets = torch.cat([~masks[i].flatten(), masks[i].flatten()]).numpy()
        assert two_class.ap[i].item() == pytest.approx(
            sklearn_metrics.average_precision_score(targets, scores), rel=1e-9
        )


def test_average_precision_skips_unlabelled_entries():
    from sklearn import metrics as sklearn_metrics
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5]])
    targets = torch.tensor([[False, True, False, True, True]])
    weights = torch.tensor([[False, True, True, True, True]])
    got = average_precision(scores, targets, weights)
    expected = sklearn_metrics.average_precision_score([1, 0, 1, 1], [0.8, 0.7, 0.6, 0.5])
    assert got.item() == pytest.approx(expected)


def test_segmentation_ignore_index_leaves_pixels_out():
    maps, masks = _hand_case()
    masks = masks.clone()
    masks[0, 0, 1] = 255  # the one wrong pixel of image 0
    result = segmentation_test(maps, masks, ignore_index=255)
    assert result.pixel_accuracy == pytest.approx(6 / 7)


def test_segmentation_rejects_bad_masks():
    maps, masks = _hand_case()
    with pytest.raises(ValueError, match=r"masks are 2x2 pixels but the maps are 4x4"):
        segmentation_test(torch.rand(2, 4, 4), masks)
    with pytest.raises(ValueError, match="masks hold 1 images but maps hold 2"):
        segmentation_test(maps, masks[:1])
    with pytest.raises(ValueError, match=r"0 \(background\) and 1 \(foreground\) only"):
        segmentation_test(maps, masks * 3)
    with pytest.raises(ValueError, match="empty"):
        segmentation_test(torch.rand(0, 2, 2), torch.zeros(0, 2, 2))
    with pytest.raises(ValueError, match="not a square grid"):
        segmentation_test(torch.rand(2, 6), torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="ap_mode"):
        SegmentationAccumulator(ap_mode="chefer")
    with pytest.raises(ValueError, match="call update"):
        SegmentationAccumulator().compute()


# -- perturbation test --------------------------------------------------------------------
class SpyModel(torch.nn.Module):
    """Records its inputs; predicts class 1 when the mean pixel (model space) is > 0.3."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        score = x.flatten(1).mean(dim=1) - 0.3
        return torch.stack([torch.zeros_like(score), score], dim=1)


def test_perturbation_masks_the_right_pixels_in_pixel_space():
    """With maps ranking pixels 15, 14, …, 0, removing ½ sets pixels 8..15 of the *masked*
    image to the baseline in pixel space; the masked image is not the map's image."""
    norm = Normalization((0.5,), (0.25,))
    model = SpyModel()
    pixels = torch.full((1, 1, 4, 4), 0.8)
    maps = torch.arange(16.0).view(1, 4, 4)  # computed on some other image
    perturbation_test(
        model,
        norm.from_pixels(pixels),
        maps,
        labels=[1],
        fractions=(0.0, 0.5),
        baseline=0.1,
        normalization=norm,
    )
    masked = norm.to_pixels(torch.cat(model.seen))  # [p=0, p=0.5]
    torch.testing.assert_close(masked[0], pixels[0])
    expected = pixels[0].clone().flatten()
    expected[8:] = 0.1
    torch.testing.assert_close(masked[1].flatten(), expected)
    model.seen.clear()
    perturbation_test(
        model,
        norm.from_pixels(pixels),
        maps,
        labels=[1],
        mode="negative",
        fractions=(0.25,),
        normalization=norm,
    )
    expected = pixels[0].clone().flatten()
    expected[:4] = 0.0  # the four least relevant pixels, set to black
    torch.testing.assert_close(norm.to_pixels(model.seen[0]).flatten(), expected)


def test_perturbation_accuracy_and_auc_by_hand():
    """Image 0 (all pixels 1) stays class 1 while its mean is > 0.3: removing 0..6 tenths of
    10 pixels leaves means 1, .9, …, .4 (correct), then .3, .2, .1 (wrong). Image 1 has
    pixels 0.32 and is class 1 only unmasked (one removed pixel leaves a mean of 0.288)."""
    model = SpyModel()
    pixels = torch.stack([torch.ones(1, 1, 10), torch.full((1, 1, 10), 0.32)])
    maps = torch.rand(2, 1, 10, generator=torch.Generator().manual_seed(0))
    result = perturbation_test(
        model, pixels, maps, labels=[1, 1], normalization=Normalization.identity(1), batch_size=3
    )
    expected = np.array([1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(result.accuracy.numpy(), expected)
    assert result.auc == pytest.approx(np.trapezoid(expected, np.arange(10) / 10))
    assert result.correct.shape == (10, 2)
    np.testing.assert_array_equal(result.removed.numpy(), np.arange(10))


def test_perturbation_on_a_vit_is_batched_consistently(timm_vit):
    norm = resolve_normalization(timm_vit)
    images = norm.from_pixels(_rand(3, 3, 32, 32, seed=4))
    maps = AttentionMap(timm_vit, "rollout").token_map(images)
    one = perturbation_test(timm_vit, images, maps, batch_size=1, fractions=(0, 0.3, 0.9))
    many = perturbation_test(timm_vit, images, maps, batch_size=64, fractions=(0, 0.3, 0.9))
    assert torch.equal(one.correct, many.correct)
    assert one.accuracy[0] == 1.0  # default labels: the unmasked prediction


def test_perturbation_rejects_bad_inputs(timm_vit, images):
    maps = torch.rand(3, 16)
    with pytest.raises(ValueError, match="maps hold 2 images but inputs hold 3"):
        perturbation_test(timm_vit, images, maps[:2])
    with pytest.raises(ValueError, match=r"maps are 64x64 pixels but the images are 32x32"):
        perturbation_test(timm_vit, images, torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="mode must be one of"):
        perturbation_test(timm_vit, images, maps, mode="both")
    with pytest.raises(ValueError, match="strictly increasing"):
        perturbation_test(timm_vit, images, maps, fractions=(0.5, 0.1))
    with pytest.raises(ValueError, match="baseline has 2 values"):
        perturbation_test(timm_vit, images, maps, baseline=(0.0, 0.0))
    with pytest.raises(ValueError, match="empty batch"):
        perturbation_test(timm_vit, images[:0], maps[:0])


# -- Captum metrics -----------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
def test_infidelity_score_equals_captum_with_pixel_noise(timm_vit):
    """An independent perturbation function (noise in pixel units divided by std = 0.5)
    given to captum.metrics.infidelity reproduces infidelity_score."""
    norm = resolve_normalization(timm_vit)
    images = norm.from_pixels(_rand(2, 3, 32, 32, seed=7))
    target = timm_vit(images).argmax(dim=1)
    attributions = Saliency(timm_vit).attribute(images, target=target)
    got = infidelity_score(
        Saliency(timm_vit), timm_vit, images, sigma=0.03, n_perturb_samples=4, seed=3
    )
    generator = torch.Generator().manual_seed(3)

    def reference_perturb(x):
        noise = torch.randn(x.shape, generator=generator) * 0.03 / 0.5
        return noise, x - noise

    expected = infidelity(
        timm_vit,
        reference_perturb,
        images,
        attributions,
        target=target,
        n_perturb_samples=4,
        normalize=True,
    )
    torch.testing.assert_close(got, expected)


def test_pixel_perturbations_are_in_pixel_units():
    norm = Normalization((0.5, 0.5, 0.5), (0.5, 0.25, 0.1))
    x = torch.zeros(4000, 3, 2, 2)
    noise, perturbed = gaussian_perturbation(0.02, norm, seed=0)(x)
    pixel_std = (noise * torch.tensor([0.5, 0.25, 0.1]).view(1, 3, 1, 1)).std(dim=(0, 2, 3))
    np.testing.assert_allclose(pixel_std.numpy(), 0.02, rtol=0.05)
    torch.testing.assert_close(perturbed, -noise)
    moved = uniform_perturbation(norm, seed=0)(x, 0.03)
    in_pixels = (moved * torch.tensor([0.5, 0.25, 0.1]).view(1, 3, 1, 1)).abs()
    assert in_pixels.max() <= 0.03 + 1e-7 and in_pixels.max() > 0.029


def test_sensitivity_score_is_reproducible_for_dds(timm_vit):
    norm = resolve_normalization(timm_vit)
    images = norm.from_pixels(_rand(2, 3, 32, 32, seed=8))
    dds = DDSAttention(timm_vit, IdentityDenoiser(), "raw", sigma=0.1, n_samples=2)
    kwargs = dict(perturb_radius=0.02, n_perturb_samples=2, explain_kwargs={"seed": 0})
    first = sensitivity_score(dds, timm_vit, images, **kwargs)
    second = sensitivity_score(dds, timm_vit, images, **kwargs)
    assert first.shape == (2,) and (first > 0).all()
    torch.testing.assert_close(first, second)
    with pytest.raises(ValueError, match="perturb_radius"):
        sensitivity_score(dds, timm_vit, images, perturb_radius=-1.0)


# -- certified curves ---------------------------------------------------------------------
def test_certified_curves_by_hand():
    radii = [0.0, float("nan"), 0.15, 0.35, float("inf")]
    grid = [0.0, 0.15, 0.2, 0.5]
    np.testing.assert_allclose(certified_fraction(radii, grid).numpy(), [0.6, 0.6, 0.4, 0.2])
    correct = [True, True, True, False, True]
    np.testing.assert_allclose(
        certified_fraction(radii, grid, correct=correct).numpy(), [0.4, 0.4, 0.2, 0.2]
    )
    curves = certified_curves(np.array(radii), torch.tensor([0.25, 0.0, 0.0, 0.4, 0.15]), num=5)
    np.testing.assert_allclose(curves.radius.numpy(), [0.0, 0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(curves.pred.numpy(), [0.6, 0.6, 0.4, 0.2, 0.2])
    np.testing.assert_allclose(curves.beta.numpy(), [0.6, 0.6, 0.4, 0.4, 0.2])
    assert curves.n_images == 5


def test_certified_curves_reject_bad_radii():
    with pytest.raises(ValueError, match="negative radii"):
        certified_fraction([0.1, -0.2], [0.0])
    with pytest.raises(ValueError, match="empty"):
        certified_fraction([], [0.0])
    with pytest.raises(ValueError, match="r_beta has 2 radii and r_pred 3"):
        certified_curves([0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="sorted"):
        certified_fraction([0.1], [0.2, 0.1])
