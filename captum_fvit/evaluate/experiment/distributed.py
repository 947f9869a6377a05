"""Image sharding of an evaluation across ``torch.distributed`` ranks.

Launched with ``torchrun --nproc-per-node N -m captum_fvit evaluate …`` (gloo on CPU, NCCL
on GPUs), every rank runs the same command. The images are cut into global batches of
``batch_size`` (batch ``b`` holds images ``b·batch_size …``); rank ``r`` of ``W`` evaluates
batches ``r, r + W, r + 2W, …``. Every image is evaluated exactly once — the last batch is
simply smaller, never padded with duplicates — and in the same batch as in a single process,
so seeds and floating-point results do not depend on the number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

__all__ = ["Shard", "current_shard", "shard_batches"]


@dataclass(frozen=True)
class Shard:
    """This process's place in the run.

    Attributes
    ----------
    rank, world_size : int
        Rank in the process group and its size (0 and 1 without ``torch.distributed``).
    group : ProcessGroup or None
        The process group (``None`` = the default group or none at all).
    """

    rank: int = 0
    world_size: int = 1
    group: Any = None

    @property
    def distributed(self) -> bool:
        """Whether several ranks share the run."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 merges the shards and writes the aggregates."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op for one process)."""
        if self.distributed:
            dist.barrier(group=self.group)


def current_shard(process_group: Any = None) -> Shard:
    """The shard of this process: from ``process_group`` or the default group, when
    ``torch.distributed`` is initialised; otherwise rank 0 of 1."""
    if not (dist.is_available() and dist.is_initialized()):
        if process_group is not None:
            raise ValueError(
                "process_group was given but torch.distributed is not initialised; launch with "
                "torchrun (or call torch.distributed.init_process_group) first"
            )
        return Shard()
    return Shard(
        rank=dist.get_rank(process_group),
        world_size=dist.get_world_size(process_group),
        group=process_group,
    )


def shard_batches(n_images: int, batch_size: int, rank: int, world_size: int) -> list[range]:
    """Image index ranges of the global batches rank ``rank`` evaluates (round-robin).

    Returns
    -------
    list of range
        ``[range(b·s, min((b+1)·s, n)) for b ≡ rank (mod world_size)]``; the union over
        ranks is ``range(n_images)``, each index exactly once.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
    n_batches = -(-n_images // batch_size)
    return [
        range(b * batch_size, min((b + 1) * batch_size, n_images))
        for b in range(rank, n_batches, world_size)
    ]
