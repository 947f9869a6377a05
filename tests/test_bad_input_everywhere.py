"""The same mistake gets the same exception type, and a message that names the fix, everywhere.

One walk over the public entry points (explainers, certificates, metrics, attacks) with the
same bad values: a non-integer count (``2.5``, ``True``) or seed is a ``TypeError``; a count
of 0, σ ≤ 0, a top-k size out of range, a NaN or 3-D image, α outside (0, 1) or a negative
ε is a ``ValueError`` (the rules of :mod:`captum_fvit.validation`). The message must name
the argument and say what to pass. Every case runs on a tiny ViT (32×32 inputs, 8×8
patches: 16 patch tokens) with cheap settings, so an entry point that forgets a check fails
fast instead of computing for long.

Cases that do not hold yet are marked ``xfail(strict=True)`` with the current message in the
reason, so that they turn into failures (and the marker must go) once they are fixed.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from captum_fvit import DDS, AttentionMap, DDSAttention, FaithfulRegion, IdentityDenoiser
from captum_fvit import certify
from captum_fvit import evaluate as ev
from conftest import IMG, make_timm_vit

#: Patch tokens of the tiny ViT: (32 / 8)².
N_TOKENS = (IMG // 8) ** 2

#: Words by which a message says what to pass instead.
FIX_WORDS = ("must", "e.g.", "pass", "choose", "use ", "clean", "add ", "convert", "give")

COUNT = [(2.5, TypeError), (True, TypeError), (0, ValueError)]
SEED = [(1.5, TypeError)]
SIGMA = [(0, ValueError), (-1, ValueError)]
K_SIZE = [(2.5, TypeError), (0, ValueError)]
K_ALL = K_SIZE + [(N_TOKENS, ValueError)]  # k must leave a (k+1)-th token
ALPHA = [(1.5, ValueError)]
BETA = [(1.5, ValueError)]  # an overlap fraction in (0, 1]
EPS = [(-1, ValueError)]
STEPS = [(2.5, TypeError)]
IMAGES = [("nan", ValueError), ("3-D", ValueError)]


@pytest.fixture(scope="module")
def env():
    model = make_timm_vit(depth=2)
    x = torch.rand(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))
    maps = torch.rand(1, N_TOKENS, generator=torch.Generator().manual_seed(1))
    return SimpleNamespace(model=model, denoiser=IdentityDenoiser(), x=x, maps=maps)


def _bad_images(kind: str) -> torch.Tensor:
    x = torch.rand(1, 3, IMG, IMG)
    if kind == "nan":
        x[0, 1, 2, 3] = math.nan
        return x
    return x[0]  # C×H×W: the batch dimension is missing


# ------------------------------------------------------------------- the entry points
# Each takes the environment and the one argument under test (everything else valid and
# cheap: 2 noise samples, 1 attack step).
def _dds_attention(env, **kw):
    return DDSAttention(env.model, env.denoiser, "raw", **{"n_samples": 2, "batch_size": 2, **kw})


def _faithful_region(env, **kw):
    options = {"k": 3, "n_samples": 4, "n_select": 4, "batch_size": 4, "sigma": 0.25, **kw}
    return FaithfulRegion(env.model, env.denoiser, "raw", **options)


def _dds(env, **kw):
    from captum.attr import Saliency

    return DDS(Saliency(env.model), env.denoiser, **{"n_samples": 2, "batch_size": 2, **kw})


def _attack_kwargs(kw):
    return {"eps": 8 / 255, "steps": 1, "seed": 0, **kw}


ENTRY_POINTS = {
    "AttentionMap.attribute": (
        lambda env, inputs=None: AttentionMap(env.model, "rollout").attribute(env.x if inputs is None else inputs, target=0),
        {"inputs": IMAGES},
    ),
    "DDSAttention()": (
        _dds_attention,
        {"n_samples": COUNT, "sigma": SIGMA, "k": K_SIZE, "batch_size": COUNT, "n_select": COUNT},
    ),
    "DDSAttention.attribute": (
        lambda env, inputs=None, seed=0: _dds_attention(env).attribute(
            env.x if inputs is None else inputs, target=0, seed=seed
        ),
        {"inputs": IMAGES, "seed": SEED},
    ),
    "DDSAttention.details": (
        lambda env, inputs=None, **kw: _dds_attention(env).details(
            env.x if inputs is None else inputs, **{"target": 0, "seed": 0, "k": 3, **kw}
        ),
        {"inputs": IMAGES, "seed": SEED, "k": K_ALL, "n_samples": COUNT},
    ),
    "DDS()": (_dds, {"n_samples": COUNT, "sigma": SIGMA, "batch_size": COUNT, "n_select": COUNT}),
    "DDS.attribute": (
        lambda env, inputs=None, seed=0: _dds(env).attribute(env.x if inputs is None else inputs, target=0, seed=seed),
        {"inputs": IMAGES, "seed": SEED},
    ),
    "FaithfulRegion()": (
        _faithful_region,
        {"k": K_SIZE, "n_samples": COUNT, "sigma": SIGMA, "alpha": ALPHA, "beta": BETA, "batch_size": COUNT},
    ),
    "FaithfulRegion.certify": (
        lambda env, inputs=None, seed=0, k=3: _faithful_region(env, k=k).certify(
            env.x if inputs is None else inputs, seed=seed
        ),
        {"inputs": IMAGES, "seed": SEED, "k": [(N_TOKENS, ValueError)]},
    ),
    "FaithfulRegion.decide": (
        lambda env, inputs=None, **kw: _faithful_region(env).decide(
            env.x if inputs is None else inputs, **{"radius": 0.05, "seed": 0, "n_max": 8, **kw}
        ),
        {"inputs": IMAGES, "seed": SEED, "radius": EPS, "n_max": COUNT},
    ),
    "certify.clopper_pearson_bounds": (
        lambda env, **kw: certify.clopper_pearson_bounds(**{"counts": torch.tensor([3.0]), "n": 10, "alpha": 0.01, **kw}),
        {"n": COUNT, "alpha": ALPHA},
    ),
    "certify.prediction_radius": (
        lambda env, **kw: certify.prediction_radius(
            **{"count": torch.tensor([9.0]), "n": 10, "alpha": 0.01, "sigma": 0.25, **kw}
        ),
        {"n": COUNT, "alpha": ALPHA, "sigma": SIGMA},
    ),
    "certify.radii_in": (
        lambda env, **kw: certify.radii_in(
            **{"lower": torch.full((1, N_TOKENS), 0.4), "upper": torch.full((1, N_TOKENS), 0.6), "k": 3,
               "sigma": 0.25, **kw}
        ),
        {"k": K_ALL, "sigma": SIGMA},
    ),
    "certify.radii_out": (
        lambda env, **kw: certify.radii_out(
            **{"lower": torch.full((1, N_TOKENS), 0.4), "upper": torch.full((1, N_TOKENS), 0.6), "k": 3,
               "sigma": 0.25, **kw}
        ),
        {"k": K_ALL, "sigma": SIGMA},
    ),
    "certify.overlap_radius": (
        lambda env, **kw: certify.overlap_radius(**{"r_in": torch.rand(1, N_TOKENS), "k": 3, "beta": 0.8, **kw}),
        {"k": K_ALL, "beta": BETA},
    ),
    "certify.faithful_region": (
        lambda env, **kw: certify.faithful_region(**{"r_in": torch.rand(1, N_TOKENS), "radius": 0.1, **kw}),
        {"radius": EPS},
    ),
    "certify.l2_to_linf": (
        lambda env, **kw: certify.l2_to_linf(**{"radius": 0.5, "d": 3 * IMG * IMG, **kw}),
        {"radius": EPS},
    ),
    "evaluate.topk_overlap": (
        lambda env, k=3: ev.topk_overlap(env.maps, env.maps.flip(1), k),
        {"k": [(2.5, TypeError), (0, ValueError), (N_TOKENS + 1, ValueError)]},  # k ≤ entries here
    ),
    "evaluate.perturbation_test": (
        lambda env, inputs=None, **kw: ev.perturbation_test(
            env.model, env.x if inputs is None else inputs, env.maps, **{"fractions": (0.0, 0.5), **kw}
        ),
        {"inputs": IMAGES, "batch_size": COUNT, "fractions": [(0.5, TypeError), ((0.0, 1.5), ValueError)]},
    ),
    "evaluate.segmentation_test": (
        lambda env, masks=None: ev.segmentation_test(env.maps, torch.rand(1, IMG, IMG).round() if masks is None else masks),
        {"masks": [([[0, 1], [1, 0]], TypeError), (torch.full((1, IMG, IMG), 2), ValueError)]},
    ),
    "evaluate.pgd_attack": (
        lambda env, inputs=None, **kw: ev.pgd_attack(env.model, env.x if inputs is None else inputs, **_attack_kwargs(kw)),
        {"inputs": IMAGES, "eps": EPS, "steps": STEPS, "seed": SEED},
    ),
    "evaluate.eot_pgd_attack": (
        lambda env, inputs=None, **kw: ev.eot_pgd_attack(
            env.model, env.denoiser, env.x if inputs is None else inputs, **_attack_kwargs({"n_eot": 2, **kw})
        ),
        {"inputs": IMAGES, "eps": EPS, "steps": STEPS, "seed": SEED, "sigma": SIGMA, "n_eot": COUNT},
    ),
    "evaluate.smooth_pgd": (
        lambda env, inputs=None, **kw: ev.smooth_pgd(
            env.model, env.denoiser, env.x if inputs is None else inputs, **_attack_kwargs({"n_eot": 2, **kw})
        ),
        {"inputs": IMAGES, "eps": EPS, "steps": STEPS, "seed": SEED, "sigma": SIGMA, "n_eot": COUNT},
    ),
    "evaluate.topk_explanation_attack": (
        lambda env, inputs=None, **kw: ev.topk_explanation_attack(
            AttentionMap(env.model, "raw").token_map,
            env.model,
            env.x if inputs is None else inputs,
            **_attack_kwargs({"k": 3, **kw}),
        ),
        {"inputs": IMAGES, "k": K_ALL, "eps": EPS, "steps": STEPS, "seed": SEED},
    ),
    "evaluate.adaptive_topk": (
        lambda env, inputs=None, **kw: ev.adaptive_topk(
            env.model,
            env.denoiser,
            env.x if inputs is None else inputs,
            **_attack_kwargs({"k": 3, "method": "raw", "n_eot": 2, "n_clean": 2, **kw}),
        ),
        {"inputs": IMAGES, "k": K_ALL, "eps": EPS, "steps": STEPS, "seed": SEED, "sigma": SIGMA, "n_eot": COUNT},
    ),
}

#: Cases that do not hold yet (test id -> what happens today). Each becomes
#: xfail(strict=True); fix the entry point, then delete its line here.
KNOWN: dict[str, str] = {
}


def _label(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}"
    return repr(value)


def _cases():
    for entry, (_, arguments) in ENTRY_POINTS.items():
        for argument, values in arguments.items():
            for value, expected in values:
                case_id = f"{entry}-{argument}={_label(value)}"
                marks = [pytest.mark.xfail(strict=True, reason=KNOWN[case_id])] if case_id in KNOWN else []
                yield pytest.param(entry, argument, value, expected, id=case_id, marks=marks)


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_each_entry_point_runs_with_the_valid_defaults(env, entry):
    """The harness calls each entry point correctly: with nothing bad it does not raise, so an
    exception in the walk below comes from the bad value."""
    call, _ = ENTRY_POINTS[entry]
    call(env)


@pytest.mark.parametrize("entry, argument, value, expected", list(_cases()))
def test_same_mistake_same_exception_and_a_message_naming_the_fix(env, entry, argument, value, expected):
    call, _ = ENTRY_POINTS[entry]
    bad = _bad_images(value) if argument == "inputs" else value
    with pytest.raises(Exception) as info:
        call(env, **{argument: bad})
    message = str(info.value)
    assert "unexpected keyword argument" not in message and "positional argument" not in message, (
        f"{entry} no longer takes {argument}: update this test ({message})"
    )
    assert type(info.value) is expected or isinstance(info.value, expected), (
        f"{entry}({argument}={value!r}) raised {type(info.value).__name__}, not {expected.__name__}: {message}"
    )
    assert argument in message, f"{entry}: the message does not name {argument!r}: {message}"
    assert any(word in message for word in FIX_WORDS), f"{entry}: the message does not say what to pass: {message}"


def test_the_walk_covers_every_listed_entry_point_and_mistake():
    """The table itself: every entry point the issue lists is walked, every mistake is tried."""
    walked = set(ENTRY_POINTS)
    for name in (
        "AttentionMap.attribute", "DDSAttention()", "DDSAttention.attribute", "DDSAttention.details",
        "DDS()", "FaithfulRegion()", "FaithfulRegion.certify", "evaluate.topk_overlap",
        "evaluate.pgd_attack", "evaluate.eot_pgd_attack", "evaluate.topk_explanation_attack",
        "evaluate.smooth_pgd", "evaluate.adaptive_topk",
    ):
        assert name in walked
    assert any(name.startswith("certify.") for name in walked)
    tried = {(argument, repr(value)) for _, arguments in ENTRY_POINTS.values() for argument, values in arguments.items()
             for value, _ in values}
    for argument, value in [("n_samples", 2.5), ("n_samples", True), ("n_samples", 0), ("seed", 1.5),
                            ("sigma", 0), ("sigma", -1), ("k", 2.5), ("k", 0), ("k", N_TOKENS),
                            ("inputs", "nan"), ("inputs", "3-D"), ("alpha", 1.5), ("eps", -1), ("steps", 2.5)]:
        assert (argument, repr(value)) in tried, (argument, value)
