"""Deprecated: the training program moved to :mod:`captum_fvit.training` (no argparse there).

Kept for one release so that old imports keep working; every name warns with a
``DeprecationWarning``. Use instead:

* ``captum_fvit.training.train_default(out_dir, ...)`` (and the other names of
  :mod:`captum_fvit.training`);
* for a command line: :data:`captum_fvit.training.TRAIN_OPTIONS` (turned into arguments by
  :mod:`captum_fvit.cli`) and ``captum_fvit.training.train_from_options(vars(args))``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["add_train_arguments", "main", "run_from_args"]


def _deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"captum_fvit.models.train.{old} is deprecated and will be removed in the next release; "
        f"use {new}",
        DeprecationWarning,
        stacklevel=3,
    )


def _add_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from ..training import TRAIN_OPTIONS

    for option in TRAIN_OPTIONS:
        if option.type is bool:
            parser.add_argument(option.flag, action="store_true", help=option.help)
        else:
            parser.add_argument(option.flag, type=option.type, default=option.default, help=option.help)
    return parser


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Deprecated: add :data:`captum_fvit.training.TRAIN_OPTIONS` to ``parser``."""
    _deprecated("add_train_arguments", "captum_fvit.training.TRAIN_OPTIONS")
    return _add_options(parser)


def run_from_args(args: argparse.Namespace) -> int:
    """Deprecated: ``captum_fvit.training.train_from_options(vars(args))``."""
    _deprecated("run_from_args", "captum_fvit.training.train_from_options(vars(args))")
    from ..training import train_from_options

    return train_from_options(vars(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Deprecated: ``captum-fvit train-default ...`` (:func:`captum_fvit.cli.main`)."""
    _deprecated("main", 'captum_fvit.cli.main(["train-default", ...])')
    from ..training import train_from_options

    parser = _add_options(argparse.ArgumentParser(prog="captum-fvit train-default"))
    try:
        return train_from_options(vars(parser.parse_args(argv)))
    except (TypeError, ValueError) as err:
        print(f"captum-fvit train-default: error: {err}", file=sys.stderr)
        return 2


def __getattr__(name: str) -> Any:
    """The old names (``train_default``, ``train_vit``, ``QUALITY_BARS``, ...), with a warning."""
    from .. import training

    if name in training.__all__:
        _deprecated(name, f"captum_fvit.training.{name}")
        return getattr(training, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
