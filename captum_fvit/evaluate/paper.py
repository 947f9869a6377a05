"""Deprecated home of the paper preset: it is now a configuration of the one runner,
:mod:`captum_fvit.evaluate.experiment.presets` (``captum-fvit evaluate --preset paper``)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

from .experiment.presets import ATTACK_NAMES, PaperResult, run_paper_preset
from .report.paper_table import markdown_to_rst, write_paper_table

__all__ = ["ATTACK_NAMES", "PaperResult", "markdown_to_rst", "run_paper_preset", "write_paper_table"]


def main(argv: Sequence[str] | None = None) -> int:
    """Deprecated: ``python -m captum_fvit.evaluate.paper ARGS`` runs
    ``captum-fvit evaluate --preset paper ARGS``."""
    from ..cli import main as cli

    warnings.warn("python -m captum_fvit.evaluate.paper is deprecated; use captum-fvit evaluate "
                  "--preset paper", DeprecationWarning, stacklevel=2)  # fmt: skip
    return cli(["evaluate", "--preset", "paper", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
