"""Errors of captum-fvit, and the guard that stops a call on non-finite numbers.

A map or a certificate computed from NaN or infinite numbers is worse than none: NaN logits
vote for class 0, NaN token maps vote for arbitrary top-k tokens, and the resulting
"certificate" looks perfectly normal. Every stage of the pipeline is therefore watched —
the denoiser's output, the model's logits and the explanation method's token maps — and the
first non-finite value raises :class:`NonFiniteError` naming the stage and the input.

:class:`FiniteGuard` keeps the check cheap: it records one flag per row on the device as the
stages run, and :meth:`FiniteGuard.check` synchronises with the device once per chunk.
"""

from __future__ import annotations

import torch

__all__ = ["NonFiniteError", "FiniteGuard", "STAGES"]

#: Pipeline stages that are checked, in order, with what to look at when one fails.
STAGES: dict[str, str] = {
    "input": "clean or re-normalise the images",
    "denoiser": (
        "check the denoiser's weights and that sigma is within its range; with reduced "
        "precision (autocast) try autocast=False"
    ),
    "model": (
        "check the model's weights (a NaN or infinite parameter makes every logit NaN) and "
        "the input normalisation; with reduced precision (autocast) try autocast=False"
    ),
    "method": (
        "the attention (or its gradient) was not finite: check the model's weights and "
        "precision; with autocast try autocast=False"
    ),
    "attribution": "the wrapped Captum attribution returned NaN or infinite values",
}


class NonFiniteError(ValueError):
    """A stage of the pipeline produced NaN or infinite values; no result is returned.

    Attributes
    ----------
    stage : str
        ``"input"``, ``"denoiser"``, ``"model"``, ``"method"`` or ``"attribution"``.
    input_index : int
        Index, in the batch passed by the user, of the first input affected.
    sample_index : int or None
        Noise sample in which it happened (``None`` without smoothing).
    """

    def __init__(self, stage: str, input_index: int, sample_index: int | None = None) -> None:
        self.stage = stage
        self.input_index = int(input_index)
        self.sample_index = None if sample_index is None else int(sample_index)
        where = f"input {self.input_index}"
        if self.sample_index is not None:
            where += f" (noise sample {self.sample_index})"
        what = {
            "input": "the inputs contain",
            "denoiser": "the denoiser returned",
            "model": "the model returned logits with",
            "method": "the explanation method produced a token map with",
            "attribution": "the wrapped attribution returned",
        }.get(stage, f"stage {stage!r} produced")
        super().__init__(
            f"{what} NaN or infinite values for {where}; no map or certificate is returned. "
            f"{STAGES.get(stage, '')}".strip()
        )


class FiniteGuard:
    """Collects per-row finiteness flags of a chunk's stages; one device sync per check.

    Parameters
    ----------
    input_index : Tensor
        ``M`` index of the user input each row belongs to.
    sample_index : Tensor, optional
        ``M`` noise-sample index of each row.
    """

    def __init__(self, input_index: torch.Tensor, sample_index: torch.Tensor | None = None):
        self.input_index = input_index
        self.sample_index = sample_index
        self._flags: list[tuple[str, torch.Tensor]] = []

    def watch(self, stage: str, values: torch.Tensor) -> None:
        """Record which rows of ``values`` (first dimension = rows) hold a non-finite value."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {sorted(STAGES)}")
        values = values.detach()
        bad = ~torch.isfinite(values.reshape(values.shape[0], -1)).all(dim=1)
        self._flags.append((stage, bad))

    def check(self) -> None:
        """Raise :class:`NonFiniteError` for the first bad row of the first bad stage."""
        if not self._flags:
            return
        stacked = torch.stack([bad.any() for _, bad in self._flags])
        if not bool(stacked.any()):  # the one host sync
            self._flags.clear()
            return
        for stage, bad in self._flags:
            if bool(bad.any()):
                row = int(bad.nonzero()[0, 0])
                sample = None if self.sample_index is None else int(self.sample_index[row])
                self._flags.clear()
                raise NonFiniteError(stage, int(self.input_index[row]), sample)
