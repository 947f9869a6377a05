"""Seeded pixel noise that does not depend on how the samples are chunked.

Noise sample ``s`` (``s = 0 .. n-1``) is the same tensor however the ensemble is split into
batches: samples are grouped in fixed *blocks* of :data:`NOISE_BLOCK` samples, and block ``b``
is drawn from a generator seeded by a hash of ``(seed, stream, b)``. A chunk covering samples
``[s0, s1)`` draws the blocks it touches and slices them. Because the noise depends on the
sample index only, every input of a batch sees the same noise draws (common random numbers):
the result for one image does not depend on the other images in its batch.

All noise is in **[0, 1] pixel units** with standard deviation σ.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "NOISE_STREAMS",
    "ESTIMATION_STREAM",
    "SELECTION_STREAM",
    "ATTACK_START_STREAM",
    "EOT_STREAM",
    "EOT_LABEL_STREAM",
    "ADAPTIVE_STREAM",
    "ADAPTIVE_LABEL_STREAM",
    "denoiser_stream",
    "stream_generator",
    "NOISE_KINDS",
    "NOISE_BLOCK",
    "SampleNoise",
    "block_seed",
    "draw_noise",
    "random_seed",
]

#: Noise distributions, each with standard deviation σ. Only "gaussian" can be certified.
NOISE_KINDS = ("gaussian", "laplace", "uniform")

#: Samples per independently seeded block.
NOISE_BLOCK = 16


#: Every noise stream, by purpose. Draws are addressed by ``(seed, stream, sample)``, so two
#: purposes sharing a number would silently correlate their noise (attack noise with
#: evaluation noise, say). A purpose gets a name and a number here, never a literal elsewhere;
#: ``tests/test_noise_streams.py`` checks that no two purposes — nor their denoiser
#: sub-streams (:func:`denoiser_stream`) — share a stream.
NOISE_STREAMS: dict[str, int] = {
    "estimation": 0,  # the samples that estimate maps, votes and class counts
    "selection": 1,  # the samples that choose the explained / certified class
    "attack_start": 5,  # random starts of the gradient attacks
    "eot": 7,  # EOT samples of the attacks on the denoised classifier
    "eot_label": 8,  # the samples that pick the label those attacks defend against
    "adaptive": 11,  # EOT samples of the adaptive attacks through DDS
    "adaptive_label": 12,  # the samples that pick the adaptive attacks' label
}

ESTIMATION_STREAM = NOISE_STREAMS["estimation"]
SELECTION_STREAM = NOISE_STREAMS["selection"]
ATTACK_START_STREAM = NOISE_STREAMS["attack_start"]
EOT_STREAM = NOISE_STREAMS["eot"]
EOT_LABEL_STREAM = NOISE_STREAMS["eot_label"]
ADAPTIVE_STREAM = NOISE_STREAMS["adaptive"]
ADAPTIVE_LABEL_STREAM = NOISE_STREAMS["adaptive_label"]

#: Offset of the denoiser's own randomness for a pixel-noise stream (:class:`SampleNoise`).
DENOISER_STREAM_OFFSET = 2_000
#: Offset of the per-chunk generator handed to denoisers without ``accepts_sample_noise``.
GENERATOR_STREAM_OFFSET = 1_000


def denoiser_stream(stream: int, *, per_sample: bool = True) -> int:
    """The stream of the denoiser's own randomness while pixel-noise stream ``stream`` runs.

    ``per_sample=True``: the base stream of a :class:`SampleNoise`; ``False``: the stream of the
    per-chunk ``torch.Generator`` given to denoisers that cannot take a :class:`SampleNoise`.
    """
    offset = DENOISER_STREAM_OFFSET if per_sample else GENERATOR_STREAM_OFFSET
    return offset + int(stream)


def stream_generator(seed: int, stream: int, index: int, device) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` for draw ``index`` of ``stream`` under ``seed``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(block_seed(seed, index, stream))
    return generator


def random_seed() -> int:
    """A fresh seed from torch's global generator (so ``torch.manual_seed`` controls it)."""
    return int(torch.randint(0, 2**62, (1,)).item())


def block_seed(seed: int, block: int, stream: int = 0) -> int:
    """Seed of one noise block, mixed with numpy's ``SeedSequence``."""
    state = np.random.SeedSequence([int(seed) & (2**63 - 1), int(stream), int(block)])
    return int(state.generate_state(1, np.uint64)[0] & np.uint64(2**63 - 1))


def _draw_block(
    kind: str, shape: tuple[int, ...], generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, device=device)
    uniform = torch.rand(shape, generator=generator, device=device)
    if kind == "uniform":
        return (2 * uniform - 1) * math.sqrt(3.0)  # unit variance
    # Laplace with unit variance (scale 1/√2) by inverting its CDF.
    centred = uniform - 0.5
    return -torch.sign(centred) * torch.log1p(-2 * centred.abs()) / math.sqrt(2.0)


def draw_noise(
    seed: int,
    start: int,
    stop: int,
    shape: tuple[int, ...],
    sigma: float,
    *,
    device: torch.device | str = "cpu",
    kind: str = "gaussian",
    stream: int = 0,
) -> torch.Tensor:
    """Noise samples ``start .. stop-1`` of a seeded sequence, ``(stop-start)×shape``.

    Parameters
    ----------
    seed : int
        Seed of the whole sequence.
    start, stop : int
        Sample range.
    shape : tuple of int
        Shape of one sample (``C×H×W``).
    sigma : float
        Standard deviation in [0, 1] pixel units.
    device : torch.device or str
        Where the noise is generated (on the GPU for GPU inputs).
    kind : {"gaussian", "laplace", "uniform"}
        Distribution, scaled to standard deviation ``sigma``.
    stream : int
        Independent sub-sequence (e.g. selection samples vs estimation samples).
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {NOISE_KINDS}, got {kind!r}")
    if not 0 <= start <= stop:
        raise ValueError(f"bad sample range [{start}, {stop})")
    device = torch.device(device)
    generator = torch.Generator(device=device)
    first, last = start // NOISE_BLOCK, (stop - 1) // NOISE_BLOCK
    blocks = []
    for block in range(first, last + 1):
        generator.manual_seed(block_seed(seed, block, stream))
        blocks.append(_draw_block(kind, (NOISE_BLOCK, *shape), generator, device))
    if not blocks:
        return torch.empty((0, *shape), device=device)
    noise = torch.cat(blocks) if len(blocks) > 1 else blocks[0]
    offset = first * NOISE_BLOCK
    return noise[start - offset : stop - offset].mul_(sigma)


class SampleNoise:
    """Standard-normal noise for a denoiser's own randomness, addressed per noise sample.

    A stochastic denoiser (exact noise matching, DDIM with ``eta > 0``) needs fresh noise for
    every image it denoises. Drawing it from one generator per chunk would make the result
    depend on how the samples are chunked; a ``SampleNoise`` instead gives row ``j`` of a
    chunk the noise of *its* sample index, drawn exactly like the pixel noise (seeded blocks of
    :data:`NOISE_BLOCK` samples), so the result is the same for any ``batch_size`` and any
    batch composition. Each call of :meth:`randn_like` uses a new sub-stream, so successive
    draws inside one denoiser call are independent.

    The smoothing engine passes one to denoisers that declare
    ``accepts_sample_noise = True`` (every denoiser of :mod:`captum_fvit.denoise` does);
    other denoisers get a ``torch.Generator`` seeded per chunk.

    Parameters
    ----------
    seed : int
        Seed of the call.
    sample_index : Tensor
        ``M`` noise-sample index of each row of the chunk being denoised.
    stream : int
        Base sub-stream (distinct from the pixel-noise streams).
    sample_range : tuple of int, optional
        ``(first, stop)`` bounds of ``sample_index`` when the caller knows them (saves a
        host–device synchronisation per draw).
    """

    def __init__(
        self,
        seed: int,
        sample_index: torch.Tensor,
        stream: int,
        sample_range: tuple[int, int] | None = None,
    ) -> None:
        self.seed = int(seed)
        self.sample_index = sample_index
        self.stream = int(stream)
        self.device = sample_index.device
        if sample_range is None:  # read from the indices (a host sync); the engine passes it
            sample_range = (int(sample_index.min()), int(sample_index.max()) + 1)
        self.first, self.stop = sample_range
        self._draws = 0

    def randn_like(self, like: torch.Tensor) -> torch.Tensor:
        """Standard-normal noise of ``like``'s shape; row ``j`` depends only on
        ``(seed, stream, draw number, sample_index[j])``."""
        if like.shape[0] != self.sample_index.shape[0]:
            raise ValueError(
                f"SampleNoise covers {self.sample_index.shape[0]} rows, asked for "
                f"{like.shape[0]}; a denoiser must draw noise for its whole batch at once"
            )
        stream = self.stream + 1_000_003 * (self._draws + 1)
        self._draws += 1
        block = draw_noise(
            self.seed, self.first, self.stop, tuple(like.shape[1:]), 1.0, device=self.device,
            stream=stream,
        )  # fmt: skip
        return block[self.sample_index - self.first].to(device=like.device, dtype=like.dtype)
