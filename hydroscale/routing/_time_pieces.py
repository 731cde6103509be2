"""Time pieces of a forward on one device: the steps of a call cut into pieces that follow
each other batch by batch.

A router's forward is a sequence of batches (the clusters of a wave, or a run of node
clusters), each reading what earlier batches wrote.  Cut the steps into pieces ``0 .. P-1``:
piece ``p`` of a batch reads the inputs of its own steps and of the steps before (causal
kernels), so it needs only earlier batches (its own piece and the ones before) and piece
``p - 1`` of the same batch (for a node step, its state at the end of that piece).  On CUDA
each piece runs on its own stream and waits for the event of piece ``p - 1`` of the same
batch: while piece 0 runs batch ``j + 1``, piece 1 runs batch ``j``.  A batch whose time is
a sequential loop over its steps (a lake's level pool) or a small launch then overlaps the
next pieces' work instead of holding up every later batch; the results are the same.  On a
CPU the pieces run one after the other on the one stream (the same order, no overlap).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

__all__ = ["AUTO_PIECES_WORK", "TimePieces", "auto_pieces"]

# reach sub-steps of one call (reaches x steps x sub-steps) from which ``time_pieces="auto"``
# cuts a forward with lakes into 2 pieces.  On one H200, 1% of the reaches in lakes, 365-day
# chunks at 24 sub-steps (bench/lakes.py): at 200k reaches (1.8e9) 2 pieces took 170-190 ms a
# chunk against 75-80 ms in one, side by side (a profile points at the host: twice the
# launches, each ~0.5 ms of Python per batch and piece); at 3M reaches (2.6e10), three decades
# side by side in one process, 3.23-3.24 s in one piece, 2.71-2.78 s in two and 2.61-2.83 s in
# three (1.93 s without lakes; a profile shows the GPU busy 99% of a chunk's span in two
# pieces, so the host no longer sets the time there).  Between the two sizes it is not yet
# measured.
AUTO_PIECES_WORK = 1e10

_STREAMS: dict = {}


def _piece_streams(device: torch.device, n: int) -> list:
    """``n`` streams of ``device`` for pieces 1 .. n (made once per device, reused)."""
    key = device.index if device.index is not None else torch.cuda.current_device()
    have = _STREAMS.setdefault(key, [])
    while len(have) < n:
        have.append(torch.cuda.Stream(device=key))
    return have[:n]


def auto_pieces(requested: int | str, *, device: Any, has_nodes: bool, n_reaches: int,
                n_steps: int, substeps: int) -> int:
    """The pieces of a forward without gradients: ``requested``, or for ``"auto"`` 2 on
    CUDA where the network has node clusters (the sequential loops the pieces overlap) and
    the call routes at least :data:`AUTO_PIECES_WORK` reach sub-steps, else 1."""
    if requested != "auto":
        return int(requested)
    big = int(n_reaches) * int(n_steps) * int(substeps) >= AUTO_PIECES_WORK
    return 2 if torch.device(device).type == "cuda" and has_nodes and big else 1


class TimePieces:
    """Run batches over ``pieces`` about equal pieces of ``n_steps`` steps (see the module).

    Use as a context (the other pieces' streams wait for the current stream on entry; it waits
    for them on exit), calling :meth:`run` once per batch in order.
    """

    def __init__(self, n_steps: int, pieces: int, device: Any) -> None:
        n = max(1, min(int(pieces), int(n_steps)))
        cuts = np.linspace(0, int(n_steps), n + 1).round().astype(np.int64)
        self.windows = [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:])]
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.streams: list = [None] * n
        if self.cuda:
            self.streams = [torch.cuda.current_stream(self.device),
                            *_piece_streams(self.device, n - 1)]

    def __enter__(self) -> TimePieces:
        if self.cuda:
            for s in self.streams[1:]:
                s.wait_stream(self.streams[0])  # the inputs are written
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            for s in self.streams[1:]:
                self.streams[0].wait_stream(s)  # the outputs are written

    def run(self, fn: Callable[[int, tuple[int, int]], None]) -> None:
        """``fn(p, (a, b))`` for every piece in order, piece ``p`` on its stream after piece
        ``p - 1`` of this batch."""
        done = None
        for p, window in enumerate(self.windows):
            stream = self.streams[p]
            with torch.cuda.stream(stream) if self.cuda else nullcontext():
                if done is not None:
                    stream.wait_event(done)
                fn(p, window)
                if self.cuda and p + 1 < len(self.windows):
                    done = torch.cuda.Event()
                    done.record(stream)

    def shared(self, *tensors: torch.Tensor | None) -> None:
        """Tensors made on the current stream and read by the other pieces' streams: their
        memory is not reused before those streams are done with them."""
        if self.cuda:
            for t in tensors:
                if t is not None:
                    for s in self.streams[1:]:
                        t.record_stream(s)
