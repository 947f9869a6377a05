"""Thread safety: one re-entrant lock per model, held from attaching hooks to restoring it.

Recording attention changes a model for the duration of a call: timm's ``fused_attn`` flags
are switched off, Hugging Face's ``config._attn_implementation`` is set to ``"eager"``, hooks
are registered. Two threads doing that on the same model at once would each save the
*other's* temporary state and "restore" it — leaving the model changed for good — and would
read each other's attention. Every explainer therefore holds :func:`model_lock` for the
model during a whole call: calls on one model from several threads run one after the other
and give exactly the sequential results; calls on different models run in parallel.

The lock is re-entrant, so an explainer may call another explainer (or the recorder) on the
same model inside its own call. Code of your own that runs the model while another thread
explains it sees the temporarily unfused attention (numerically equal to the fused one, not
bit for bit); take ``model_lock(model)`` around it if that matters.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["model_lock"]

_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FALLBACK: dict[int, threading.RLock] = {}
_GUARD = threading.Lock()


def _lock_for(model: object) -> threading.RLock:
    with _GUARD:
        try:
            lock = _LOCKS.get(model)
            if lock is None:
                lock = _LOCKS[model] = threading.RLock()
        except TypeError:  # not weak-referenceable (e.g. a bound method): keyed by id
            lock = _FALLBACK.setdefault(id(model), threading.RLock())
        return lock


@contextmanager
def model_lock(model: object) -> Iterator[None]:
    """Hold ``model``'s re-entrant lock for the ``with`` block."""
    lock = _lock_for(model)
    with lock:
        yield
