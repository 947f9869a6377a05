"""``captum-fvit demo``: runs offline end to end on the bundled default, writes its report,
refuses bad --out."""

from __future__ import annotations

import json

import pytest

from captum_fvit.cli import main


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "report"
    code = main(["demo", "--out", str(out), "--images", "2", "--samples", "4", "--seed", "3"])
    return code, out


def test_demo_writes_report(demo_report, capsys):
    code, out = demo_report
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    rows = report["metrics"]
    assert {r["method"] for r in rows} == {"raw", "rollout", "grad_rollout"}
    assert {r["variant"] for r in rows} == {"vanilla", "dds"}
    assert {round(r["eps_255"]) for r in rows} == {0, 2, 4, 8}
    for row in rows:
        assert 0.0 <= row["topk_overlap"] <= 1.0
        assert 0.0 <= row["miou"] <= 1.0
    assert set(report["certificates"]) == {"rollout"}
    assert len(report["certificates"]["rollout"]["r_beta"]) == 2
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 6
    for figure in ("topk_overlap_vs_eps", "heatmaps_rollout", "certified_curves", "regions_rollout"):
        assert (out / "figures" / f"{figure}.png").stat().st_size > 1000


def test_demo_prints_summary_table(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--images", "1", "--samples", "2"]) == 0
    printed = capsys.readouterr().out
    assert "bundled default" in printed
    for method in ("raw", "rollout", "grad_rollout"):
        assert method in printed
    assert "accuracy under PGD" in printed and "report.html" in printed


def test_out_pointing_at_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main(["demo", "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_out_that_cannot_be_created_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert main(["demo", "--out", str(blocker / "sub")]) == 2
    assert "cannot create" in capsys.readouterr().err


def test_unwritable_out_is_refused(tmp_path, capsys, monkeypatch):
    import os

    folder = tmp_path / "locked"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if str(p) == str(folder) else real_access(p, mode)
    )
    assert main(["demo", "--out", str(folder)]) == 2
    assert "not writable" in capsys.readouterr().err


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as info:
        main(["explode"])
    assert info.value.code == 2
