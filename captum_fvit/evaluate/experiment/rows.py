"""Per-row results on disk: the unit of truth of a long evaluation.

An evaluation writes one JSON object per line ("row") to a JSON-lines file as soon as the
row is computed, one flushed and ``fsync``-ed write per batch, so a run killed at any moment
loses at most the batch in flight. Rows are identified by a *key* (a tuple of some of their
fields, e.g. ``("kind", "image", "method", "variant", "eps")``):

* :class:`RowWriter` appends rows and, when resuming, reports the keys already on disk
  (:meth:`RowWriter.done_keys`). A torn last line — a write cut by ``SIGKILL`` or a full
  disk — is dropped (and truncated away before anything is appended).
* :func:`read_rows` reads one or several files (e.g. the rank shards
  ``results.rank{r}.jsonl`` of a distributed run), drops torn lines and duplicate keys
  (first occurrence wins) and returns the rows in a deterministic order.
* :func:`mean_ci` and :func:`group_rows` aggregate rows: means with a percentile bootstrap
  95 % confidence interval (seeded, so the same rows give the same interval).

Floats are written with Python's shortest round-trip ``repr``: a row read back is bit for bit
the row written. NaN and ±inf are written as ``NaN``/``Infinity`` (Python's ``json`` module
reads them back).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "RowWriter",
    "group_rows",
    "mean_ci",
    "read_jsonl",
    "read_rows",
    "row_key",
    "shard_path",
]

Key = tuple


def row_key(row: dict, key_fields: Sequence[str]) -> Key:
    """The key of ``row``: its values of ``key_fields`` (missing fields are ``None``)."""
    return tuple(row.get(name) for name in key_fields)


def shard_path(out_dir: str | os.PathLike, rank: int, world_size: int) -> Path:
    """Where rank ``rank`` streams its rows: ``results.jsonl`` for one process, else
    ``results.rank{rank}.jsonl``."""
    name = "results.jsonl" if world_size == 1 else f"results.rank{rank}.jsonl"
    return Path(out_dir) / name


def _complete_prefix(data: bytes) -> tuple[list[dict], int]:
    """Parse the complete lines of ``data``; return the rows and the byte length they span.

    A line is complete when it ends with a newline and holds one JSON object. Parsing stops at
    the first incomplete or unreadable line (only the last write can be torn).
    """
    rows: list[dict] = []
    end = 0
    while end < len(data):
        newline = data.find(b"\n", end)
        if newline < 0:
            break
        line = data[end:newline]
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError:
                break
            if not isinstance(row, dict):
                break
            rows.append(row)
        end = newline + 1
    return rows, end


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The complete rows of one JSON-lines file (a torn tail is ignored; missing file → [])."""
    path = Path(path)
    if not path.exists():
        return []
    rows, _ = _complete_prefix(path.read_bytes())
    return rows


class RowWriter:
    """Append rows to a JSON-lines file, one durable write per batch.

    Parameters
    ----------
    path : path
        The ``.jsonl`` file (its folder must exist).
    key_fields : sequence of str
        Fields that identify a row (used by :meth:`done_keys` and to refuse duplicates).
    resume : bool, default False
        Keep the rows already in ``path`` (a torn last line is truncated away) and report
        their keys in :meth:`done_keys`; ``False`` starts an empty file.
    fsync : bool, default True
        ``os.fsync`` after every :meth:`write` (durable against power loss, not only
        against a killed process).

    Examples
    --------
    >>> with RowWriter(tmp / "results.jsonl", ("image", "method")) as w:  # doctest: +SKIP
    ...     w.write([{"image": 0, "method": "raw", "v_k": 0.8}])
    """

    def __init__(
        self,
        path: str | os.PathLike,
        key_fields: Sequence[str],
        *,
        resume: bool = False,
        fsync: bool = True,
    ) -> None:
        if not key_fields:
            raise ValueError("key_fields must name at least one field that identifies a row")
        self.path = Path(path)
        self.key_fields = tuple(key_fields)
        self.fsync = bool(fsync)
        self._done: set[Key] = set()
        if resume and self.path.exists():
            data = self.path.read_bytes()
            rows, end = _complete_prefix(data)
            if end < len(data):
                with open(self.path, "r+b") as handle:
                    handle.truncate(end)
            self._done = {row_key(r, self.key_fields) for r in rows}
            self._handle = open(self.path, "a", encoding="utf-8")
        else:
            self._handle = open(self.path, "w", encoding="utf-8")

    def done_keys(self) -> set[Key]:
        """Keys of every row in the file (those found when resuming and those written since)."""
        return set(self._done)

    def write(self, rows: Iterable[dict]) -> int:
        """Append ``rows`` (skipping keys already in the file) in one flushed write.

        Returns
        -------
        int
            Rows written.
        """
        lines = []
        for row in rows:
            key = row_key(row, self.key_fields)
            if key in self._done:
                continue
            self._done.add(key)
            lines.append(json.dumps(row, sort_keys=True, allow_nan=True) + "\n")
        if lines:
            self._handle.write("".join(lines))
            self._handle.flush()
            if self.fsync:
                os.fsync(self._handle.fileno())
        return len(lines)

    def close(self) -> None:
        """Close the file (rows already written stay)."""
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_rows(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    key_fields: Sequence[str],
    *,
    sort_key: Callable[[dict], Any] | None = None,
) -> list[dict]:
    """Merge the rows of one or several JSON-lines files without duplicates.

    Parameters
    ----------
    paths : path or iterable of paths
        Files to read (missing files are skipped; a torn last line is ignored).
    key_fields : sequence of str
        Fields identifying a row; of several rows with the same key the first one read wins.
    sort_key : callable, optional
        Order of the result (default: by key, ``None`` sorted first, numbers before strings).

    Returns
    -------
    list of dict
        The rows, sorted.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    seen: dict[Key, dict] = {}
    for path in paths:
        for row in read_jsonl(path):
            seen.setdefault(row_key(row, key_fields), row)
    rows = list(seen.values())
    if sort_key is None:
        def sort_key(row: dict) -> tuple:
            return tuple(_orderable(v) for v in row_key(row, key_fields))

    rows.sort(key=sort_key)
    return rows


def _orderable(value: Any) -> tuple:
    if value is None:
        return (0, 0, "")
    if isinstance(value, (int, float)):
        return (1, value, "")
    return (2, 0, str(value))


def mean_ci(
    values: Sequence[float],
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float, int]:
    """Mean of the finite ``values`` and a percentile-bootstrap confidence interval.

    Parameters
    ----------
    values : sequence of float
        One value per image (NaN values are left out).
    level : float, default 0.95
        Confidence level of the interval.
    n_boot : int, default 2000
        Bootstrap resamples.
    seed : int, default 0
        Seed of the resampling (the same values give the same interval).

    Returns
    -------
    tuple
        ``(mean, low, high, n)``; NaNs when no value is finite; ``low = high = mean`` for a
        single value.
    """
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    array = array[np.isfinite(array)]
    n = int(array.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(array.mean())
    if n == 1 or np.all(array == array[0]):
        return mean, mean, mean, n
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(n_boot, n))
    means = array[index].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return mean, float(low), float(high), n


def group_rows(rows: Iterable[dict], fields: Sequence[str]) -> dict[Key, list[dict]]:
    """Rows grouped by their values of ``fields`` (groups in first-seen order)."""
    groups: dict[Key, list[dict]] = {}
    for row in rows:
        groups.setdefault(row_key(row, fields), []).append(row)
    return groups
