"""reuse_packed_taps: one packing per (weights, blocks) within the context, a new one when
the weights change, and block launches that read the reused packing give the oracle."""

from __future__ import annotations

import pytest
import torch
from kernel_cases import TRITON_DEVICE, brute_force

from hydroscale.kernels import RowTarget, path_conv_into, reuse_packed_taps, set_launch_config
from hydroscale.kernels._tap_reuse import packed_once


def _counting(w):
    calls = []

    def pack():
        calls.append(1)
        return w * 2.0

    return calls, pack


def test_packed_once_per_weights_and_blocks():
    w, blocks, other = torch.arange(6.0).view(2, 3), object(), object()
    calls, pack = _counting(w)
    packed_once(w, blocks, pack)
    packed_once(w, blocks, pack)
    assert len(calls) == 2  # no context: packed every time
    with reuse_packed_taps():
        first = packed_once(w, blocks, pack)
        assert packed_once(w, blocks, pack) is first and len(calls) == 3
        packed_once(w, other, pack)  # other blocks
        assert len(calls) == 4
        packed_once(w[:], blocks, pack)  # another tensor object (a view)
        assert len(calls) == 5
        w.mul_(10.0)  # modified in place: its version moves, the packing is stale
        again = packed_once(w, blocks, pack)
        assert len(calls) == 6 and again is not first
        torch.testing.assert_close(again, torch.arange(6.0).view(2, 3) * 20.0)
    packed_once(w, blocks, pack)
    assert len(calls) == 7  # the context's packings are gone


def test_inference_tensors_are_packed_every_time():
    with torch.inference_mode():
        w = torch.ones(2, 2)
    calls, pack = _counting(w)
    with reuse_packed_taps():
        packed_once(w, object(), pack)
        blocks = object()
        packed_once(w, blocks, pack)
        packed_once(w, blocks, pack)
    assert len(calls) == 3


@pytest.mark.skipif(TRITON_DEVICE is None, reason="needs Triton (GPU or TRITON_INTERPRET=1)")
def test_block_launches_reuse_taps_until_the_weights_change(make_case, monkeypatch):
    """Two launches of the same weights and layout pack once and both equal the float64
    oracle; after the weights change in place the next launch packs again and equals the
    oracle of the new weights."""
    from hydroscale.kernels import _triton_ops

    layout, x, w, hist, src, dst = make_case(2, 6, 5, 40, 4, 14, heavy_dst=3, heavy=6)
    dev = TRITON_DEVICE
    xd, wd, ld, hd = x.to(dev), w.to(dev).clone(), layout.to(dev), hist.to(dev)
    launches = []
    real = _triton_ops._pack_taps_kernel

    class Counting:
        def __getitem__(self, grid):
            launches.append(grid)
            return real[grid]

    monkeypatch.setattr(_triton_ops, "_pack_taps_kernel", Counting())
    previous = set_launch_config(conv_algorithm="blocks", block_split_history=False)
    try:
        with reuse_packed_taps():
            outs = []
            for _ in range(2):
                out = torch.zeros(2, 5, 40, dtype=x.dtype, device=dev)
                path_conv_into(xd, wd, ld, RowTarget(out, 0, out, 0, 5), hd, backend="triton")
                outs.append(out.cpu())
            assert len(launches) == 1
            wd.mul_(0.5)
            out = torch.zeros(2, 5, 40, dtype=x.dtype, device=dev)
            path_conv_into(xd, wd, ld, RowTarget(out, 0, out, 0, 5), hd, backend="triton")
            assert len(launches) == 2
    finally:
        set_launch_config(previous)
    expect = brute_force(x, w, src, dst, 5, hist)
    for got in outs:
        torch.testing.assert_close(got, expect, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.cpu(), brute_force(x, w * 0.5, src, dst, 5, hist),
                               rtol=1e-10, atol=1e-10)


def test_the_context_is_the_threads_own():
    """Another thread's launches pack as if no context were open."""
    import threading

    w, blocks = torch.ones(2, 2), object()
    calls, pack = _counting(w)
    with reuse_packed_taps():
        packed_once(w, blocks, pack)
        t = threading.Thread(target=lambda: [packed_once(w, blocks, pack) for _ in range(2)])
        t.start()
        t.join()
        packed_once(w, blocks, pack)
    assert len(calls) == 3  # once here, twice in the other thread
