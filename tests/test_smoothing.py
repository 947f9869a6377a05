"""The ensemble engine: chunk-independent seeded noise, streaming statistics equal to a
plain per-sample loop, OOM halving, and the noise distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from captum_fvit.denoise import IdentityDenoiser
from captum_fvit.noise import NOISE_BLOCK, draw_noise
from captum_fvit.smoothing import SmoothingEngine
from captum_fvit.space import Normalization
from captum_fvit.stats import ClassCounts, RunningMoments, TopKVotes


@pytest.mark.parametrize("kind", ["gaussian", "laplace", "uniform"])
def test_noise_does_not_depend_on_chunking(kind):
    full = draw_noise(7, 0, 50, (3, 4, 4), 0.3, kind=kind)
    pieces = [draw_noise(7, a, b, (3, 4, 4), 0.3, kind=kind) for a, b in [(0, 1), (1, 17), (17, 50)]]
    assert torch.equal(full, torch.cat(pieces))
    assert not torch.equal(full, draw_noise(8, 0, 50, (3, 4, 4), 0.3, kind=kind))
    assert not torch.equal(full, draw_noise(7, 0, 50, (3, 4, 4), 0.3, kind=kind, stream=1))


@pytest.mark.parametrize(
    "kind, reference",
    [
        ("gaussian", sps.norm(scale=0.2)),
        ("laplace", sps.laplace(scale=0.2 / math.sqrt(2))),
        ("uniform", sps.uniform(loc=-0.2 * math.sqrt(3), scale=0.4 * math.sqrt(3))),
    ],
)
def test_noise_distributions_have_std_sigma(kind, reference):
    sample = draw_noise(0, 0, 4 * NOISE_BLOCK, (1000,), 0.2, kind=kind).flatten().double().numpy()
    assert abs(sample.std() - 0.2) < 0.005
    # Kolmogorov–Smirnov against the intended law (64,000 draws).
    assert sps.kstest(sample, reference.cdf).pvalue > 1e-4


def test_streaming_statistics_equal_plain_numpy():
    rng = np.random.default_rng(0)
    index = torch.from_numpy(rng.integers(0, 3, size=200))
    values = torch.from_numpy(rng.random((200, 6)))
    logits = torch.from_numpy(rng.normal(size=(200, 4)))
    moments = RunningMoments(3, (6,), "cpu")
    votes = TopKVotes(3, 6, 2, "cpu")
    classes = ClassCounts(3, "cpu")
    for chunk in torch.arange(200).split(37):
        moments.update(index[chunk], values[chunk])
        votes.update(index[chunk], values[chunk])
        classes.update(index[chunk], logits[chunk])
    for i in range(3):
        rows = values[index == i].numpy()
        np.testing.assert_allclose(moments.mean[i].numpy(), rows.mean(0), rtol=1e-12)
        np.testing.assert_allclose(moments.variance[i].numpy(), rows.var(0, ddof=1), rtol=1e-9)
        expected_votes = np.zeros(6, dtype=np.int64)
        for row in rows:
            expected_votes[np.argsort(-row)[:2]] += 1
        np.testing.assert_array_equal(votes.counts[i].numpy(), expected_votes)
        lg = logits[index == i].numpy()
        np.testing.assert_array_equal(
            classes.counts[i].numpy(), np.bincount(lg.argmax(1), minlength=4)
        )
    with pytest.raises(ValueError, match="must be smaller than the number of patch tokens"):
        TopKVotes(1, 6, 6, "cpu")


def _collect(engine, inputs, n, seed):
    seen = {}

    def compute(chunk):
        return chunk.inputs.clone()

    def fold(chunk, result):
        for i, s, x in zip(chunk.input_index.tolist(), chunk.sample_index.tolist(), result):
            seen[(i, s)] = x

    engine.run(inputs, n, seed, compute, fold)
    return seen


def test_engine_samples_are_input_plus_seeded_noise_whatever_the_batch_size():
    norm = Normalization((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    inputs = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    big = _collect(SmoothingEngine(IdentityDenoiser(), 0.1, norm, batch_size=64), inputs, 20, 5)
    small = _collect(SmoothingEngine(IdentityDenoiser(), 0.1, norm, batch_size=1), inputs, 20, 5)
    assert len(big) == 60 and big.keys() == small.keys()
    noise = draw_noise(5, 0, 20, (3, 8, 8), 0.1)
    pixels = norm.to_pixels(inputs)
    for (i, s), x in big.items():
        torch.testing.assert_close(small[(i, s)], x)
        # The sample is the input plus noise sample s in pixel space, back in model space.
        torch.testing.assert_close(norm.to_pixels(x[None])[0], pixels[i] + noise[s])


def test_engine_halves_the_chunk_on_out_of_memory():
    norm = Normalization.identity()
    inputs = torch.rand(2, 3, 8, 8)
    sizes = []

    def compute(chunk):
        sizes.append(len(chunk.inputs))
        if len(chunk.inputs) > 5:
            raise torch.OutOfMemoryError("simulated")
        return chunk.inputs.sum(dim=(1, 2, 3))

    totals = torch.zeros(2, dtype=torch.float64)

    def fold(chunk, result):
        totals.index_add_(0, chunk.input_index, result.double())

    engine = SmoothingEngine(IdentityDenoiser(), 0.1, norm, batch_size=16)
    with pytest.warns(RuntimeWarning, match="out of memory"):
        engine.run(inputs, 10, 3, compute, fold)
    assert sizes[:3] == [16, 8, 4] and max(sizes[2:]) <= 4
    reference = torch.zeros(2, dtype=torch.float64)

    def fold_ref(chunk, result):
        reference.index_add_(0, chunk.input_index, result.double())

    SmoothingEngine(IdentityDenoiser(), 0.1, norm, batch_size=4).run(
        inputs, 10, 3, lambda c: c.inputs.sum(dim=(1, 2, 3)), fold_ref
    )
    torch.testing.assert_close(totals, reference)


def test_engine_rejects_bad_settings():
    norm = Normalization.identity()
    with pytest.raises(ValueError, match="sigma"):
        SmoothingEngine(IdentityDenoiser(), 0.0, norm)
    with pytest.raises(ValueError, match="sigma"):
        SmoothingEngine(IdentityDenoiser(), -0.1, norm)
    with pytest.raises(ValueError, match="batch_size"):
        SmoothingEngine(IdentityDenoiser(), 0.1, norm, batch_size=0)
    with pytest.raises(ValueError, match="noise must be one of"):
        SmoothingEngine(IdentityDenoiser(), 0.1, norm, noise="cauchy")
    with pytest.raises(TypeError, match="callable"):
        SmoothingEngine("denoiser", 0.1, norm)
    engine = SmoothingEngine(IdentityDenoiser(), 0.1, norm)
    with pytest.raises(ValueError, match="n_samples"):
        engine.run(torch.rand(1, 3, 4, 4), 0, 0, lambda c: None, lambda c, r: None)


# -- the graph path ----------------------------------------------------------------------------
def _graph_engine(batch_size: int, **options) -> SmoothingEngine:
    norm = Normalization((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    return SmoothingEngine(IdentityDenoiser(), 0.1, norm, batch_size=batch_size, **options)


def test_graph_path_gradient_equals_the_closed_form_whatever_the_chunking():
    """objective = Σ w·u² over the denoised samples u (model space): its gradient with
    respect to the pixels p is Σ_s 2·w·u_s / std with u_s = (p + δ_s − mean) / std."""
    f64 = torch.float64
    inputs = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=f64)
    weights = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=f64)
    engine = _graph_engine(64)
    norm = engine.normalization
    pixels = norm.to_pixels(inputs)
    noise = draw_noise(5, 3, 13, (3, 4, 4), 0.1).double()
    mean = torch.tensor(norm.mean, dtype=torch.float64).view(1, 1, 3, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float64).view(1, 1, 3, 1, 1)
    denoised = (pixels[None] + noise[:, None] - mean) / std  # samples × inputs × C×H×W
    expected = (2 * weights * denoised / std).sum(dim=0)
    for batch_size in (1, 7, 64):
        seen = []
        gradient = _graph_engine(batch_size).run(
            inputs,
            range(3, 13),
            5,
            lambda chunk: chunk.inputs,
            lambda chunk, result: seen.append((chunk.graph, result.requires_grad, len(result))),
            graph=True,
            objective=lambda chunk, u: (weights[chunk.input_index] * u * u).sum(),
        )
        torch.testing.assert_close(gradient, expected, rtol=1e-12, atol=1e-12)
        assert all(graph and needs_grad for graph, needs_grad, _ in seen)
        assert sum(size for _, _, size in seen) == 20 and max(s for *_, s in seen) <= batch_size
    # Under no_grad too (the engine enables the graph itself), and the inputs are not touched.
    with torch.no_grad():
        again = engine.run(
            inputs, range(3, 13), 5, lambda c: c.inputs, lambda c, r: None, graph=True,
            objective=lambda chunk, u: (weights[chunk.input_index] * u * u).sum(),
        )  # fmt: skip
    torch.testing.assert_close(again, expected, rtol=1e-12, atol=1e-12)
    assert not inputs.requires_grad and inputs.grad is None


def test_graph_path_runs_in_the_models_precision_and_does_not_retry_out_of_memory():
    inputs = torch.rand(2, 3, 4, 4)
    engine = _graph_engine(16, autocast=torch.bfloat16)
    modes = []

    def record(chunk):
        modes.append((chunk.graph, torch.is_autocast_enabled("cpu")))
        return chunk.inputs

    engine.run(inputs, 2, 0, record, lambda c, r: None)
    engine.run(inputs, 2, 0, record, lambda c, r: None, graph=True,
               objective=lambda c, u: u.sum())  # fmt: skip
    assert modes == [(False, True), (True, False)]
    sizes = []

    def out_of_memory(chunk):
        sizes.append(len(chunk.inputs))
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(torch.OutOfMemoryError):
        engine.run(inputs, 10, 3, out_of_memory, lambda c, r: None, graph=True,
                   objective=lambda c, u: u.sum())  # fmt: skip
    assert sizes == [16]


def test_graph_path_checks_before_the_gradient_and_refuses_bad_use():
    from captum_fvit.errors import NonFiniteError

    inputs = torch.rand(2, 3, 4, 4)
    engine = _graph_engine(4)
    called = []

    def nan_model(chunk):
        logits = chunk.inputs.flatten(1)[:, :3] * torch.tensor([1.0, float("nan"), 1.0])
        chunk.watch("model", logits)
        return logits

    with pytest.raises(NonFiniteError, match="logits") as caught:
        engine.run(inputs, 2, 0, nan_model, lambda c, r: None, graph=True,
                   objective=lambda c, r: called.append(1) or r.sum())  # fmt: skip
    assert caught.value.stage == "model" and not called  # stopped before the backward pass
    with pytest.raises(ValueError, match="pass both"):
        engine.run(inputs, 2, 0, lambda c: c.inputs, lambda c, r: None, graph=True)
    with pytest.raises(ValueError, match="pass both"):
        engine.run(inputs, 2, 0, lambda c: c.inputs, lambda c, r: None, objective=lambda c, r: r)

    class Detaching:
        def __call__(self, x, sigma, generator=None):
            return x.detach()

    cut = SmoothingEngine(Detaching(), 0.1, Normalization.identity())
    with pytest.raises(RuntimeError, match="cut the gradient"):
        cut.run(inputs, 2, 0, lambda c: c.inputs, lambda c, r: None, graph=True,
                objective=lambda c, u: u.sum())  # fmt: skip
    # The no-graph path runs the denoiser without autograd.
    seen = []
    engine.run(inputs.requires_grad_(True), 2, 0, lambda c: seen.append(c.inputs.requires_grad),
               lambda c, r: None)  # fmt: skip
    assert seen == [False]
