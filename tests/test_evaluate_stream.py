"""Streaming rows to disk (JSON lines): durable writes, torn-line tolerance on resume,
merging rank shards without duplicates, and the bootstrap aggregation of rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from captum_fvit.evaluate.experiment.rows import RowWriter, mean_ci, read_jsonl, read_rows, shard_path

KEY = ("image", "method")


def test_writer_round_trips_floats_bit_for_bit_and_refuses_duplicate_keys(tmp_path):
    path = tmp_path / "results.jsonl"
    values = [0.1 + 0.2, 1 / 3, float("nan"), 1e-300, float("inf")]
    with RowWriter(path, KEY) as writer:
        assert writer.write([{"image": i, "method": "raw", "v": v} for i, v in enumerate(values)]) == 5
        assert writer.write([{"image": 0, "method": "raw", "v": 9.0}]) == 0  # duplicate key
        assert writer.done_keys() == {(i, "raw") for i in range(5)}
    rows = read_jsonl(path)
    assert len(rows) == 5
    for row, value in zip(rows, values, strict=True):
        assert row["v"] == value or (np.isnan(value) and np.isnan(row["v"]))


def test_resume_drops_a_torn_last_line_and_appends_after_it(tmp_path):
    path = tmp_path / "results.jsonl"
    with RowWriter(path, KEY) as writer:
        writer.write([{"image": 0, "method": "raw", "v": 1.0}, {"image": 1, "method": "raw", "v": 2.0}])
    with open(path, "ab") as handle:  # a write cut half-way by SIGKILL
        handle.write(b'{"image": 2, "method": "raw", "v": 3.')
    assert [r["image"] for r in read_jsonl(path)] == [0, 1]
    with RowWriter(path, KEY, resume=True) as writer:
        assert writer.done_keys() == {(0, "raw"), (1, "raw")}
        writer.write([{"image": 2, "method": "raw", "v": 3.5}])
    text = path.read_text()
    assert text.count("\n") == 3 and '3.' + '\n' not in text
    assert [json.loads(line)["image"] for line in text.splitlines()] == [0, 1, 2]
    # Not resuming starts a fresh file.
    with RowWriter(path, KEY) as writer:
        assert writer.done_keys() == set()
    assert path.read_text() == ""


def test_read_rows_merges_rank_shards_without_duplicates(tmp_path):
    for rank, images in ((0, [0, 2, 4]), (1, [1, 3, 4])):  # image 4 twice (e.g. re-run)
        with RowWriter(shard_path(tmp_path, rank, 2), KEY) as writer:
            writer.write([{"image": i, "method": m, "rank": rank} for i in images for m in ("b", "a")])
    assert shard_path(tmp_path, 0, 1).name == "results.jsonl"
    rows = read_rows([shard_path(tmp_path, r, 2) for r in range(2)] + [tmp_path / "missing"], KEY)
    keys = [(r["image"], r["method"]) for r in rows]
    assert keys == sorted({(i, m) for i in range(5) for m in ("a", "b")})
    assert next(r for r in rows if r["image"] == 4)["rank"] == 0  # first file wins


def test_mean_ci_matches_a_plain_bootstrap_loop():
    rng = np.random.default_rng(3)
    values = rng.normal(size=30).tolist() + [float("nan")]
    mean, low, high, n = mean_ci(values, n_boot=500, seed=7)
    finite = np.asarray(values[:30])
    assert n == 30 and mean == pytest.approx(finite.mean())
    # Independent reference: the same resampling written as a loop.
    boot_rng = np.random.default_rng(7)
    index = boot_rng.integers(0, 30, size=(500, 30))
    means = [finite[index[b]].mean() for b in range(500)]
    assert (low, high) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert low < mean < high
    assert mean_ci([2.0]) == (2.0, 2.0, 2.0, 1)
    assert np.isnan(mean_ci([float("nan")])[0]) and mean_ci([])[3] == 0


# -- the runner streams rows, resumes after SIGKILL, and aggregates from rows -------------------
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import torch  # noqa: E402

from captum_fvit.evaluate import evaluate, write_report  # noqa: E402
from captum_fvit.evaluate.experiment.pipeline import KEY_FIELDS  # noqa: E402

RUN_SCRIPT = textwrap.dedent(
    """
    import sys, timm, torch
    torch.set_num_threads(1)
    from captum_fvit.data import ShapesBenchmark
    from captum_fvit.evaluate import EvaluationConfig, evaluate

    def model():
        torch.manual_seed(0)
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                                 patch_size=8, num_classes=6, embed_dim=48, depth=2,
                                 num_heads=3).eval()

    def config():
        return EvaluationConfig(methods=["raw"], eps=[0.0, 2 / 255], attack_steps=2,
                                n_samples=2, k=3, batch_size=2, seed=5, figure_images=2)

    if __name__ == "__main__":
        evaluate(model(), ShapesBenchmark(5, image_size=32, seed=9), config=config(),
                 progress=False, out_dir=sys.argv[1], resume=len(sys.argv) > 2)
    """
)


def _data_rows(path):
    return [r for r in read_rows(path, KEY_FIELDS) if r["kind"] != "run"]


@pytest.fixture(scope="module")
def run_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runscript")
    (folder / "eval_run_script.py").write_text(RUN_SCRIPT)
    sys.path.insert(0, str(folder))
    import eval_run_script

    yield folder, eval_run_script
    sys.path.remove(str(folder))


def test_sigkill_half_way_then_resume_gives_the_uninterrupted_rows(run_module, tmp_path):
    folder, script = run_module
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = tmp_path / "reference"
        evaluate(script.model(), script.ShapesBenchmark(5, image_size=32, seed=9),
                 config=script.config(), progress=False, out_dir=reference)  # fmt: skip
        interrupted = tmp_path / "interrupted"
        env = {**os.environ, "CAPTUM_FVIT_TEST_KILL_AFTER_ROWS": "8", "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(
            [sys.executable, str(folder / "eval_run_script.py"), str(interrupted)],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == -9, proc.stderr  # really killed by SIGKILL
        partial = _data_rows(interrupted / "results.jsonl")
        assert 0 < len(partial) < 20  # half-way: the first batch only (2 images × 2 × 2 rows)
        with open(interrupted / "results.jsonl", "ab") as handle:  # and a torn last write
            handle.write(b'{"kind": "explain", "image": 4, "topk_ov')
        result = evaluate(script.model(), script.ShapesBenchmark(5, image_size=32, seed=9),
                          config=script.config(), progress=False, out_dir=interrupted,
                          resume=True)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    resumed, expected = _data_rows(interrupted / "results.jsonl"), _data_rows(reference / "results.jsonl")
    assert len(expected) == 5 * 2 * 2  # images × variants × ε
    assert resumed == expected  # identical rows, bit for bit, no duplicates
    lines = (interrupted / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(expected) + 1  # + the run header; the torn line is gone
    # Aggregates come from the rows: recompute one cell directly.
    cell = [r for r in expected if r["variant"] == "dds" and r["eps"] == 2 / 255]
    row = next(r for r in result.rows if r["variant"] == "dds" and r["eps"] == 2 / 255)
    assert row["topk_overlap"] == pytest.approx(np.mean([r["topk_overlap"] for r in cell]))
    assert row["topk_overlap_low"] <= row["topk_overlap"] <= row["topk_overlap_high"]
    # Resuming with other options is refused instead of mixing rows.
    other = script.config()
    other.seed = 6
    with pytest.raises(ValueError, match="seed: 5 → 6"):
        evaluate(script.model(), script.ShapesBenchmark(5, image_size=32, seed=9), config=other,
                 progress=False, out_dir=interrupted, resume=True)  # fmt: skip


def test_outputs_record_config_versions_and_setup(run_module, tmp_path):
    _, script = run_module
    result = evaluate(script.model(), script.ShapesBenchmark(2, image_size=32, seed=9),
                      config=script.config(), progress=False, out_dir=tmp_path,
                      setup={"model": "tiny-vit", "denoiser": "identity", "data": "shapes-9"})  # fmt: skip
    paths = write_report(result, tmp_path)
    report = json.loads(paths["json"].read_text())
    assert report["config"]["seed"] == 5 and report["config"]["sigma"] == 0.25
    assert set(report["versions"]) >= {"captum-fvit", "torch", "timm", "captum", "diffusers"}
    for name in ("markdown", "html"):
        text = paths[name].read_text()
        assert "tiny-vit" in text and "shapes-9" in text and "identity" in text
        assert "captum-fvit" in text and '"certify_n_samples"' in text.replace("&quot;", '"')
    csv_text = paths["csv"].read_text()
    assert csv_text.startswith("# config: ") and "# versions: " in csv_text
    import csv as csv_module

    table = list(csv_module.DictReader(line for line in csv_text.splitlines() if not line.startswith("#")))
    assert len(table) == 4 and float(table[0]["topk_overlap"]) == pytest.approx(result.rows[0]["topk_overlap"])
    header = read_jsonl(tmp_path / "results.jsonl")[0]
    assert header["kind"] == "run" and header["setup"]["model"] == "tiny-vit"


def test_certify_report_when_one_method_certifies_nothing(tmp_path):
    """The old runner crashed in matplotlib ("x and y must have same first dimension") when
    one method abstained everywhere (grid of 1 point) and another certified something."""
    from captum_fvit.evaluate.experiment.aggregate import aggregate_rows
    from captum_fvit.evaluate.experiment.config import EvaluationConfig as Config

    config = Config(methods=["raw", "rollout"], certify=True).to_dict()
    rows = [
        {"kind": "certify", "image": i, "method": m, "variant": "dds", "eps": 0.0,
         "radius_beta": rb, "radius_pred_correct": rp}
        for i in range(3)
        for m, rb, rp in (("raw", 0.0, 0.0), ("rollout", 0.1 * (i + 1), 0.05 * i))
    ] + [
        {"kind": "explain", "image": i, "method": m, "variant": "dds", "eps": 0.0, "label": 0,
         "correct": True, "pred_smoothed": 0, "topk_overlap": 1.0, "spearman": 1.0}
        for i in range(3) for m in ("raw", "rollout")
    ]  # fmt: skip
    result = aggregate_rows(rows, config)
    raw, rollout = result.certificates["raw"], result.certificates["rollout"]
    assert raw["radius_grid"] == rollout["radius_grid"] and len(raw["radius_grid"]) == 51
    assert raw["fraction_r_beta"] == [0.0] * 51
    grid = np.asarray(rollout["radius_grid"])
    expected = [(np.asarray([0.1 * (i + 1) for i in range(3)]) >= r).mean() for r in grid]
    np.testing.assert_allclose(rollout["fraction_r_beta"], expected)
    write_report(result, tmp_path)
    assert (tmp_path / "figures" / "certified_curves.png").stat().st_size > 1000


def test_topk_attack_and_bad_image_counts_through_the_runner(run_module):
    _, script = run_module
    config = script.config()
    config.attack = "topk"
    result = evaluate(script.model(), script.ShapesBenchmark(2, image_size=32, seed=9),
                      config=config, progress=False)  # fmt: skip
    attacked = [r for r in result.records if r["eps"] > 0]
    assert len(attacked) == 4 and all(0 <= r["topk_overlap"] <= 1 for r in attacked)
    for bad, error in ((-1, ValueError), (0, ValueError), (2.5, TypeError)):
        with pytest.raises(error, match="n_images"):
            evaluate(script.model(), script.ShapesBenchmark(2, image_size=32, seed=9),
                     config=script.config(), n_images=bad, progress=False)  # fmt: skip


def test_non_finite_model_names_the_image_and_writes_no_row(run_module, tmp_path):
    from captum_fvit.errors import NonFiniteError

    _, script = run_module
    model = script.model()

    config = script.config()
    config.variants = ["vanilla"]
    config.attack = "none"
    config.batch_size = 1
    data = script.ShapesBenchmark(2, image_size=32, seed=9)

    poisoned = model.blocks[1].attn.qkv.weight
    with torch.no_grad():
        saved = poisoned.clone()
        poisoned.fill_(float("nan"))
    try:
        with pytest.raises(NonFiniteError, match="image 0"):
            evaluate(model, data, config=config, progress=False, out_dir=tmp_path)
    finally:
        with torch.no_grad():
            poisoned.copy_(saved)
    assert _data_rows(tmp_path / "results.jsonl") == []
