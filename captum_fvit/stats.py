"""Streaming statistics over Monte-Carlo samples: memory flat in the number of samples.

Each chunk of samples is folded in at once with ``index_add_`` keyed by the input each
sample belongs to; sums are kept in float64 so that means and variances of thousands of
[0, 1]-valued samples stay exact to well below the confidence intervals built on them.
"""

from __future__ import annotations

import torch

from .validation import check_k

__all__ = [
    "RunningMoments",
    "TopKVotes",
    "ClassCounts",
    "MapStatistics",
    "all_reduce_sum",
    "normalize_maps",
]


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """``h = a⁺ / Σ a⁺`` per row (all-zero rows stay zero): a [0, 1]-valued map summing to 1.

    Differentiable (the adaptive attacks take gradients through it)."""
    positive = maps.clamp(min=0)
    total = positive.sum(dim=1, keepdim=True)
    return positive / torch.where(total > 0, total, torch.ones_like(total))


def _at_least_float32(values: torch.Tensor) -> torch.Tensor:
    values = values.detach()
    return values.float() if values.dtype in (torch.float16, torch.bfloat16) else values


def all_reduce_sum(tensors: list[torch.Tensor], process_group) -> None:
    """Sum ``tensors`` in place over the ranks of ``process_group`` (no-op for ``None``).

    Counts are int64 and sums float64, so the totals are exact (counts) or equal to one
    process's up to the order of float64 additions (sums).
    """
    if process_group is None:
        return
    import torch.distributed as dist

    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=process_group)


class RunningMoments:
    """Per-input running count, mean and (unbiased) variance of a feature tensor.

    Parameters
    ----------
    n_inputs : int
        Number of inputs the samples belong to.
    feature_shape : tuple of int
        Shape of one sample's features (``(P,)`` for token maps, ``(C, H, W)`` for pixels).
    device : torch.device
        Where the sums live.
    """

    def __init__(self, n_inputs: int, feature_shape: tuple[int, ...], device) -> None:
        self.count = torch.zeros(n_inputs, dtype=torch.float64, device=device)
        self.sum = torch.zeros((n_inputs, *feature_shape), dtype=torch.float64, device=device)
        self.sum_sq = torch.zeros_like(self.sum)

    def update(self, index: torch.Tensor, values: torch.Tensor) -> None:
        """Fold in ``values`` (``M×feature``) of the inputs ``index`` (``M``)."""
        values = values.detach().double()
        self.count.index_add_(0, index, torch.ones_like(index, dtype=torch.float64))
        self.sum.index_add_(0, index, values)
        self.sum_sq.index_add_(0, index, values * values)

    def _count(self) -> torch.Tensor:
        return self.count.view(-1, *([1] * (self.sum.dim() - 1)))

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / self._count().clamp(min=1)

    @property
    def variance(self) -> torch.Tensor:
        """Unbiased sample variance (0 with fewer than two samples)."""
        n = self._count()
        centred = (self.sum_sq - self.sum * self.sum / n.clamp(min=1)).clamp(min=0)
        return torch.where(n > 1, centred / (n - 1).clamp(min=1), torch.zeros_like(centred))

    @property
    def std(self) -> torch.Tensor:
        return self.variance.sqrt()

    def all_reduce(self, process_group) -> None:
        """Combine the moments of every rank of ``process_group`` (sample sharding)."""
        all_reduce_sum([self.count, self.sum, self.sum_sq], process_group)


class TopKVotes:
    """How often each token is among the ``k`` largest of a sample's map, per input."""

    def __init__(self, n_inputs: int, n_tokens: int, k: int, device) -> None:
        check_k(k, n_tokens)
        self.k = k
        self.counts = torch.zeros((n_inputs, n_tokens), dtype=torch.int64, device=device)

    def update(self, index: torch.Tensor, maps: torch.Tensor) -> None:
        top = maps.detach().topk(self.k, dim=1).indices
        member = torch.zeros(maps.shape, dtype=torch.int64, device=maps.device)
        member.scatter_(1, top, 1)
        self.counts.index_add_(0, index, member)

    def all_reduce(self, process_group) -> None:
        """Sum the votes of every rank of ``process_group``."""
        all_reduce_sum([self.counts], process_group)


class ClassCounts:
    """Per-input counts of the predicted class and running sum of the softmax."""

    def __init__(self, n_inputs: int, device) -> None:
        self.n_inputs = n_inputs
        self.device = device
        self.counts: torch.Tensor | None = None
        self.softmax_sum: torch.Tensor | None = None

    def update(self, index: torch.Tensor, logits: torch.Tensor) -> None:
        """Fold in ``M×K`` ``logits`` of the inputs ``index`` (softmax in at least float32;
        float64 logits keep float64)."""
        logits = _at_least_float32(logits)
        if self.counts is None:
            k = logits.shape[1]
            self.counts = torch.zeros((self.n_inputs, k), dtype=torch.int64, device=self.device)
            self.softmax_sum = torch.zeros((self.n_inputs, k), dtype=torch.float64, device=self.device)
        predicted = torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1])
        self.counts.index_add_(0, index, predicted)
        self.softmax_sum.index_add_(0, index, logits.softmax(1).double())

    def all_reduce(self, process_group) -> None:
        """Sum the counts and softmax sums of every rank of ``process_group``."""
        if self.counts is None:
            raise RuntimeError("no sample was folded in on this rank")
        all_reduce_sum([self.counts, self.softmax_sum], process_group)

    def mean_softmax(self, n: torch.Tensor) -> torch.Tensor:
        return self.softmax_sum / n.view(-1, 1).clamp(min=1)


class MapStatistics:
    """Streaming statistics of one method's token maps over the samples of one pass.

    :class:`RunningMoments` of the sum-normalised maps ``h = a⁺ / Σ a⁺``
    (:func:`normalize_maps`) and, for a ``k``, :class:`TopKVotes` of the raw maps ``a``;
    sized by the first chunk folded in.

    Parameters
    ----------
    n_inputs : int
        Number of inputs the samples belong to.
    k : int, optional
        Count top-``k`` membership (``None``: no votes).
    device : torch.device
        Where the statistics live.
    """

    def __init__(self, n_inputs: int, k: int | None, device) -> None:
        self.n_inputs = n_inputs
        self.k = k
        self.device = device
        self.moments: RunningMoments | None = None
        self.votes: TopKVotes | None = None

    def update(self, index: torch.Tensor, maps: torch.Tensor) -> None:
        """Fold in ``M×P`` raw token maps of the inputs ``index`` (``M``)."""
        maps = maps.detach()
        if self.moments is None:
            self.moments = RunningMoments(self.n_inputs, (maps.shape[1],), self.device)
            if self.k is not None:
                self.votes = TopKVotes(self.n_inputs, maps.shape[1], self.k, self.device)
        self.moments.update(index, normalize_maps(maps))
        if self.votes is not None:
            self.votes.update(index, maps)

    @property
    def vote_counts(self) -> torch.Tensor | None:
        """``N×P`` top-``k`` vote counts, or ``None`` without a ``k``."""
        return None if self.votes is None else self.votes.counts

    def all_reduce(self, process_group) -> None:
        """Combine the statistics of every rank of ``process_group``."""
        if self.moments is None:
            raise RuntimeError("no sample was folded in on this rank")
        self.moments.all_reduce(process_group)
        if self.votes is not None:
            self.votes.all_reduce(process_group)
