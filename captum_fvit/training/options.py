"""The options of ``captum-fvit train-default`` as plain data, and running them.

:data:`TRAIN_OPTIONS` describes every option (flag, type, default, help); the command line
(:mod:`captum_fvit.cli`, the only argparse of the package) turns each into an argument, and
:func:`train_from_options` runs :func:`~captum_fvit.training.bundle.train_default` from the
parsed values and prints a summary. Nothing here depends on argparse::

    for option in TRAIN_OPTIONS:
        if option.type is bool:   # a switch: present -> True
            parser.add_argument(option.flag, action="store_true", help=option.help)
        else:
            parser.add_argument(option.flag, type=option.type, default=option.default,
                                help=option.help)
    ...
    return train_from_options(vars(args))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..validation import check_count, check_steps
from .bundle import train_default

__all__ = ["TRAIN_OPTIONS", "TrainOption", "summary_lines", "train_from_options"]


@dataclass(frozen=True)
class TrainOption:
    """One option of ``train-default``.

    Attributes
    ----------
    name : str
        Key of the parsed value (argparse's ``dest``: the flag without ``--``, ``-`` → ``_``).
    type : type
        ``int``, ``str`` or ``bool`` (a switch: absent ``False``, present ``True``).
    default : object
        Value when the option is not given.
    help : str
        One line for ``--help``.
    check : callable, optional
        ``check(value, flag)`` from :mod:`captum_fvit.validation`, run on a given value so
        that the error names the flag.
    """

    name: str
    type: type
    default: Any
    help: str
    check: Callable[[Any, str], Any] | None = None

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. ``--vit-steps``."""
        return "--" + self.name.replace("_", "-")


#: Every option of ``captum-fvit train-default``, in ``--help`` order.
TRAIN_OPTIONS: tuple[TrainOption, ...] = (
    TrainOption("out", str, "captum_fvit_default", "output folder (created)"),
    TrainOption("seed", int, 0, "training seed (default 0)"),
    TrainOption("quick", bool, False, "a few steps only: check the recipe runs end to end"),
    TrainOption("vit_steps", int, None, "override the ViT's first-stage optimiser steps", check_steps),
    TrainOption("unet_steps", int, None, "override the UNet's optimiser steps", check_steps),
    TrainOption(
        "threads", int, 1, "torch CPU threads (default 1; reproducibility needs the same value)", check_count
    ),
    TrainOption("no_progress", bool, False, "hide the progress bars"),
)


def _train_keywords(values: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`train_default` keywords from option values (missing ones take their default)."""
    given = {option.name: values.get(option.name, option.default) for option in TRAIN_OPTIONS}
    for option in TRAIN_OPTIONS:
        if option.check is not None and given[option.name] is not None:
            option.check(given[option.name], option.flag)
    return {
        "out_dir": Path(given["out"]),
        "seed": given["seed"],
        "quick": bool(given["quick"]),
        "vit_steps": given["vit_steps"],
        "unet_steps": given["unet_steps"],
        "threads": given["threads"],
        "progress": not given["no_progress"],
    }


def summary_lines(manifest: Mapping[str, Any], out_dir: str | Path) -> list[str]:
    """What ``train-default`` prints after writing a bundle: the file and its metrics."""
    m = manifest["metrics"]
    d = m["denoising"]
    return [
        f"wrote {Path(out_dir) / 'manifest.json'} ({'quick run' if manifest['quick'] else 'full recipe'})",
        f"accuracy          {m['accuracy']['value']:.4f}  ({m['accuracy']['n']} images, seed {m['seed']})",
        f"rollout mass ratio {m['rollout']['ratio']:.3f}  ({m['rollout']['n']} images)",
        f"PSNR at sigma={d['sigma']:g}: noisy {d['noisy_db']:.2f} dB -> denoised {d['denoised_db']:.2f} dB "
        f"(gain {d['gain_db']:.2f} dB, {d['n']} images)",
        f"all quality bars met: {m['passed']['all']}; training took "
        f"{manifest['training']['total_wall_s']:.0f} s",
    ]


def train_from_options(values: Mapping[str, Any], *, echo: Callable[[str], Any] = print) -> int:
    """Run ``train-default`` from option values (keys: :attr:`TrainOption.name`); return 0.

    Extra keys (``command``, ``debug``) are ignored.

    Raises
    ------
    TypeError, ValueError
        On invalid values; the message names the flag (e.g. ``--vit-steps``).
    """
    keywords = _train_keywords(values)
    manifest = train_default(**keywords)
    for line in summary_lines(manifest, keywords["out_dir"]):
        echo(line)
    return 0
