"""Row blocks of a path layout (the direct kernels' work units), by hand."""

from __future__ import annotations

import numpy as np
import torch
from kernel_cases import TRITON_DEVICE, brute_force, requires_triton

from hydroscale.kernels import PathLayout, path_conv, path_conv_reference, set_launch_config


def test_destination_blocks_by_hand():
    # paths p0: s0 -> d0, p1: s0 -> d1, p2: s1 -> d1, p3: s2 -> d2, p4: s0 -> d1 (repeated pair)
    src = torch.tensor([0, 0, 1, 2, 0])
    dst = torch.tensor([0, 1, 1, 2, 1])
    lay = PathLayout.from_pairs(src, dst, 3, 3)
    b = lay.blocks("dst", 2)
    assert b.n_blocks == 2
    assert b.rows.tolist() == [0, 1, 2, -1]
    # block 0 (rows 0, 1): entries s0 (p0, p1), s0 again for the repeated pair (-, p4), s1 (-, p2)
    assert b.ptr.tolist() == [0, 3, 4]
    assert b.other.tolist() == [0, 1, 0, 2]
    none = lay.n_paths
    assert b.path.tolist() == [0, 1, none, 2, none, 4, 3, none]
    assert b.block.tolist() == [0, 0, 0, 1]
    assert abs(b.fill - 5 / 8) < 1e-12
    assert b.heavy_first.tolist() == [0, 1]  # 3 entries, then 1


def test_source_blocks_follow_order_and_groups():
    src = torch.tensor([0, 1, 2, 3])
    dst = torch.tensor([0, 0, 1, 1])
    # key puts rows 3, 0 first; groups keep {0, 2} and {1, 3} in separate blocks
    lay = PathLayout.from_pairs(src, dst, 4, 2,
                                src_order=(np.array([1.0, 3.0, 2.0, 0.0]), np.array([0, 1, 0, 1])))
    b = lay.blocks("src", 2)
    assert b.rows.tolist() == [0, 2, 3, 1]
    # block 0 = rows (0, 2): destinations 0 (p0, -) and 1 (-, p2); block 1 = rows (3, 1):
    # destinations 0 (-, p1) and 1 (p3, -)
    assert b.other.tolist() == [0, 1, 0, 1]
    assert b.path.tolist() == [0, 4, 4, 2, 4, 1, 3, 4]
    assert lay.to("cpu").blocks("src", 2).rows.tolist() == [0, 2, 3, 1]
    assert b.heavy_first.tolist() == [0, 1]  # 2 entries each: block order


def test_source_blocks_leave_out_rows_without_paths():
    # sources 1, 3 and 4 have no path: only rows 0 and 2 get slots (one block of 2)
    src = torch.tensor([0, 2, 2])
    dst = torch.tensor([0, 0, 1])
    lay = PathLayout.from_pairs(src, dst, 5, 2)
    b = lay.blocks("src", 2)
    assert not b.complete and b.n_blocks == 1
    assert b.rows.tolist() == [0, 2]
    assert b.other.tolist() == [0, 1] and b.path.tolist() == [0, 1, 3, 2]
    assert lay.blocks("dst", 2).complete  # destinations always all get a slot
    assert PathLayout.from_pairs(src, dst, 3, 2).blocks("src", 1).rows.tolist() == [0, 2]


def test_entry_runs_by_hand():
    # blocks of 1 row with 1, 3, 0 and 3 entries (entries 0 | 1 2 3 | - | 4 5 6)
    src = torch.tensor([0, 0, 1, 2, 0, 1, 2])
    dst = torch.tensor([0, 1, 1, 1, 3, 3, 3])
    b = PathLayout.from_pairs(src, dst, 3, 4).blocks("dst", 1)
    assert b.entry_runs(1).tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert b.entry_runs(2).tolist() == [0, 1, 3, 4, 6]  # runs never cross a block
    assert b.entry_runs(4).tolist() == [0, 1, 4]
    assert b.entry_runs(2) is b.entry_runs(2)  # built once


def test_heavy_blocks_first():
    # destination rows 0..3 in blocks of 1: 1, 3, 0 (empty) and 3 sources
    src = torch.tensor([0, 0, 1, 2, 0, 1, 2])
    dst = torch.tensor([0, 1, 1, 1, 3, 3, 3])
    b = PathLayout.from_pairs(src, dst, 3, 4).blocks("dst", 1)
    assert (b.ptr[1:] - b.ptr[:-1]).tolist() == [1, 3, 0, 3]
    assert b.heavy_first.tolist() == [1, 3, 0, 2]  # ties keep block order


def test_block_algorithm_choice():
    from hydroscale.kernels._launch import LaunchConfig, use_blocks

    auto, blocks, toeplitz = (LaunchConfig(conv_algorithm=a) for a in ("auto", "blocks",
                                                                       "toeplitz"))
    assert use_blocks(auto, 9) and use_blocks(auto, 32) and not use_blocks(auto, 33)
    assert use_blocks(blocks, 64) and not use_blocks(blocks, 65)  # taps are unrolled
    assert not use_blocks(toeplitz, 9)


@requires_triton
def test_forced_blocks_long_window(make_case):
    """A 40-tap window through the block kernels (beyond auto's choice) against the dense
    float64 loop, forward and gradients."""
    layout, x, w, hist, src, dst = make_case(1, 5, 4, 90, 40, 9)
    dev = TRITON_DEVICE
    previous = set_launch_config(conv_algorithm="blocks", block_time=32, block_grad_w_time=16)
    try:
        xs, ws, hs = (t.detach().clone().to(dev).requires_grad_() for t in (x, w, hist))
        y = path_conv(xs, ws, layout.to(dev), hs, backend="triton")
        gy = torch.randn(1, 4, 90, dtype=torch.float64)
        y.backward(gy.to(dev))
    finally:
        set_launch_config(previous)
    torch.testing.assert_close(y.detach().cpu(), brute_force(x, w, src, dst, 4, hist))
    xr, wr, hr = (t.detach().clone().requires_grad_() for t in (x, w, hist))
    path_conv_reference(xr, wr, layout, hr).backward(gy)
    for got, want in ((xs, xr), (ws, wr), (hs, hr)):
        torch.testing.assert_close(got.grad.cpu(), want.grad)
