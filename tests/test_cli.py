"""``captum-fvit demo``: runs offline end to end, writes its report, refuses bad --out."""

from __future__ import annotations

import json

import pytest

from captum_fvit.cli import main


def test_demo_writes_report(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["demo", "--out", str(out), "--images", "2", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "randomly initialised" in printed
    report = json.loads((out / "results.json").read_text())
    assert {row["method"] for row in report["methods"]} == {
        "raw",
        "rollout",
        "grad_rollout",
        "attn_gradcam",
    }
    for row in report["methods"]:
        assert len(row["topk_overlap"]) == 2
        assert all(0.0 <= v <= 1.0 for v in row["topk_overlap"])
        assert row["method"] in printed
    assert (out / "attention_maps.png").stat().st_size > 1000


def test_demo_is_reproducible(tmp_path):
    for name in ("a", "b"):
        assert main(["demo", "--out", str(tmp_path / name), "--images", "1"]) == 0
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert a["methods"] == b["methods"]


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


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as info:
        main(["explode"])
    assert info.value.code == 2
