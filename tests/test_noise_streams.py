"""The noise-stream registry: no two purposes share a stream, and no stream number is a literal
outside ``captum_fvit/noise.py``."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from captum_fvit import noise
from captum_fvit.noise import (
    NOISE_BLOCK,
    NOISE_STREAMS,
    SampleNoise,
    denoiser_stream,
    draw_noise,
)

PACKAGE = Path(noise.__file__).parent


def test_no_two_purposes_share_a_stream():
    numbers = list(NOISE_STREAMS.values())
    assert len(set(numbers)) == len(numbers), NOISE_STREAMS
    derived = {denoiser_stream(s) for s in numbers} | {
        denoiser_stream(s, per_sample=False) for s in numbers
    }
    # The denoiser's sub-streams are distinct from each other and from every pixel stream.
    assert len(derived) == 2 * len(numbers)
    assert not derived & set(numbers)


def test_streams_give_independent_noise():
    """Every registered purpose draws different noise for the same seed and samples."""
    draws = {
        name: draw_noise(3, 0, NOISE_BLOCK, (1, 2, 2), 1.0, stream=stream)
        for name, stream in NOISE_STREAMS.items()
    }
    names = list(draws)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.equal(draws[a], draws[b]), (a, b)


def test_sample_noise_draws_differ_from_pixel_noise():
    index = torch.arange(4)
    sample_noise = SampleNoise(3, index, stream=denoiser_stream(0)).randn_like(torch.empty(4, 1, 2, 2))
    pixel = draw_noise(3, 0, 4, (1, 2, 2), 1.0, stream=0)
    assert not torch.equal(sample_noise, pixel)


_LITERAL = re.compile(
    r"(\bstream\s*=\s*\d|_STREAM\s*=\s*\d|\b\d[\d_]*\s*\+\s*stream\b|stream\s*\+\s*\d)"
)


def test_no_stream_number_is_a_literal_outside_the_registry():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "noise.py" and path.parent == PACKAGE:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if _LITERAL.search(code):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "stream numbers outside captum_fvit/noise.py:\n" + "\n".join(offenders)
