"""Sample sharding over torch.distributed ranks (gloo on CPU): 2 ranks = 1 process.

Each rank runs a disjoint range of noise-sample indices; the noise being addressed by
(seed, sample), the union is the one-process sample set, and the all-reduced statistics must
match: counts exactly, float64 means within 1e-6.
"""

from __future__ import annotations

import os
import socket
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from captum.attr import Saliency
from conftest import make_timm_vit

from captum_fvit import DDS, DDSAttention, FaithfulRegion
from captum_fvit.smoothing import shard_samples

SEED, N, K = 7, 10, 3


def _images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _compute(process_group=None) -> dict:
    torch.set_num_threads(1)
    model = make_timm_vit()
    images = _images()
    dds = DDSAttention(model, None, "grad_rollout", sigma=0.2, n_samples=N, batch_size=4, n_select=6)
    details = dds.details(images, seed=SEED, k=K, process_group=process_group)
    saliency = DDS(Saliency(model), sigma=0.2, n_samples=5, batch_size=3, n_select=6).details(
        images, seed=SEED, process_group=process_group
    )
    region = FaithfulRegion(dds, k=K, n_samples=N, alpha=0.05)
    certificates = region.certify(images, seed=SEED, process_group=process_group)
    return {
        "votes": details.votes,
        "class_counts": details.class_counts,
        "mean": details.mean.double(),
        "variance": details.variance,
        "target": details.target,
        "saliency": saliency.mean.double(),
        "r_in": torch.stack([c.r_in for c in certificates]),
        "labels": torch.tensor([c.label for c in certificates]),
        "p_lower": torch.tensor([c.p_lower for c in certificates]),
    }


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = _compute(dist.group.WORLD)
        torch.save(result, f"{out}.rank{rank}")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_shards_are_disjoint_and_cover():
    class Group:
        pass

    parts = []
    for world in (1, 2, 3, 7):
        for rank in range(world):
            with mock.patch.object(dist, "get_world_size", return_value=world), mock.patch.object(
                dist, "get_rank", return_value=rank
            ):
                parts.append(shard_samples(range(5, 26), Group()))
        covered = [s for part in parts for s in part]
        assert covered == list(range(5, 26))
        parts.clear()
    with mock.patch.object(dist, "get_world_size", return_value=4), mock.patch.object(
        dist, "get_rank", return_value=0
    ), pytest.raises(ValueError, match="at least as many samples as ranks"):
        shard_samples(range(3), Group())


def test_two_gloo_ranks_equal_one_process(tmp_path):
    out = str(tmp_path / "result")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    single = _compute(None)
    ranks = [torch.load(f"{out}.rank{r}") for r in range(2)]
    for result in ranks:  # every rank gets the full statistics
        for key in ("votes", "class_counts", "target", "labels"):
            assert torch.equal(result[key], single[key]), key
        for key in ("mean", "variance", "saliency", "r_in", "p_lower"):
            torch.testing.assert_close(result[key], single[key], atol=1e-6, rtol=0)
    assert int(single["votes"].sum()) == 2 * N * K  # the counts cover all N samples
