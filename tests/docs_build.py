"""Build the documentation once per test session, tutorials included.

``sphinx-build -W --keep-going -b html`` executes every tutorial (sphinx-gallery, see
docs/conf.py) with ``CAPTUM_FVIT_TUTORIAL_OUT`` pointing at a fresh folder, and draws the
figures of the guide. tests/test_docs.py checks the site and tests/test_tutorials.py checks
what the tutorials wrote into that folder; both call :func:`build_docs`, which builds only
on its first call in the process (the tutorials take minutes on a CPU: they run once).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TIMEOUT_S = 900


@dataclass(frozen=True)
class DocsBuild:
    """The built site, the tutorials' output folder and the build log."""

    html: Path
    tutorial_out: Path
    seconds: float
    log: str


_built: list[DocsBuild] = []


def build_docs(tmp_path_factory: pytest.TempPathFactory) -> DocsBuild:
    """The session's docs build (built on the first call)."""
    if _built:
        return _built[0]
    try:
        import sphinx  # noqa: F401
        import sphinx_gallery  # noqa: F401
    except ImportError as error:  # pragma: no cover - a missing dependency must fail, not skip
        pytest.fail(f"{error.name} is not installed: install the test extra (pip install -e '.[test]')")
    root = tmp_path_factory.mktemp("docs")
    out, tutorial_out = root / "html", root / "tutorial_out"
    tutorial_out.mkdir()
    env = dict(
        os.environ,
        CAPTUM_FVIT_TUTORIAL_OUT=str(tutorial_out),
        MPLBACKEND="Agg",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONHASHSEED="0",
    )
    # Run the working tree's package even when it is not installed in editable mode.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
         # execute every tutorial now, even if an earlier build already ran it
         "-D", "sphinx_gallery_conf.run_stale_examples=True",
         str(DOCS), str(out)],  # fmt: skip
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 0, (
        f"sphinx-build failed (exit {result.returncode}) after {seconds:.0f} s:\n"
        f"{result.stderr[-12000:]}\n{result.stdout[-3000:]}"
    )
    print(f"docs built (tutorials executed) in {seconds:.1f} s")
    _built.append(DocsBuild(out, tutorial_out, seconds, result.stdout + result.stderr))
    return _built[0]
