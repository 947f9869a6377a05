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

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
DOCS = ROOT / "docs"
TIMEOUT_S = 300  # each tutorial takes well under 30 s on a 2-core CPU

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
    assert summary["attribution_shape"] == [4, 3, 32, 32]
    assert summary["grid"] == [8, 8]
    assert summary["t_star"] == 145  # linear DDPM schedule at sigma = 0.25 (docs/guide/dds.rst)


def check_certify(out: Path) -> None:
    certificates = _load(out, "02_certify/certificates.json")
    assert len(certificates) == 3
    for c in certificates:
        assert c["certified"] and math.isclose(c["confidence"], 0.998)
        assert c["radius"] == min(c["radius_beta"], c["radius_pred"])
        assert math.isclose(c["radius_linf"], c["radius"] / math.sqrt(3 * 32 * 32), rel_tol=1e-6)
        assert "certified with confidence" in c["summary"]


def check_evaluate(out: Path) -> None:
    results = _load(out, "03_evaluate/evaluation.json")
    assert set(results) == {"attention", "dds"}
    for scores in results.values():
        assert len(scores["infidelity"]) == len(scores["sensitivity_max"]) == 4
        assert all(0 <= v <= 1 for v in scores["top8_overlap_under_pgd"])
    report = _load(out, "03_evaluate/report/results.json")
    assert report["n_images"] == 4
    assert {(r["variant"], r["eps_255"]) for r in report["metrics"]} == {
        ("vanilla", 0.0), ("vanilla", 8.0), ("dds", 0.0), ("dds", 8.0)
    }


def check_dds_any_attribution(out: Path) -> None:
    summary = _load(out, "04_dds_any_attribution/summary.json")
    assert len(summary) == 3
    assert all(v["shape"] == [2, 3, 32, 32] for v in summary.values())
    assert all(v["abs_mean"] > 0 for v in summary.values())


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
