"""The tutorials run: every script in tutorials/ executes offline, writes the files it
promises, and is shown — with its printed output and its figures — by a page of the docs.

The tutorials take minutes on a CPU, so they run ONCE per test session: the docs build
(tests/docs_build.py, shared with tests/test_docs.py) executes them with sphinx-gallery and
``CAPTUM_FVIT_TUTORIAL_OUT`` set to a fresh folder; the tests here check that folder and the
rendered pages.
"""

from __future__ import annotations

import json
import math
import re
from html import unescape
from pathlib import Path
from statistics import NormalDist

import pytest
from docs_build import DOCS, ROOT, build_docs

TUTORIALS = ROOT / "tutorials"

#: Files (relative to the output folder) each tutorial must write.
EXPECTED = {
    "01_quickstart.py": [
        "01_quickstart/quickstart_attention.png",
        "01_quickstart/quickstart_dds.png",
        "01_quickstart/quickstart_summary.json",
    ],
    "02_certify.py": ["02_certify/certificate.png", "02_certify/certificates.json"],
    "03_evaluate.py": [
        "03_evaluate/evaluation.json",
        "03_evaluate/report/results.json",
        "03_evaluate/report/report.html",
    ],
    "04_dds_any_attribution.py": [
        "04_dds_any_attribution/dds_saliency.png",
        "04_dds_any_attribution/smoothgrad.png",
        "04_dds_any_attribution/dds_integrated_gradients.png",
        "04_dds_any_attribution/summary.json",
    ],
    "05_custom_adapter.py": ["05_custom_adapter/adapter.json"],
}


def _load(out: Path, name: str):
    return json.loads((out / name).read_text())


def check_quickstart(out: Path) -> None:
    summary = _load(out, "01_quickstart/quickstart_summary.json")
    assert summary["attribution_shape"] == [4, 3, 64, 64]  # the bundled ViT: 64×64 inputs
    assert summary["grid"] == [8, 8]  # 8×8-pixel patches
    assert summary["sigma"] == 0.12
    assert summary["t_star"] == 70  # linear DDPM schedule at sigma = 0.12 (2σ in model units)
    # The trained model, plainly and smoothed, gets the tutorial's images right.
    assert summary["predicted"] == summary["labels"]
    assert summary["smoothed_predicted"] == summary["labels"]
    # Both maps put more of their mass on the object than its share of the image.
    for name in ("attention", "dds"):
        ratios = summary["mass_ratio"][name]
        assert len(ratios) == 4 and all(r > 1.5 for r in ratios), (name, ratios)


def check_certify(out: Path) -> None:
    certificates = _load(out, "02_certify/certificates.json")
    assert len(certificates) == 2
    for c in certificates:
        assert c["certified"] and math.isclose(c["confidence"], 0.998)
        assert c["radius"] == min(c["radius_beta"], c["radius_pred"])
        assert math.isclose(c["radius_linf"], c["radius"] / math.sqrt(3 * 64 * 64), rel_tol=1e-6)
        assert "certified with confidence" in c["summary"]
        # The trained pipeline certifies the true class: R_pred = σ Φ⁻¹(p_lower) > 0.
        assert c["label"] == c["true_label"] and not c["abstain"] and c["p_lower"] > 0.5
        assert math.isclose(
            c["radius_pred"], c["sigma"] * NormalDist().inv_cdf(c["p_lower"]), rel_tol=1e-6
        )
        # R_β is the ⌈βk⌉-th largest per-token radius r_in.
        needed = math.ceil(c["beta"] * c["k"])
        assert len(c["r_in"]) == 64
        assert math.isclose(c["radius_beta"], sorted(c["r_in"], reverse=True)[needed - 1])
    # At least one image has a non-trivial explanation certificate.
    assert max(c["radius_beta"] for c in certificates) > 0.01


def check_evaluate(out: Path) -> None:
    results = _load(out, "03_evaluate/evaluation.json")
    assert set(results) == {"attention", "dds", "labels", "predicted", "pgd_flip_rate"}
    assert results["predicted"] == results["labels"]  # the trained ViT is right on the images
    assert results["pgd_flip_rate"] > 0  # the attack does change the plain ViT's predictions
    for name in ("attention", "dds"):
        scores = results[name]
        assert len(scores["infidelity"]) == len(scores["sensitivity_max"]) == 3
        assert all(0 <= v <= 1 for v in scores["top8_overlap_under_pgd"])

    def mean(values):
        return sum(values) / len(values)

    # What the tutorial tells the reader: DDS is more stable, under noise and under attack.
    assert mean(results["dds"]["sensitivity_max"]) < mean(results["attention"]["sensitivity_max"])
    assert mean(results["dds"]["top8_overlap_under_pgd"]) > mean(
        results["attention"]["top8_overlap_under_pgd"]
    )
    report = _load(out, "03_evaluate/report/results.json")
    assert report["n_images"] == 3
    overlap = {(r["variant"], r["eps_255"]): r["topk_overlap"] for r in report["metrics"]}
    assert set(overlap) == {("vanilla", 0.0), ("vanilla", 8.0), ("dds", 0.0), ("dds", 8.0)}
    assert overlap[("vanilla", 0.0)] == overlap[("dds", 0.0)] == 1.0  # clean vs itself
    assert overlap[("dds", 8.0)] > overlap[("vanilla", 8.0)]
    # evaluate() with the same denoiser, seed and images reproduces the hand-made numbers.
    assert math.isclose(
        overlap[("vanilla", 8.0)], mean(results["attention"]["top8_overlap_under_pgd"]), abs_tol=1e-6
    )
    assert math.isclose(
        overlap[("dds", 8.0)], mean(results["dds"]["top8_overlap_under_pgd"]), abs_tol=1e-6
    )


def check_dds_any_attribution(out: Path) -> None:
    summary = _load(out, "04_dds_any_attribution/summary.json")
    assert summary["t_star"] == 70
    assert summary["predicted"] == summary["labels"]
    maps = summary["maps"]
    assert set(maps) == {"dds_saliency", "smoothgrad", "dds_integrated_gradients"}
    assert all(v["shape"] == [2, 3, 64, 64] for v in maps.values())
    assert all(v["abs_mean"] > 0 for v in maps.values())
    # The trained ViT's attributions fall on the object, more than its share of the image.
    for name, v in maps.items():
        assert all(r > 1.5 for r in v["mass_ratio"]), (name, v["mass_ratio"])


def check_custom_adapter(out: Path) -> None:
    report = _load(out, "05_custom_adapter/adapter.json")
    assert report["token_maps"] == {m: [2, 64] for m in ("raw", "rollout", "grad_rollout", "attn_gradcam")}
    assert report["dds_shape"] == [2, 3, 32, 32]


#: What each tutorial promises beyond its files: the numbers a reader is told about.
CHECKS = {
    "01_quickstart.py": check_quickstart,
    "02_certify.py": check_certify,
    "03_evaluate.py": check_evaluate,
    "04_dds_any_attribution.py": check_dds_any_attribution,
    "05_custom_adapter.py": check_custom_adapter,
}


def _scripts() -> list[str]:
    return sorted(p.name for p in TUTORIALS.glob("*.py"))


def _page(name: str) -> str:
    """``01_quickstart.py`` → ``quickstart`` (docs/_ext/gallery_tools.py names the pages)."""
    return re.sub(r"^\d+_", "", name)[: -len(".py")]


def _text(html: str) -> str:
    """The page's text: tags removed, entities decoded, Sphinx's curly quotes made straight."""
    text = unescape(re.sub(r"<[^>]+>", "", html))
    return text.replace("\u2019", "'").replace("\u2018", "'")


@pytest.fixture(scope="session")
def docs(tmp_path_factory):
    return build_docs(tmp_path_factory)


def test_every_tutorial_is_tested():
    assert _scripts(), "no tutorial scripts found"
    assert set(EXPECTED) == set(CHECKS)
    assert set(_scripts()) == set(EXPECTED), (
        "tutorials/ and EXPECTED in this test disagree: list the files every new tutorial "
        f"writes; scripts {_scripts()}, expected {sorted(EXPECTED)}"
    )


def test_every_tutorial_is_in_the_gallery(docs):
    """Each script has an executed page and a thumbnail, in the scripts' numeric order."""
    index = (docs.html / "tutorials/index.html").read_text(encoding="utf-8")
    thumbs = re.findall(r'<div class="sphx-glr-thumbcontainer".*?</div>\s*</div>', index, re.S)
    assert len(thumbs) == len(_scripts()), f"{len(thumbs)} thumbnails for {len(_scripts())} tutorials"
    linked = [re.search(r'href="(\w+)\.html', t).group(1) for t in thumbs]
    assert linked == [_page(n) for n in _scripts()], linked
    for thumb in thumbs:
        image = re.search(r'<img [^>]*src="([^"]+)"', thumb).group(1)
        assert (docs.html / "tutorials" / image).is_file(), image


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tutorial_is_a_percent_script(name):
    """The docs render the first Markdown cell's heading as the page title."""
    text = (TUTORIALS / name).read_text(encoding="utf-8")
    first = text.lstrip().splitlines()
    assert first[0] == "# %% [markdown]", f"{name} must start with a Markdown cell"
    assert first[1].startswith("# # "), f"{name}: the first Markdown cell must open with a title"
    assert "# %%\n" in text, f"{name} has no code cell"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tutorial_runs(name, docs):
    """What the tutorial wrote during the docs build, and the numbers it promises."""
    out = docs.tutorial_out
    missing = [f for f in EXPECTED[name] if not (out / f).is_file() or (out / f).stat().st_size == 0]
    assert not missing, f"{name} did not write {missing}; it wrote {sorted(map(str, out.rglob('*')))}"
    for path in (out / name[: -len(".py")]).rglob("*.json"):
        json.loads(path.read_text())  # valid JSON
    CHECKS[name](out)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tutorial_page_shows_output_and_figures(name, docs):
    """The executed page: the script's title, its code, what it printed, every PNG it wrote."""
    html = (docs.html / "tutorials" / f"{_page(name)}.html").read_text(encoding="utf-8")
    title = (TUTORIALS / name).read_text(encoding="utf-8").splitlines()[1][len("# # "):]
    assert title in _text(html), f"{name}: the page does not show the title {title!r}"
    assert html.lower().count("highlight-python") >= 3  # the code cells
    outputs = re.findall(r'<div class="sphx-glr-script-out.*?</pre>', html, re.S)
    assert outputs, f"{name}: the page shows no printed output"
    written = sorted((docs.tutorial_out / name[: -len(".py")]).rglob("*.png"))
    shown = set(re.findall(r'src="(\.\./_images/sphx_glr_[^"]+\.png)"', html))
    assert len(shown) == len(written), f"{name}: wrote {len(written)} PNGs, the page shows {len(shown)}"
    for image in shown:
        assert (docs.html / "tutorials" / image).is_file(), image
    # the percent-format original can be downloaded from the page
    assert re.search(rf'href="[^"]*_downloads/[0-9a-f]+/{re.escape(name)}"', html), name


def test_printed_output_matches_the_results(docs):
    """The output on the pages is the output of the run the tests check (one execution)."""
    summary = json.loads((docs.tutorial_out / "01_quickstart/quickstart_summary.json").read_text())
    quickstart = _text((docs.html / "tutorials/quickstart.html").read_text(encoding="utf-8"))
    assert f"t* for sigma=0.12: {summary['t_star']}" in quickstart
    printed = str([round(r, 2) for r in summary["mass_ratio"]["dds"]])
    assert f"dds        mass on the object / object's area share: {printed}" in quickstart
    certificates = json.loads((docs.tutorial_out / "02_certify/certificates.json").read_text())
    certify = _text((docs.html / "tutorials/certify.html").read_text(encoding="utf-8"))
    for i, c in enumerate(certificates):
        assert f"image {i}: {c['summary']}" in certify, c["summary"]


def test_tutorials_write_nothing_beside_their_scripts(docs):
    """The tutorials' working directory (the generated gallery sources) stays clean."""
    src = DOCS / "_build" / "gallery_src"
    expected = {f"{_page(n)}.py" for n in _scripts()} | {"GALLERY_HEADER.rst"}
    strays = sorted(p.name for p in src.iterdir() if p.name not in expected and p.name != "__pycache__")
    assert not strays, f"the tutorials wrote files into their working directory: {strays}"
