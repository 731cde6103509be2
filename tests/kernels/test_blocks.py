"""Row blocks of a path layout (the direct kernels' work units), by hand."""

from __future__ import annotations

import numpy as np
import torch

from hydroscale.kernels import PathLayout


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
