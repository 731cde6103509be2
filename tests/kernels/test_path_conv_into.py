"""path_conv_into: the forward written or added in place into rows of larger tensors."""

from __future__ import annotations

import pytest
import torch
from kernel_cases import TRITON_DEVICE, brute_force

from hydroscale.kernels import RowTarget, path_conv_into, set_launch_config


def _backends():
    out = ["torch"]
    if TRITON_DEVICE is not None:
        out += ["triton:blocks", "triton:toeplitz", "triton:blocks-split"]
    return out


def _config(algorithm: str):
    """The launch configuration of a backend variant (``blocks``: the block kernel reading
    the input history itself; ``blocks-split``: the history applied by a second launch), or
    None for the default."""
    if not algorithm:
        return None
    if algorithm == "blocks-split":
        return set_launch_config(conv_algorithm="blocks", block_split_history=True)
    return set_launch_config(conv_algorithm=algorithm, block_split_history=False)


def _case(make_case, backend: str, first_rows: int, seed: int):
    """The target tests' case: ``(layout, x, w, hist)`` with 5 destination rows, its float64
    oracle ``[2, 5, 300]``, the backend's name, algorithm and device, and random targets
    ``[2, first_rows, 300]`` and ``[2, 4, 300]`` (float64, on the CPU)."""
    layout, x, w, hist, src, dst = make_case(2, 6, 5, 300, 4, 14, heavy_dst=3, heavy=6)
    expect = brute_force(x, w, src, dst, 5, hist)
    name, _, algorithm = backend.partition(":")
    dev = TRITON_DEVICE if name == "triton" else "cpu"
    g = torch.Generator().manual_seed(seed)
    first = torch.randn(2, first_rows, 300, generator=g, dtype=torch.float64)
    second = torch.randn(2, 4, 300, generator=g, dtype=torch.float64)
    return (layout, x, w, hist), expect, name, algorithm, dev, first, second


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("accumulate", [False, True])
def test_rows_land_in_both_targets(make_case, backend, accumulate):
    """Rows d < split go to first[:, 2 + d], the others to second[:, 1 + d - split]; every
    other row keeps its value; accumulate adds to what was there."""
    (layout, x, w, hist), expect, name, algorithm, dev, first, second = _case(
        make_case, backend, 6, 3)
    f0, s0 = first.clone(), second.clone()
    target = RowTarget(first.to(dev), 2, second.to(dev), 1, split=2, accumulate=accumulate)
    previous = _config(algorithm)
    try:
        path_conv_into(x.to(dev), w.to(dev), layout.to(dev), target, hist.to(dev),
                       backend=name)
    finally:
        if previous is not None:
            set_launch_config(previous)
    got_f, got_s = target.first.cpu(), target.second.cpu()
    base_f = f0[:, 2:4] if accumulate else 0.0
    base_s = s0[:, 1:4] if accumulate else 0.0
    torch.testing.assert_close(got_f[:, 2:4], expect[:, :2] + base_f, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got_s[:, 1:4], expect[:, 2:] + base_s, rtol=1e-10, atol=1e-10)
    # untouched rows
    torch.testing.assert_close(got_f[:, [0, 1, 4, 5]], f0[:, [0, 1, 4, 5]], rtol=0, atol=0)
    torch.testing.assert_close(got_s[:, 0], s0[:, 0], rtol=0, atol=0)


def test_bad_targets_and_gradients_are_refused(make_case):
    layout, x, w, hist, _, _ = make_case(1, 3, 4, 20, 3, 6)
    big = torch.zeros(1, 6, 20, dtype=torch.float64)
    with pytest.raises(ValueError, match="split must lie in"):
        path_conv_into(x, w, layout, RowTarget(big, 0, big, 0, split=5), backend="torch")
    with pytest.raises(ValueError, match=r"second \(1, 6, 20\) cannot take 2 rows from row 5"):
        path_conv_into(x, w, layout, RowTarget(big, 0, big, 5, split=2), backend="torch")
    with pytest.raises(RuntimeError, match="records no gradients"):
        path_conv_into(x, w.requires_grad_(True), layout, RowTarget(big, 0, big, 0, split=4),
                       backend="torch")


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("steps,with_hist", [(2, "both"), (40, "both"), (40, "first"),
                                             (2, "second")])
def test_split_history_pair_launch_equals_the_oracle(make_case, steps, with_hist, stream,
                                                     monkeypatch):
    """Two terms summed into two targets by one launch, the histories (of both terms, or
    of one) applied by a second launch over zero inputs (``block_split_history``; on CUDA
    with ``block_history_stream`` on a second stream), also when the chunk is shorter than
    the history: the float64 oracle's values."""
    if TRITON_DEVICE is None:
        pytest.skip("needs triton (a GPU, or TRITON_INTERPRET=1 on CPU)")
    from hydroscale.kernels import _triton_ops, path_conv_sum_into

    calls = []
    real = _triton_ops._history_share
    monkeypatch.setattr(_triton_ops, "_history_share",
                        lambda *a, **k: calls.append(torch.cuda.current_stream()
                                                     if torch.cuda.is_available() else 1)
                        or real(*a, **k))

    la, xa, wa, ha, sa, da = make_case(1, 5, 6, steps, 5, 12, heavy_dst=2, heavy=4)
    xb = torch.randn(1, 5, steps, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    hb = torch.randn(1, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    if with_hist == "first":
        hb = None
    if with_hist == "second":
        ha = None
    expect = (brute_force(xa, wa, sa, da, 6, ha) + brute_force(xb, wa, sa, da, 6, hb))
    dev = TRITON_DEVICE
    first = torch.zeros(1, 2, steps, dtype=torch.float64, device=dev)
    second = torch.zeros(1, 4, steps, dtype=torch.float64, device=dev)
    previous = set_launch_config(conv_algorithm="blocks", block_split_history=True,
                                 block_history_stream=stream)
    try:
        with torch.no_grad():
            f, s = path_conv_sum_into(
                [(xa.to(dev), wa.to(dev), la.to(dev), None if ha is None else ha.to(dev)),
                 (xb.to(dev), wa.to(dev), la.to(dev), None if hb is None else hb.to(dev))],
                RowTarget(first, 0, second, 0, split=2), backend="triton")
    finally:
        set_launch_config(previous)
    got = torch.cat([f.cpu(), s.cpu()], 1)
    assert calls  # the histories went through the second launch
    if torch.device(dev).type == "cuda":  # on the side stream, or the main one
        assert (calls[0] != torch.cuda.current_stream()) == stream
    torch.testing.assert_close(got, expect, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", _backends())
def test_steps_write_only_their_window(make_case, backend):
    """``RowTarget.steps``: three windows (one inside the history's reach, one crossing a
    tile, one to the end) written one after another give the oracle; steps outside a window
    keep their values."""
    from hydroscale.kernels import path_conv_sum_into

    (layout, x, w, hist), expect, name, algorithm, dev, first, second = _case(
        make_case, backend, 3, 4)
    f0, s0 = first.clone(), second.clone()
    first, second = first.to(dev), second.to(dev)
    previous = _config(algorithm)
    try:
        with torch.no_grad():
            for i, steps in enumerate([(0, 2), (2, 261), (261, 300)]):
                if i == 1:  # only one window written so far
                    torch.testing.assert_close(first[:, 1:3, 2:].cpu(), f0[:, 1:3, 2:],
                                               rtol=0, atol=0)
                path_conv_sum_into([(x.to(dev), w.to(dev), layout.to(dev), hist.to(dev))],
                                   RowTarget(first, 1, second, 1, split=2, steps=steps),
                                   backend=name)
    finally:
        if previous is not None:
            set_launch_config(previous)
    torch.testing.assert_close(first[:, 1:3].cpu(), expect[:, :2], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(second[:, 1:4].cpu(), expect[:, 2:], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(first[:, 0].cpu(), f0[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(second[:, 0].cpu(), s0[:, 0], rtol=0, atol=0)


def test_steps_refuse_gradients_and_bad_windows(make_case):
    from hydroscale.kernels import path_conv_sum_into

    layout, x, w, hist, _, _ = make_case(1, 3, 4, 20, 3, 6)
    first, second = torch.zeros(1, 2, 20, dtype=torch.float64), torch.zeros(1, 2, 20,
                                                                             dtype=torch.float64)
    with pytest.raises(ValueError, match="a forward without gradients only"):
        path_conv_sum_into([(x, w.requires_grad_(True), layout, None)],
                           RowTarget(first, 0, second, 0, split=2, steps=(0, 5)),
                           backend="torch")
    with pytest.raises(ValueError, match=r"RowTarget.steps must be \(a, b\)"):
        path_conv_sum_into([(x, w.detach(), layout, None)],
                           RowTarget(first, 0, second, 0, split=2, steps=(5, 30)),
                           backend="torch")
