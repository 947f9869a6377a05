"""The evaluation runner: attacks × methods × variants over a dataset, streamed to disk.

For every batch of images (pixels in [0, 1], optional masks), every attack of the config
(transfer and adaptive, from :data:`~captum_fvit.evaluate.attacks.registry.ATTACKS`) and every ε of
the sweep, the runner attacks (the paper's protocol: PGD on the plain ViT's prediction, ε in
[0, 1] pixel units) and explains clean and attacked images with each method under each
variant of :data:`~captum_fvit.evaluate.experiment.variants.VARIANTS` (plain ``AttentionMap``,
SmoothGrad, identity smoothing, ``DDSAttention``; smoothed variants use the same seed for
clean and attacked images so the comparison measures the explanation, not Monte-Carlo
noise); optionally it certifies faithful regions. Presets
(:mod:`~captum_fvit.evaluate.experiment.presets`) are configurations of this one runner.

The unit of truth is the per-image row (:mod:`~captum_fvit.evaluate.experiment.pipeline`), streamed to
``results.jsonl`` in ``out_dir`` with one flushed, fsync-ed write per unit (a batch's clean
images, or one attack at one ε). ``resume=True`` continues an interrupted run (finished
units are skipped; the rows are identical to an uninterrupted run's). Under ``torch.distributed`` each rank evaluates its share of the
batches (:mod:`~captum_fvit.evaluate.experiment.distributed`) into ``results.rank{r}.jsonl``; after a
barrier the shards are merged. Aggregates (:mod:`~captum_fvit.evaluate.experiment.aggregate`) are
computed from the rows; :func:`write_report` writes ``results.json``, ``results.csv``,
``summary.md`` and ``report.html``.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...space import Normalization, resolve_normalization
from ...validation import check_count
from ..report.write import write_report
from .aggregate import EvaluationResult, aggregate_rows
from .config import VARIANTS, EvaluationConfig
from .distributed import Shard, current_shard, shard_batches
from .pipeline import KEY_FIELDS, Pipeline, load_batch
from .provenance import describe, versions
from .rows import RowWriter, read_jsonl, read_rows, row_key, shard_path

__all__ = [
    "EvaluationConfig",
    "EvaluationResult",
    "VARIANTS",
    "evaluate",
    "stream_files",
    "write_report",
]

#: Test hook: a process that has written at least this many rows kills itself with SIGKILL
#: (used by the test suite to interrupt a run half-way for real).
KILL_AFTER_ROWS_ENV = "CAPTUM_FVIT_TEST_KILL_AFTER_ROWS"

EXAMPLES_FILE = "examples.pt"


def stream_files(out_dir: str | os.PathLike) -> list[Path]:
    """Every row file of a run folder: ``results.jsonl`` and the rank shards."""
    out = Path(out_dir)
    return [out / "results.jsonl", *sorted(out.glob("results.rank*.jsonl"))]


def _header(config: EvaluationConfig, n_images: int, setup: dict) -> dict:
    return {
        "kind": "run",
        "config": config.to_dict(),
        "n_images": n_images,
        "setup": setup,
        "versions": versions(),
    }


def _check_same_run(out: Path, header: dict) -> None:
    """Refuse to resume rows of a different configuration or dataset size."""
    for path in stream_files(out):
        for row in read_jsonl(path):
            if row.get("kind") != "run":
                continue
            before = {**row["config"], "n_images": row["n_images"]}
            now = {**header["config"], "n_images": header["n_images"]}
            changed = [k for k in now if before.get(k) != now[k]]
            if changed:
                details = ", ".join(f"{k}: {before.get(k)!r} → {now[k]!r}" for k in changed)
                raise ValueError(
                    f"cannot resume in {out}: its rows were computed with other settings "
                    f"({details}); run with the original options, or start over in a new --out "
                    "folder (or without --resume)"
                )
            break


class _Progress:
    """Progress in images with an ETA (tqdm), or nothing."""

    def __init__(self, enabled: bool, total: int, shard: Shard) -> None:
        self.bar = None
        if enabled and shard.is_main:
            from tqdm.auto import tqdm

            desc = "evaluate" if not shard.distributed else f"evaluate (rank 0 of {shard.world_size})"
            self.bar = tqdm(total=total, desc=desc, unit="img")

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _kill_hook(written: int) -> None:
    limit = os.environ.get(KILL_AFTER_ROWS_ENV)
    if limit and written >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


def evaluate(
    model: nn.Module,
    dataset: Any,
    *,
    denoiser: Callable | None = None,
    normalization: Normalization | None = None,
    config: EvaluationConfig | None = None,
    n_images: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    process_group: Any = None,
    setup: Mapping[str, str] | None = None,
) -> EvaluationResult:
    """Evaluate explanation faithfulness on ``dataset``, streaming per-image rows.

    Parameters
    ----------
    model : nn.Module
        ViT classifier (eval mode) taking inputs in ``normalization``; not modified.
    dataset : Dataset
        Samples ``{"image": 3×H×W in [0, 1], "label": int (-1 = unknown), "mask": 1×H×W bool
        or None}`` (``ShapesBenchmark``, ``ImageFolderWithMasks``, ``ImageNetSegmentation``).
    denoiser : callable, optional
        DDS denoiser (``None`` = identity: randomized smoothing without denoising).
    normalization : Normalization, optional
        The model's input normalisation (default from the model).
    config : EvaluationConfig, optional
        What to run (default :class:`EvaluationConfig()`).
    n_images : int, optional
        Evaluate only the first ``n_images`` (≥ 1).
    device : str or torch.device
        Where to run.
    progress : bool
        Show progress in images with an ETA (rank 0 only).
    out_dir : path, optional
        Folder for the row stream ``results.jsonl`` (``results.rank{r}.jsonl`` per rank when
        distributed) and ``examples.pt``; default a temporary folder (required with several
        ranks or ``resume``).
    resume : bool
        Keep the rows already in ``out_dir`` and compute only what is missing.
    process_group : ProcessGroup, optional
        Shard the images over this ``torch.distributed`` group (default: the default group
        when ``torch.distributed`` is initialised). Every rank gets the merged result.
    setup : mapping, optional
        Human names of ``"model"``, ``"denoiser"`` and ``"data"`` for the report (default:
        class names).

    Returns
    -------
    EvaluationResult
        Aggregates of all rows (every rank receives the same).

    Raises
    ------
    captum_fvit.errors.NonFiniteError
        (:class:`~captum_fvit.evaluate.experiment.pipeline.ImageFailure`) naming the image whose
        pipeline produced NaN/inf; the rows of earlier batches stay on disk.
    """
    config = config or EvaluationConfig()
    config.validate()
    if n_images is not None:
        n_images = check_count(n_images, "n_images")
    total = len(dataset) if n_images is None else min(n_images, len(dataset))
    if total == 0:
        raise ValueError("the dataset is empty: nothing to evaluate")
    shard = current_shard(process_group)
    if out_dir is None and (shard.distributed or resume):
        raise ValueError("give out_dir= (a folder every rank can write) to resume or shard")
    run = dict(denoiser=denoiser, normalization=normalization, config=config, total=total,
               device=device, progress=progress, shard=shard, setup=setup)  # fmt: skip
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="captum_fvit_eval_") as tmp:
            return _evaluate(model, dataset, out=Path(tmp), resume=False, **run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _evaluate(model, dataset, out=out, resume=resume, **run)


def _evaluate(model, dataset, *, denoiser, normalization, config, total, device, progress, out,
              resume, shard, setup) -> EvaluationResult:  # fmt: skip
    device = torch.device(device)
    normalization = normalization or resolve_normalization(model)
    setup = {
        "model": describe(model),
        "denoiser": describe(denoiser, "identity (no denoising)"),
        "data": describe(dataset),
        **dict(setup or {}),
    }
    header = _header(config, total, setup)
    if resume:
        _check_same_run(out, header)
    elif shard.is_main:
        for path in [*stream_files(out), out / EXAMPLES_FILE]:
            path.unlink(missing_ok=True)
    shard.barrier()
    pipeline = Pipeline.build(model, denoiser, normalization, config, device)
    done: set[tuple] = set()
    if resume:
        for path in stream_files(out):
            done |= {row_key(r, KEY_FIELDS) for r in read_jsonl(path)}
    plan = shard_batches(total, config.batch_size, shard.rank, shard.world_size)
    bar = _Progress(progress, sum(len(b) for b in plan), shard)
    path = shard_path(out, shard.rank, shard.world_size)
    with RowWriter(path, KEY_FIELDS, resume=resume) as writer:
        writer.write([header])
        counts = _run_plan(pipeline, dataset, plan, writer, done, out, bar)
    bar.close()
    shard.barrier()
    return _merge(out, shard, header, total, setup, counts)


def _run_plan(pipeline, dataset, plan, writer, done, out, bar) -> dict[str, float]:
    """Evaluate the batches of ``plan`` unit by unit, skipping units already on disk."""
    counts = {"units_run": 0, "units_skipped": 0, "seconds": 0.0}
    written = 0
    for images in plan:
        todo = [u for u in pipeline.units() if pipeline.unit_images(u, images)]
        todo_keys = [(u, pipeline.expected_keys(images, u)) for u in todo]
        missing = [u for u, keys in todo_keys if not keys <= done]
        counts["units_skipped"] += len(todo) - len(missing)
        if missing:
            began = time.process_time()
            batch = load_batch(dataset, images.start // pipeline.config.batch_size, images)
            state = pipeline.prepare(batch)
            for unit in missing:
                rows = pipeline.unit_rows(state, unit)
                written += writer.write(r for r in rows if row_key(r, KEY_FIELDS) not in done)
                counts["units_run"] += 1
                _kill_hook(written)
            counts["seconds"] += time.process_time() - began
            if state.examples:
                _save_examples(out, state.examples)
        bar.update(len(images))
    return counts


def _save_examples(out: Path, examples: dict) -> None:
    """Write the figure material, keeping maps of units computed by an earlier process."""
    path = out / EXAMPLES_FILE
    if path.exists():
        before = torch.load(path, weights_only=False)
        examples = {**before, **examples, "maps": {**before.get("maps", {}), **examples["maps"]}}
    tmp = out / (EXAMPLES_FILE + ".tmp")
    torch.save(examples, tmp)
    os.replace(tmp, path)


def _merge(out: Path, shard: Shard, header: dict, total: int, setup: dict,
           counts: dict) -> EvaluationResult:  # fmt: skip
    """Rank 0 merges the shards; every rank aggregates the merged rows."""
    rows = read_rows(stream_files(out), KEY_FIELDS)
    if shard.distributed and shard.is_main:
        merged = out / "results.jsonl.tmp"
        with RowWriter(merged, KEY_FIELDS, fsync=True) as writer:
            writer.write(rows)
        os.replace(merged, out / "results.jsonl")
    shard.barrier()
    examples = {}
    if (out / EXAMPLES_FILE).exists():
        examples = torch.load(out / EXAMPLES_FILE, weights_only=False)
    meta = {"setup": setup, "versions": header["versions"], "world_size": shard.world_size,
            **counts}  # fmt: skip
    result = aggregate_rows(rows, header["config"], meta, examples)
    missing = set(range(total)) - {r["image"] for r in result.records}
    if missing:  # pragma: no cover - would be a bug in sharding or resuming
        raise RuntimeError(f"images {sorted(missing)[:8]} have no rows after the run")
    return result
