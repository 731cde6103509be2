"""Reuse of the block kernels' packed taps across launches of the same weights.

The block forward packs a launch's taps ``w [P, K]`` into its blocks' cells (one pass over
``w``, one launch).  A router that launches the same weights several times in a row, such as
the time pieces of a forward (one launch per piece and batch), opens :func:`reuse_packed_taps`
so that each (weights, blocks) pair is packed once: within the context a packing is kept
while the weight tensor object is alive and unmodified (its version counter unchanged).  A
packing reused on another CUDA stream than the one that made it is recorded on that stream,
so the context may close while those streams still read it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

__all__ = ["reuse_packed_taps", "packed_once"]

_LOCAL = threading.local()  # .open: one cache per open context of this thread, innermost last


def _open() -> list[dict]:
    if not hasattr(_LOCAL, "open"):
        _LOCAL.open = []
    return _LOCAL.open


@contextmanager
def reuse_packed_taps() -> Iterator[None]:
    """Within the context, the taps of the same weight tensor and blocks are packed once
    (the packings are dropped on exit; the context is the calling thread's)."""
    caches = _open()
    caches.append({})
    try:
        yield
    finally:
        caches.pop()


def packed_once(w: torch.Tensor, blocks: object, pack: Callable[[], torch.Tensor]
                ) -> torch.Tensor:
    """``pack()``, or the packing kept for the same ``w`` and ``blocks`` in an open
    :func:`reuse_packed_taps` (``w``'s version counter unchanged since)."""
    caches = _open()
    if not caches:
        return pack()
    try:
        version = w._version
    except RuntimeError:  # an inference tensor: no version counter, no reuse
        return pack()
    cache = caches[-1]
    key = (id(w), id(blocks))
    hit = cache.get(key)
    if hit is not None and hit[0] is w and hit[1] is blocks and hit[2] == version:
        out = hit[3]
        if out.is_cuda:  # read on this stream too: its memory waits for it when freed
            stream = torch.cuda.current_stream(out.device)
            if stream != hit[4]:
                out.record_stream(stream)
        return out
    out = pack()
    made_on = torch.cuda.current_stream(out.device) if out.is_cuda else None
    cache[key] = (w, blocks, version, out, made_on)  # the references keep both ids unique
    return out
