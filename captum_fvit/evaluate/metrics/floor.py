"""Monte-Carlo honesty: how much of a DDS overlap is the explanation, how much the sampling.

A DDS map is a Monte-Carlo estimate ``ĝ`` of the smoothed map ``g`` from ``n`` samples. When
clean and attacked maps are computed with the *same* seed (common random numbers), their
overlap includes the agreement of shared noise; two runs on the *same clean image* with
*different* seeds show how far the estimate itself wanders. Three numbers belong together:

* :func:`seed_overlap` of two clean runs with independent seeds — the **Monte-Carlo floor**:
  no attack can be measured below the level at which the estimator disagrees with itself;
* the clean-vs-attacked overlap with a common seed (what the runner reports);
* the clean-vs-attacked overlap with independent seeds (:func:`seed_overlap` of a clean run
  with seed ``a`` and an attacked run with seed ``b``), comparable with the floor.

:func:`choose_n_samples` picks ``n`` for a target seed-to-seed stability from the per-token
variance that DDS streams (``DDSResult.variance``): under the normal approximation
``ĝ_i ≈ g_i + √(v_i/n)·z_i``, the expected top-k overlap of two independent runs at ``n`` is
computed by simulation (:func:`predicted_seed_overlap`), and ``n`` is the smallest sample size
whose prediction reaches the target. Both live in the core module
:mod:`captum_fvit.sample_size` (``DDSAttention.samples_for_stability`` needs them) and are
re-exported here.
"""

from __future__ import annotations

import torch

from ...sample_size import choose_n_samples, predicted_seed_overlap
from .similarity import topk_overlap

__all__ = ["choose_n_samples", "predicted_seed_overlap", "seed_overlap"]


def seed_overlap(map_a: torch.Tensor, map_b: torch.Tensor, k: int) -> torch.Tensor:
    """``N`` top-k overlaps of two DDS runs (``N×P`` maps), e.g. two seeds on clean images.

    Equal to :func:`~captum_fvit.evaluate.metrics.similarity.topk_overlap`; named for what it measures.
    """
    return topk_overlap(map_a, map_b, k)
