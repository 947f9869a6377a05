"""Image sharding over torch.distributed: ``torchrun --nproc-per-node 2 -m captum_fvit
evaluate`` with gloo on CPU writes the same rows as one process, each image exactly once,
without padding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from captum_fvit.cli import main
from captum_fvit.evaluate.experiment.distributed import shard_batches
from captum_fvit.evaluate.experiment.pipeline import KEY_FIELDS
from captum_fvit.evaluate.experiment.rows import read_jsonl, read_rows

FACTORY = textwrap.dedent(
    """
    import timm, torch

    def make():
        torch.manual_seed(0)
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                                 patch_size=8, num_classes=6, embed_dim=48, depth=2,
                                 num_heads=3).eval()
    """
)

ARGS = [
    "evaluate", "--model", "dist_tiny_factory:make", "--denoiser", "identity", "--data", "shapes",
    "--n-images", "5", "--batch-size", "2", "--methods", "raw", "--n-samples", "2", "--k", "3",
    "--eps", "0", "2", "--attack-steps", "2", "--seed", "4", "--no-progress",
]  # fmt: skip


def test_shard_batches_cover_every_image_exactly_once_without_padding():
    for n, size, world in ((5, 2, 2), (7, 3, 4), (1, 4, 3), (12, 4, 3)):
        shards = [shard_batches(n, size, r, world) for r in range(world)]
        seen = [i for shard in shards for batch in shard for i in batch]
        assert sorted(seen) == list(range(n))  # each image once, no duplicates
        # Same batches as one process: batch b is images b·size … in every layout.
        assert sorted((b.start, b.stop) for s in shards for b in s) == [
            (b.start, b.stop) for b in shard_batches(n, size, 0, 1)
        ]
    with pytest.raises(ValueError, match="rank"):
        shard_batches(4, 2, 2, 2)


def test_torchrun_two_ranks_write_the_rows_of_one_process(tmp_path, monkeypatch):
    (tmp_path / "dist_tiny_factory.py").write_text(FACTORY)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "captum_fvit", *ARGS, "--out", str(tmp_path / "two")]  # fmt: skip
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # One process, in this process, from the same working directory (the factory is
    # imported from the current directory).
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*ARGS, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
        sys.modules.pop("dist_tiny_factory", None)

    def data(path):
        return [r for r in read_rows(path, KEY_FIELDS) if r["kind"] != "run"]

    one, two = data(tmp_path / "one" / "results.jsonl"), data(tmp_path / "two" / "results.jsonl")
    assert len(one) == 5 * 2 * 2 and two == one  # same rows, bit for bit
    shard_images = []
    for rank in range(2):
        rows = [r for r in read_jsonl(tmp_path / "two" / f"results.rank{rank}.jsonl") if r["kind"] != "run"]
        shard_images.append(sorted({r["image"] for r in rows}))
        assert len(rows) == len({tuple(r[f] for f in KEY_FIELDS) for r in rows})
    assert shard_images == [[0, 1, 4], [2, 3]]  # round-robin batches; no padding duplicates
    merged = json.loads((tmp_path / "two" / "results.json").read_text())
    single = json.loads((tmp_path / "one" / "results.json").read_text())
    assert merged["metrics"] == single["metrics"] and merged["n_images"] == 5
    assert not list((tmp_path / "one").glob("results.rank*.jsonl"))


def test_paper_preset_under_torchrun_gives_the_table_of_one_process(tmp_path, monkeypatch):
    """--preset paper runs on the one runner: sharded over 2 ranks (the user's model and
    denoiser) it writes the same rows and the same paper_table.md as one process."""
    (tmp_path / "dist_tiny_factory.py").write_text(FACTORY)
    args = ["evaluate", "--preset", "paper", "--model", "dist_tiny_factory:make", "--denoiser",
            "identity", "--data", "shapes", "--n-images", "3", "--batch-size", "1", "--methods",
            "raw", "--n-samples", "1", "--k", "3", "--eps", "0", "8", "--attack-steps", "1",
            "--adaptive-steps", "1", "--n-eot", "1", "--n-boot", "20", "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "captum_fvit", *args, "--out", str(tmp_path / "two")]  # fmt: skip
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*args, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
        sys.modules.pop("dist_tiny_factory", None)

    def data(path):
        return [r for r in read_rows(path, KEY_FIELDS) if r["kind"] != "run"]

    one, two = data(tmp_path / "one" / "results.jsonl"), data(tmp_path / "two" / "results.jsonl")
    assert len(one) == 3 * 4 * 5 and two == one  # images × variants × (clean + 4 attacks)
    assert (tmp_path / "two" / "results.rank1.jsonl").exists()
    table = (tmp_path / "one" / "paper_table.md").read_text()
    assert (tmp_path / "two" / "paper_table.md").read_text() == table and "smooth_pgd" in table
