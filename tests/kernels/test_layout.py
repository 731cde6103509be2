"""PathLayout: CSR grouping both ways, validation."""

from __future__ import annotations

import pytest
import torch

from hydroscale.kernels import PathLayout


def test_csr_both_ways():
    src = torch.tensor([2, 0, 1, 2, 0])
    dst = torch.tensor([1, 1, 0, 3, 1])
    lay = PathLayout.from_pairs(src, dst, n_src=4, n_dst=4)
    assert lay.dst_ptr.tolist() == [0, 1, 4, 4, 5]
    assert lay.by_dst_path.tolist() == [2, 0, 1, 4, 3]
    assert lay.by_dst_src.tolist() == [1, 2, 0, 0, 2]
    assert lay.src_ptr.tolist() == [0, 2, 3, 5, 5]
    assert lay.by_src_path.tolist() == [1, 4, 2, 0, 3]
    assert lay.by_src_dst.tolist() == [1, 1, 0, 1, 3]
    assert (lay.max_paths_per_dst, lay.max_paths_per_src) == (3, 2)
    assert lay.n_paths == 5


def test_rejects_out_of_range_rows():
    with pytest.raises(ValueError, match=r"dst must lie in \[0, 2\); paths \[1\] have dst \[5\]"):
        PathLayout.from_pairs([0, 1], [1, 5], n_src=2, n_dst=2)
    with pytest.raises(ValueError, match=r"src must lie in \[0, 2\); paths \[0\] have src \[-1\]"):
        PathLayout.from_pairs([-1, 1], [1, 1], n_src=2, n_dst=2)


def test_rejects_bad_shapes_and_types():
    with pytest.raises(ValueError, match="same length"):
        PathLayout.from_pairs([0, 1], [1], n_src=2, n_dst=2)
    with pytest.raises(TypeError, match="must be integer"):
        PathLayout.from_pairs(torch.tensor([0.0]), torch.tensor([1]), n_src=2, n_dst=2)
