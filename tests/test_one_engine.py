"""One engine: DifferentiableDDS is a thin layer on SmoothingEngine.

At a point, its estimate equals DDSAttention's for the same seed and samples — mean maps,
top-k votes, class counts, smoothed softmax, explained class — for every method and every kind
of denoiser (none, one-shot diffusion, diffusion with exact noise matching, stochastic DDIM,
and a plain callable that gets a per-chunk generator). Its gradient does not depend on how the
samples are chunked (it equals the average of one-sample gradients), and a NaN on the graph
path stops the call naming the stage, the input and the sample.

Everything runs in float64 (a 2-layer timm ViT, a tiny UNet), so the two paths agree to
rounding and counts agree exactly.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_timm_vit, make_tiny_unet

from captum_fvit import DDSAttention
from captum_fvit.errors import NonFiniteError
from captum_fvit.differentiable import DifferentiableDDS
from captum_fvit.noise import SampleNoise, denoiser_stream

METHODS = ["raw", "rollout", "grad_rollout", "attn_gradcam"]
SIGMA, N_SAMPLES, K, N_SELECT, CHUNK = 0.1, 3, 3, 5, 4


@pytest.fixture(scope="module")
def vit():
    return make_timm_vit(depth=2).double()


@pytest.fixture(scope="module")
def unet():
    return make_tiny_unet(attention=False).double()


class NoisyShrink:
    """A plain callable without ``accepts_sample_noise``: it draws from the generator the
    engine seeds per chunk, and is differentiable."""

    def __call__(self, x, sigma, generator=None):
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return 0.9 * x + 0.05 + 0.02 * noise


def make_denoiser(kind: str, unet):
    from diffusers import DDPMScheduler

    from captum_fvit.denoise import DiffusionDenoiser

    scheduler = DDPMScheduler(num_train_timesteps=1000)
    return {
        "identity": lambda: None,
        "one_shot": lambda: DiffusionDenoiser(unet, scheduler),
        "exact_noise_match": lambda: DiffusionDenoiser(unet, scheduler, exact_noise_match=True),
        "ddim_eta": lambda: DiffusionDenoiser(unet, scheduler, num_steps=3, eta=0.7),
        "custom": NoisyShrink,
    }[kind]()


DENOISERS = ["identity", "one_shot", "exact_noise_match", "ddim_eta", "custom"]


def _pixels() -> torch.Tensor:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return 0.1 + 0.8 * x


@pytest.mark.parametrize("kind", DENOISERS)
@pytest.mark.parametrize("method", METHODS)
def test_differentiable_estimate_equals_dds_attention(vit, unet, method, kind):
    denoiser = make_denoiser(kind, unet)
    x = _pixels()
    dds = DifferentiableDDS(vit, denoiser, method, SIGMA, batch_size=CHUNK, n_select=N_SELECT)
    est = dds.estimate(x, N_SAMPLES, seed=5, k=K)
    reference = DDSAttention(
        vit, denoiser, method, sigma=SIGMA, n_samples=N_SAMPLES, batch_size=CHUNK,
        n_select=N_SELECT, k=K, autocast=False,
    ).details(dds.normalization.from_pixels(x), seed=5)  # fmt: skip
    torch.testing.assert_close(est.maps[method], reference.mean, rtol=0, atol=1e-10)
    torch.testing.assert_close(est.variance[method], reference.variance, rtol=0, atol=1e-10)
    assert torch.equal(est.votes[method], reference.votes) and est.k == reference.k == K
    assert torch.equal(est.class_counts, reference.class_counts)
    torch.testing.assert_close(est.mean_softmax, reference.mean_softmax, rtol=0, atol=1e-10)
    assert torch.equal(est.predicted, reference.predicted)
    if dds.class_specific:  # both explain the smoothed prediction of the selection samples
        assert torch.equal(est.target, reference.target)
    else:
        assert est.target is None and reference.target is None
    assert est.votes[method].sum(1).eq(N_SAMPLES * K).all()
    # The comparison has teeth: another seed gives other maps.
    other = dds.estimate(x, N_SAMPLES, seed=6)
    assert not torch.allclose(other.maps[method], est.maps[method], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["exact_noise_match", "ddim_eta", "custom"])
def test_the_stochastic_denoisers_really_use_their_randomness(unet, kind):
    """Otherwise the equality above would not test that both paths give the denoiser the same
    noise (the same SampleNoise stream, the same per-chunk generator)."""
    denoiser = make_denoiser(kind, unet)
    x = _pixels()
    index = torch.arange(2)
    if kind == "custom":
        draws = [torch.Generator().manual_seed(s) for s in (0, 1)]
    else:
        draws = [SampleNoise(0, index, denoiser_stream(s)) for s in (0, 1)]
    with torch.no_grad():
        a, b = (denoiser(x, SIGMA, g) for g in draws)
    assert (a - b).abs().max() > 1e-4


def test_several_methods_on_one_set_of_samples_equal_each_method_alone(vit, unet):
    denoiser = make_denoiser("one_shot", unet)
    x = _pixels()
    together = DifferentiableDDS(vit, denoiser, METHODS, SIGMA, batch_size=5).estimate(
        x, N_SAMPLES, seed=2, target=torch.tensor([1, 3])
    )
    for method in METHODS:
        alone = DifferentiableDDS(vit, denoiser, method, SIGMA, batch_size=2).estimate(
            x, N_SAMPLES, seed=2, target=torch.tensor([1, 3])
        )
        torch.testing.assert_close(together.maps[method], alone.maps[method], rtol=0, atol=1e-10)
        assert torch.equal(together.class_counts, alone.class_counts)


@pytest.mark.parametrize("kind", ["identity", "exact_noise_match"])
def test_gradient_does_not_depend_on_the_chunk_size(vit, unet, kind):
    """Chunks of 1, 3 and 7 images give the same EOT gradient, which is also the average of
    the one-sample gradients of samples 0, 1, 2 taken one call each."""
    denoiser = make_denoiser(kind, unet)
    x = _pixels()
    weights = torch.randn(2, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    target = torch.tensor([1, 3])
    objective = dict(map_weights={"grad_rollout": weights}, prob_weights=weights[:, :5])
    grads = []
    for chunk in (1, 3, 7):
        dds = DifferentiableDDS(vit, denoiser, ["grad_rollout", "raw"], SIGMA, batch_size=chunk)
        grads.append(dds.gradient(x, N_SAMPLES, seed=4, target=target, **objective).grad)
    assert grads[0].abs().max() > 1e-6
    for other in grads[1:]:
        torch.testing.assert_close(other, grads[0], rtol=1e-9, atol=1e-12)
    one_at_a_time = sum(
        dds.gradient(x, 1, seed=4, target=target, start=s, **objective).grad
        for s in range(N_SAMPLES)
    ) / N_SAMPLES
    torch.testing.assert_close(one_at_a_time, grads[0], rtol=1e-9, atol=1e-12)


class NaNForSecondInput:
    """Differentiable; NaN for every sample of input 1."""

    accepts_sample_noise = True

    def __call__(self, x, sigma, generator=None):
        bad = torch.zeros_like(x, dtype=torch.bool)
        bad[1::2] = True  # rows alternate input 0, input 1 within a sample
        return torch.where(bad, torch.full_like(x, float("nan")), x * 1.0)


def test_nan_from_the_denoiser_on_the_graph_path_names_the_stage(vit):
    dds = DifferentiableDDS(vit, NaNForSecondInput(), "grad_rollout", SIGMA, batch_size=4)
    x = _pixels()
    with pytest.raises(NonFiniteError, match="denoiser") as caught:
        dds.gradient(x, 2, seed=0, target=torch.tensor([0, 1]), map_weights={
            "grad_rollout": torch.ones(2, 16, dtype=torch.float64)
        })  # fmt: skip
    error = caught.value
    assert (error.stage, error.input_index, error.sample_index) == ("denoiser", 1, 0)
    with pytest.raises(NonFiniteError, match="denoiser"):  # and on the estimate path
        dds.estimate(x, 2, seed=0, target=torch.tensor([0, 1]))


def test_a_denoiser_that_cuts_the_gradient_is_refused(vit):
    class Detaching:
        def __call__(self, x, sigma, generator=None):
            return x.detach()

    dds = DifferentiableDDS(vit, Detaching(), "raw", SIGMA)
    with pytest.raises(RuntimeError, match="cut the gradient"):
        dds.gradient(_pixels(), 2, seed=0, map_weights={"raw": torch.ones(2, 16)})


@pytest.mark.parametrize("method", ["rollout", "grad_rollout"])
def test_pooled_vits_are_explained_by_the_mean_query_on_both_paths(method):
    """A ViT without a class token: both paths explain the mean query, and the adaptive
    EOT-PGD (built on DifferentiableDDS) runs on it instead of refusing it."""
    from captum_fvit.denoise import IdentityDenoiser
    from captum_fvit.evaluate import eot_pgd_attack

    pooled = make_timm_vit(depth=2, class_token=False, global_pool="avg").double()
    x = _pixels()
    dds = DifferentiableDDS(pooled, None, method, SIGMA, batch_size=CHUNK, n_select=N_SELECT)
    est = dds.estimate(x, N_SAMPLES, seed=5, k=K)
    reference = DDSAttention(
        pooled, None, method, sigma=SIGMA, n_samples=N_SAMPLES, batch_size=CHUNK,
        n_select=N_SELECT, k=K, autocast=False,
    ).details(dds.normalization.from_pixels(x), seed=5)  # fmt: skip
    torch.testing.assert_close(est.maps[method], reference.mean, rtol=0, atol=1e-10)
    assert torch.equal(est.votes[method], reference.votes)
    adversarial = eot_pgd_attack(
        pooled, IdentityDenoiser(), dds.normalization.from_pixels(x), eps=4 / 255, sigma=SIGMA, n_eot=2,
        steps=2, normalization=dds.normalization, seed=0,
    )  # fmt: skip
    moved = dds.normalization.to_pixels(adversarial) - x
    assert moved.abs().max() > 0 and moved.abs().max() <= 4 / 255 + 1e-9


def test_chunk_size_is_the_deprecated_name_of_batch_size(vit):
    """``DifferentiableDDS(chunk_size=)`` warns at the caller and gives the same estimate and
    gradient bit for bit; ``.chunk_size`` warns and reads ``.batch_size``; both names at once
    is a TypeError."""
    x = _pixels()
    target = torch.tensor([1, 3])
    new = DifferentiableDDS(vit, None, "grad_rollout", SIGMA, batch_size=2)
    with pytest.warns(DeprecationWarning, match="DifferentiableDDS: chunk_size= is deprecated") as record:
        old = DifferentiableDDS(vit, None, "grad_rollout", SIGMA, chunk_size=2)
    assert record[0].filename == __file__
    assert old.batch_size == new.batch_size == old.engine.batch_size == 2
    a, b = new.estimate(x, N_SAMPLES, seed=1, target=target), old.estimate(x, N_SAMPLES, seed=1, target=target)
    assert torch.equal(a.maps["grad_rollout"], b.maps["grad_rollout"])
    weights = {"grad_rollout": torch.ones(2, 16, dtype=torch.float64)}
    ga = new.gradient(x, N_SAMPLES, seed=1, target=target, map_weights=weights).grad
    gb = old.gradient(x, N_SAMPLES, seed=1, target=target, map_weights=weights).grad
    assert torch.equal(ga, gb) and ga.abs().max() > 0
    with pytest.warns(DeprecationWarning, match=r"DifferentiableDDS.chunk_size is deprecated.*\.batch_size"):
        assert new.chunk_size == 2
    with pytest.raises(TypeError, match="pass batch_size= only"):
        DifferentiableDDS(vit, None, "raw", SIGMA, batch_size=4, chunk_size=2)
