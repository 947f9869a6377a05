"""The tutorials run: every script in tutorials/ executes offline in a fresh process, writes
the files it promises, and is rendered by a page of the documentation."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from statistics import NormalDist

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
DOCS = ROOT / "docs"
TIMEOUT_S = 300  # each tutorial takes about 30 s or less on a 2-core CPU

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


def _offline_env(out: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CAPTUM_FVIT_TUTORIAL_OUT=str(out),
        MPLBACKEND="Agg",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONHASHSEED="0",
    )
    # Run the working tree's package even when it is not installed in editable mode.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_tutorial(name: str, workdir: Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(TUTORIALS / name)],
        cwd=workdir,
        env=_offline_env(workdir / "out"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    return result, time.perf_counter() - start


def test_every_tutorial_is_tested():
    assert _scripts(), "no tutorial scripts found"
    assert set(EXPECTED) == set(CHECKS)
    assert set(_scripts()) == set(EXPECTED), (
        "tutorials/ and EXPECTED in this test disagree: list the files every new tutorial "
        f"writes; scripts {_scripts()}, expected {sorted(EXPECTED)}"
    )


def test_every_tutorial_is_in_the_docs():
    rendered = set()
    for page in (DOCS / "tutorials").glob("*.rst"):
        rendered |= set(re.findall(r"percent-script::\s*\S*/tutorials/(\S+\.py)", page.read_text()))
    missing = set(_scripts()) - rendered
    assert not missing, f"tutorials without a docs page (docs/tutorials/*.rst): {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tutorial_is_a_percent_script(name):
    """The docs render the first Markdown cell's heading as the page title."""
    text = (TUTORIALS / name).read_text(encoding="utf-8")
    first = text.lstrip().splitlines()
    assert first[0] == "# %% [markdown]", f"{name} must start with a Markdown cell"
    assert first[1].startswith("# # "), f"{name}: the first Markdown cell must open with a title"
    assert "# %%\n" in text, f"{name} has no code cell"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tutorial_runs(name, tmp_path):
    result, seconds = run_tutorial(name, tmp_path)
    assert result.returncode == 0, (
        f"{name} failed (exit {result.returncode}) after {seconds:.1f} s\n"
        f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-8000:]}"
    )
    out = tmp_path / "out"
    missing = [f for f in EXPECTED[name] if not (out / f).is_file() or (out / f).stat().st_size == 0]
    assert not missing, f"{name} did not write {missing}; it wrote {sorted(map(str, out.rglob('*')))}"
    for path in out.rglob("*.json"):
        json.loads(path.read_text())  # valid JSON
    CHECKS[name](out)
    # Nothing is written outside the output folder (the tutorial's cwd stays clean).
    strays = [p.name for p in tmp_path.iterdir() if p.name != "out"]
    assert not strays, f"{name} wrote files into its working directory: {strays}"
    print(f"{name}: {seconds:.1f} s")
