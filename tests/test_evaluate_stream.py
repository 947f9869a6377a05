"""Streaming rows to disk (JSON lines): durable writes, torn-line tolerance on resume,
merging rank shards without duplicates, and the bootstrap aggregation of rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from captum_fvit.evaluate.rows import RowWriter, mean_ci, read_jsonl, read_rows, shard_path

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
