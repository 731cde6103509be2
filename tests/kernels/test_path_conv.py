"""path_conv (torch and Triton backends) against a dense float64 loop, chunking, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kernel_cases import TRITON_DEVICE, brute_force, requires_triton

from hydroscale.kernels import (
    LaunchConfig,
    PathLayout,
    RowTarget,
    get_launch_config,
    parse_launch_spec,
    path_conv,
    path_conv_reference,
    path_conv_sum,
    path_conv_sum_into,
    select_backend,
    set_launch_config,
)

# (batch, n_src, n_dst, T, K, n_paths, extra): T not a multiple of the 16-step block or of the
# tile, rows without paths, a row with one path, a row with many paths, K = 1, K > 16 (L = 32)
CASES = {
    "basic": (1, 5, 4, 37, 3, 9, {}),
    "batch_empty_rows": (2, 6, 7, 20, 4, 10, {"empty_dst": (0, 3, 6)}),
    "one_path": (1, 3, 3, 17, 5, 1, {}),
    "many_paths": (1, 8, 3, 33, 2, 4, {"heavy_dst": 1, "heavy": 24}),
    "k1": (2, 4, 4, 19, 1, 6, {}),
    "k_long": (1, 4, 3, 50, 19, 5, {}),
    "short_t": (1, 3, 2, 3, 6, 4, {}),
    "interior_tiles": (1, 4, 3, 600, 5, 7, {}),  # 256-step tiles away from both ends
}
TOL = {torch.float64: 1e-11, torch.float32: 2e-5}


def _backends():
    """The backends to test; Triton once per algorithm (direct row blocks, Toeplitz MMA)."""
    out = ["torch"]
    if TRITON_DEVICE is not None:
        out += ["triton:blocks", "triton:toeplitz"]
    return out


def _device(backend):
    return TRITON_DEVICE if backend.startswith("triton") else "cpu"


@pytest.fixture(autouse=True)
def _algorithm(request):
    """Set the launch configuration's algorithm named by a ``triton:<algorithm>`` backend
    parameter and hand the plain backend name to path_conv."""
    callspec = getattr(request.node, "callspec", None)
    spec = callspec.params.get("backend") if callspec is not None else None
    if not isinstance(spec, str) or ":" not in spec:
        yield
        return
    previous = set_launch_config(conv_algorithm=spec.split(":")[1])
    try:
        yield
    finally:
        set_launch_config(previous)


def _name(backend):
    return backend.split(":")[0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("with_hist", [False, True])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", _backends())
def test_forward_matches_brute_force(make_case, backend, case, with_hist, dtype):
    batch, n_src, n_dst, n_t, n_taps, n_paths, extra = CASES[case]
    layout, x, w, hist, src, dst = make_case(batch, n_src, n_dst, n_t, n_taps, n_paths, **extra)
    hist = hist if with_hist else None
    expect = brute_force(x, w, src, dst, n_dst, hist)
    dev = _device(backend)
    y = path_conv(
        x.to(dev, dtype), w.to(dev, dtype), layout.to(dev),
        None if hist is None else hist.to(dev, dtype), backend=_name(backend), precision="ieee",
    )
    assert y.shape == (batch, n_dst, n_t)
    assert y.dtype == dtype
    scale = expect.abs().max().clamp_min(1.0)
    assert (y.double().cpu() - expect).abs().max() <= TOL[dtype] * scale
    if "empty_dst" in extra:
        assert torch.all(y[:, list(extra["empty_dst"])] == 0)


def test_reference_matches_brute_force(make_case):
    layout, x, w, hist, src, dst = make_case(2, 5, 4, 23, 4, 11)
    expect = brute_force(x, w, src, dst, 4, hist)
    torch.testing.assert_close(path_conv_reference(x, w, layout, hist), expect)


@pytest.mark.parametrize("backend", _backends())
def test_chunked_equals_unchunked(make_case, backend):
    layout, x, w, hist, _, _ = make_case(2, 6, 5, 41, 5, 14)
    dev = _device(backend)
    x, w, hist, layout = x.to(dev), w.to(dev), hist.to(dev), layout.to(dev)
    backend = _name(backend)
    whole = path_conv(x, w, layout, hist, backend=backend)
    cut = 18
    first = path_conv(x[..., :cut], w, layout, hist, backend=backend)
    carried = torch.cat([hist, x[..., :cut]], dim=-1)[..., -(w.shape[1] - 1) :]
    second = path_conv(x[..., cut:], w, layout, carried, backend=backend)
    torch.testing.assert_close(torch.cat([first, second], dim=-1), whole, rtol=0, atol=1e-12)


def test_gradcheck_torch_backend(make_case):
    layout, x, w, hist, _, _ = make_case(2, 4, 3, 9, 3, 7)
    inputs = tuple(t.clone().requires_grad_() for t in (x, w, hist))
    assert torch.autograd.gradcheck(
        lambda a, b, c: path_conv(a, b, layout, c, backend="torch"), inputs
    )


def _grads(fn, x, w, hist, grad_y):
    x, w, hist = (t.clone().requires_grad_() for t in (x, w, hist))
    fn(x, w, hist).backward(grad_y)
    return x.grad, w.grad, hist.grad


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize(
    "case", ["batch_empty_rows", "many_paths", "k1", "k_long", "interior_tiles"]
)
def test_gradients_match_reference_autograd(make_case, backend, case):
    batch, n_src, n_dst, n_t, n_taps, n_paths, extra = CASES[case]
    layout, x, w, hist, _, _ = make_case(batch, n_src, n_dst, n_t, n_taps, n_paths, **extra)
    grad_y = torch.randn(batch, n_dst, n_t, dtype=torch.float64)
    expect = _grads(lambda a, b, c: path_conv_reference(a, b, layout, c), x, w, hist, grad_y)
    dev = _device(backend)
    got = _grads(
        lambda a, b, c: path_conv(a, b, layout.to(dev), c, backend=_name(backend)),
        x.to(dev), w.to(dev), hist.to(dev), grad_y.to(dev),
    )
    for name, g, e in zip(("x", "w", "hist"), got, expect):
        assert g.shape == e.shape, name
        torch.testing.assert_close(g.cpu(), e, rtol=1e-10, atol=1e-10, msg=name)


def _strided_gradient(kind: str, batch: int, n_dst: int, n_t: int) -> torch.Tensor:
    """An output gradient ``[B, D, T]`` that is not contiguous, of the given kind."""
    g = torch.Generator().manual_seed(11)
    if kind == "sum":  # the gradient of y.sum(): one value, every stride 0
        return torch.full((), 0.75, dtype=torch.float64).expand(batch, n_dst, n_t)
    if kind == "per_row":  # (y * c[d]).sum(): time stride 0
        return torch.randn(1, n_dst, 1, generator=g, dtype=torch.float64).expand(
            batch, n_dst, n_t)
    if kind == "transposed":  # rows along the last axis in memory: time stride D
        return torch.randn(batch, n_t, n_dst, generator=g, dtype=torch.float64).transpose(1, 2)
    if kind == "every_other_step":  # time stride 2: copied
        return torch.randn(batch, n_dst, 2 * n_t, generator=g, dtype=torch.float64)[..., ::2]
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["sum", "per_row", "transposed", "every_other_step"])
@pytest.mark.parametrize("backend", _backends())
def test_gradients_of_a_strided_output_gradient(make_case, backend, kind):
    """The block kernels read the output gradient through its strides (the expanded gradient
    of a sum, a row-wise constant, a transposed tensor) or from a copy (a time stride other
    than 0 or 1); every gradient equals the reference's with a contiguous copy."""
    batch, n_dst, n_t = 2, 3, 600  # interior tiles; batch strides
    layout, x, w, hist, _, _ = make_case(batch, 4, n_dst, n_t, 5, 7)
    grad_y = _strided_gradient(kind, batch, n_dst, n_t)
    assert not grad_y.is_contiguous()
    expect = _grads(lambda a, b, c: path_conv_reference(a, b, layout, c), x, w, hist,
                    grad_y.contiguous())
    dev = _device(backend)
    got = _grads(
        lambda a, b, c: path_conv(a, b, layout.to(dev), c, backend=_name(backend)),
        x.to(dev), w.to(dev), hist.to(dev), grad_y.to(dev),
    )
    for name, g, e in zip(("x", "w", "hist"), got, expect):
        torch.testing.assert_close(g.cpu(), e, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("backend", _backends())
def test_path_conv_sum_matches_brute_force_and_reference_gradients(make_case, backend):
    """Two terms (different sources and paths, one with history, one without) into the same
    destination rows: the sum equals the two dense loops added, and the gradients of every
    input equal autograd through the reference's sum; a term whose tensors need no gradient
    gets none."""
    l1, x1, w1, h1, s1, d1 = make_case(2, 6, 5, 45, 4, 12, seed=1)
    l2, x2, w2, _, s2, d2 = make_case(2, 3, 5, 45, 4, 7, seed=2)
    expect = brute_force(x1, w1, s1, d1, 5, h1) + brute_force(x2, w2, s2, d2, 5)
    grad_y = torch.randn(2, 5, 45, dtype=torch.float64)
    dev = _device(backend)
    leaves = [t.clone().to(dev).requires_grad_() for t in (x1, w1, h1, w2)]
    y = path_conv_sum([(leaves[0], leaves[1], l1.to(dev), leaves[2]),
                       (x2.to(dev), leaves[3], l2.to(dev), None)], backend=_name(backend))
    torch.testing.assert_close(y.cpu(), expect, rtol=1e-11, atol=1e-11)
    y.backward(grad_y.to(dev))
    ref = [t.clone().requires_grad_() for t in (x1, w1, h1, w2)]
    (path_conv_reference(ref[0], ref[1], l1, ref[2])
     + path_conv_reference(x2, ref[3], l2)).backward(grad_y)
    for name, got, want in zip(("x1", "w1", "hist1", "w2"), leaves, ref):
        torch.testing.assert_close(got.grad.cpu(), want.grad, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("backend", _backends())
def test_path_conv_sum_into_two_targets_values_and_gradients(make_case, backend, accumulate):
    """Rows 0..1 go into a fresh [B, 2, T] tensor, rows 2..4 into rows 3..5 of a larger one
    that the loss also reads elsewhere (its gradient is then an expanded, non-contiguous
    tensor for one part and a contiguous one for the other); values and gradients of every
    input, and of the targets' earlier values, equal the reference's with explicit copies."""
    l1, x1, w1, h1, _, _ = make_case(2, 6, 5, 45, 4, 12, seed=3)
    l2, x2, w2, _, _, _ = make_case(2, 3, 5, 45, 4, 7, seed=4)
    dev = _device(backend)
    g = torch.Generator().manual_seed(9)
    first0 = torch.randn(2, 2, 45, generator=g, dtype=torch.float64)
    second0 = torch.randn(2, 7, 45, generator=g, dtype=torch.float64)
    weight = torch.randn(2, 7, 45, generator=g, dtype=torch.float64)

    def loss(first, second):
        return (first * 1.5).sum() + (second * weight.to(second.device)).sum() + second.sum()

    leaves = [t.clone().to(dev).requires_grad_() for t in (x1, w1, h1, w2, first0, second0)]
    first, second = leaves[4] * 1, leaves[5] * 1  # non-leaf targets, written in place
    first, second = path_conv_sum_into(
        [(leaves[0], leaves[1], l1.to(dev), leaves[2]), (x2.to(dev), leaves[3], l2.to(dev), None)],
        RowTarget(first, 0, second, 3, 2, accumulate=accumulate), backend=_name(backend))
    loss(first, second).backward()

    ref = [t.clone().requires_grad_() for t in (x1, w1, h1, w2, first0, second0)]
    y = path_conv_reference(ref[0], ref[1], l1, ref[2]) + path_conv_reference(x2, ref[3], l2)
    keep = 1.0 if accumulate else 0.0
    f_ref = ref[4] * keep + y[:, :2]
    s_ref = torch.cat([ref[5][:, :3], ref[5][:, 3:6] * keep + y[:, 2:], ref[5][:, 6:]], dim=1)
    torch.testing.assert_close(first.detach().cpu(), f_ref.detach(), rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(second.detach().cpu(), s_ref.detach(), rtol=1e-11, atol=1e-11)
    loss(f_ref, s_ref).backward()
    names = ("x1", "w1", "hist1", "w2") + (("first", "second") if accumulate else ())
    for name, got, want in zip(names, leaves, ref):
        torch.testing.assert_close(got.grad.cpu(), want.grad, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("backend", _backends())
def test_path_conv_sum_into_reads_rows_of_its_first_target_in_place(make_case, backend):
    """A transfer buffer: call 1 writes rows 0..2 of ``buf`` (and two rows of ``out``), call 2
    reads them in place (a term whose input is ``buf`` itself, with history) and writes rows
    4..5 of ``buf``; the loss reads both.  Values and every gradient equal the reference's
    with explicit copies, and the buffer's gradient comes back through the chain."""
    b, t, k = 2, 45, 4
    l1, x1, w1, h1, _, _ = make_case(b, 6, 5, t, k, 12, seed=3)
    l2, x2, w2, _, _, _ = make_case(b, 3, 4, t, k, 7, seed=4)
    src3 = torch.tensor([0, 2, 2, 1, 0])  # reads rows 0..2 of the 8 rows of buf only
    dst3 = torch.tensor([0, 1, 3, 3, 2])
    l3 = PathLayout.from_pairs(src3, dst3, 8, 4)
    g = torch.Generator().manual_seed(11)
    w3 = torch.randn(5, k, generator=g, dtype=torch.float64)
    h3 = torch.randn(b, 8, k - 1, generator=g, dtype=torch.float64)
    weight = torch.randn(b, 4, t, generator=g, dtype=torch.float64)
    dev = _device(backend)

    def loss(buf, out):
        return (out * weight.to(out.device)).sum() + (buf[:, 4:6] * 2).sum() + buf[:, 0].sum()

    leaves = [v.clone().to(dev).requires_grad_() for v in (x1, w1, h1, x2, w2, w3, h3)]
    buf = torch.zeros(b, 8, t, dtype=torch.float64, device=dev)
    out = torch.zeros(b, 4, t, dtype=torch.float64, device=dev)
    name = _name(backend)
    buf, out = path_conv_sum_into([(leaves[0], leaves[1], l1.to(dev), leaves[2])],
                                  RowTarget(buf, 0, out, 0, 3), backend=name)
    buf, out = path_conv_sum_into(
        [(leaves[3], leaves[4], l2.to(dev), None), (buf, leaves[5], l3.to(dev), leaves[6])],
        RowTarget(buf, 4, out, 2, 2), backend=name)
    loss(buf, out).backward()

    ref = [v.clone().requires_grad_() for v in (x1, w1, h1, x2, w2, w3, h3)]
    y1 = path_conv_reference(ref[0], ref[1], l1, ref[2])
    zero = torch.zeros(b, 1, t, dtype=torch.float64)
    read = torch.cat([y1[:, :3], zero.expand(b, 5, t)], dim=1)
    y2 = path_conv_reference(ref[3], ref[4], l2) + path_conv_reference(read, ref[5], l3, ref[6])
    buf_ref = torch.cat([y1[:, :3], zero, y2[:, :2], zero, zero], dim=1)
    out_ref = torch.cat([y1[:, 3:], y2[:, 2:]], dim=1)
    torch.testing.assert_close(buf.detach().cpu(), buf_ref.detach(), rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(out.detach().cpu(), out_ref.detach(), rtol=1e-11, atol=1e-11)
    loss(buf_ref, out_ref).backward()
    for nm, got, want in zip(("x1", "w1", "hist1", "x2", "w2", "w3", "hist3"), leaves, ref):
        torch.testing.assert_close(got.grad.cpu(), want.grad, rtol=1e-10, atol=1e-10, msg=nm)


@requires_triton
def test_two_terms_with_the_same_blocks_are_one_launch(make_case, monkeypatch):
    """Terms whose layouts cut the destinations into the same blocks are summed by one block
    launch (the values are checked above); other layouts get one launch each."""
    from hydroscale.kernels import _triton_ops

    launches = []
    real = _triton_ops._block_forward
    monkeypatch.setattr(_triton_ops, "_block_forward",
                        lambda *a, **kw: launches.append(1) or real(*a, **kw))
    l1, x1, w1, _, _, _ = make_case(1, 6, 5, 30, 3, 12, seed=3)
    l2, x2, w2, _, _, _ = make_case(1, 3, 5, 30, 3, 7, seed=4)
    dev = TRITON_DEVICE
    order = (np.arange(5.0)[::-1].copy(), np.zeros(5, np.int64))
    l3 = PathLayout.from_pairs(l2.src, l2.dst, 3, 5, dst_order=order)
    previous = set_launch_config(conv_algorithm="blocks")
    try:
        for other, n in ((l2, 1), (l3, 2)):
            launches.clear()
            out = [torch.zeros(1, r, 30, dtype=torch.float64, device=dev) for r in (2, 3)]
            path_conv_sum_into([(x1.to(dev), w1.to(dev), l1.to(dev), None),
                                (x2.to(dev), w2.to(dev), other.to(dev), None)],
                               RowTarget(out[0], 0, out[1], 0, 2), backend="triton")
            assert len(launches) == n
            want = path_conv_reference(x1, w1, l1) + path_conv_reference(x2, w2, other)
            torch.testing.assert_close(torch.cat(out, 1).cpu(), want)
    finally:
        set_launch_config(previous)


def test_path_conv_sum_into_needs_two_tensors(make_case):
    l1, x1, w1, _, _, _ = make_case(1, 4, 3, 20, 3, 5)
    out = torch.zeros(1, 3, 20, dtype=torch.float64)
    with pytest.raises(ValueError, match="two different target tensors"):
        path_conv_sum_into([(x1, w1, l1, None)], RowTarget(out, 0, out, 0, 3), backend="torch")


def test_path_conv_sum_rejects_mismatched_terms(make_case):
    l1, x1, w1, _, _, _ = make_case(1, 4, 3, 20, 3, 5)
    l2, x2, w2, _, _, _ = make_case(1, 4, 5, 20, 3, 5)
    with pytest.raises(ValueError, match="term 1 .* 5 destinations.* does not match term 0"):
        path_conv_sum([(x1, w1, l1, None), (x2, w2, l2, None)], backend="torch")
    with pytest.raises(ValueError, match="at least one term"):
        path_conv_sum([], backend="torch")


@requires_triton
@pytest.mark.parametrize("algorithm", ["blocks", "toeplitz"])
@pytest.mark.parametrize("precision", ["ieee", "tf32x3"])
def test_triton_float32_gradients_match_torch(make_case, precision, algorithm):
    layout, x, w, hist, _, _ = make_case(2, 6, 5, 45, 6, 15, heavy_dst=2, heavy=6)
    dev = TRITON_DEVICE
    x, w, hist = (t.float().to(dev) for t in (x, w, hist))
    layout = layout.to(dev)
    grad_y = torch.randn(2, 5, 45, device=dev)
    expect = _grads(lambda a, b, c: path_conv(a, b, layout, c, backend="torch"), x, w, hist, grad_y)
    previous = set_launch_config(conv_algorithm=algorithm)
    try:
        got = _grads(
            lambda a, b, c: path_conv(a, b, layout, c, backend="triton", precision=precision),
            x, w, hist, grad_y,
        )
    finally:
        set_launch_config(previous)
    for g, e in zip(got, expect):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


@requires_triton
@pytest.mark.parametrize(
    "dtype",
    [
        pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
            TRITON_DEVICE == "cpu", reason="the Triton CPU interpreter mis-loads bfloat16")),
        torch.float16,
    ],
)
def test_triton_half_storage(make_case, dtype):
    """bf16/fp16 storage with float32 accumulation: error at the storage precision."""
    layout, x, w, _, src, dst = make_case(1, 5, 4, 40, 4, 12)
    expect = brute_force(x.to(dtype), w.to(dtype), src, dst, 4)  # exact on the rounded inputs
    dev = TRITON_DEVICE
    y = path_conv(x.to(dev, dtype), w.to(dev, dtype), layout.to(dev), backend="triton")
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double().cpu(), expect, rtol=1e-5, atol=1e-5)


def test_only_needed_gradients(make_case):
    layout, x, w, hist, _, _ = make_case(1, 3, 3, 10, 2, 4)
    wr = w.clone().requires_grad_()
    path_conv(x, wr, layout, hist, backend="torch").sum().backward()
    expect = _grads(lambda a, b, c: path_conv_reference(a, b, layout, c), x, w, hist,
                    torch.ones(1, 3, 10, dtype=torch.float64))[1]
    torch.testing.assert_close(wr.grad, expect)


def test_select_backend(monkeypatch):
    monkeypatch.delenv("HYDROSCALE_KERNEL_BACKEND", raising=False)
    assert select_backend("cpu") == "torch"
    assert select_backend("cpu", "torch") == "torch"
    monkeypatch.setenv("HYDROSCALE_KERNEL_BACKEND", "torch")
    assert select_backend("cuda") == "torch"
    with pytest.raises(ValueError, match="unknown kernel backend 'cublas'"):
        select_backend("cpu", "cublas")


def test_select_backend_triton_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1|not importable"):
        select_backend("cpu", "triton")


def test_input_validation(make_case):
    layout, x, w, hist, _, _ = make_case(1, 3, 2, 8, 3, 4)
    with pytest.raises(ValueError, match=r"x must be \[B, S, T\], got \(3, 8\)"):
        path_conv(x[0], w, layout)
    with pytest.raises(ValueError, match="layout.n_src = 3 rows, got 2"):
        path_conv(x[:, :2], w, layout)
    with pytest.raises(ValueError, match="layout.n_paths = 4 rows, got 3"):
        path_conv(x, w[:3], layout)
    with pytest.raises(ValueError, match=r"hist must be \[B, S, K - 1\] = \(1, 3, 2\)"):
        path_conv(x, w, layout, hist[..., :1])


def test_empty_layout():
    layout = PathLayout.from_pairs(torch.zeros(0, dtype=torch.long),
                                   torch.zeros(0, dtype=torch.long), 3, 2)
    y = path_conv(torch.ones(1, 3, 5), torch.ones(0, 4), layout, backend="torch")
    assert torch.equal(y, torch.zeros(1, 2, 5))


@requires_triton
@pytest.mark.parametrize(
    "config",
    [
        dict(conv_algorithm="toeplitz", conv_paths=2, conv_bm=32, conv_warps=2),
        dict(conv_algorithm="toeplitz", conv_paths=4, conv_bm=16, grad_w_bm=16, grad_w_warps=1),
        dict(conv_algorithm="toeplitz", conv_paths=8, conv_bm=64, conv_warps=4, grad_w_bm=32,
             grad_w_warps=2),
        dict(conv_algorithm="toeplitz", conv_padded_taps=False),
        dict(conv_algorithm="toeplitz", conv_padded_taps=False, conv_paths=4, conv_bm=32),
        dict(conv_algorithm="blocks", block_rows=1, block_time=16, block_grad_w_time=16),
        dict(conv_algorithm="blocks", block_rows=2, block_time=32, block_warps=1),
        dict(conv_algorithm="blocks", block_rows=8, block_time=128, block_grad_w_warps=1),
        dict(conv_algorithm="blocks", block_rows=4, order=True),
        dict(conv_algorithm="blocks", block_rows=16, block_time=64, order=True),
        dict(conv_algorithm="blocks", block_rows=4, block_max_registers=48,
             block_grad_w_max_registers=96, order=True),
        dict(conv_algorithm="blocks", block_rows=4, block_prefetch=True, order=True),
        dict(conv_algorithm="blocks", block_rows=2, block_prefetch=True, block_time=16,
             block_max_registers=72),
        dict(conv_algorithm="blocks", block_max_registers=0, block_grad_w_max_registers=0),
        dict(conv_algorithm="blocks", block_rows=1, block_time=32, block_prefetch=False,
             block_heavy_first=False, block_max_registers=64),
        dict(conv_algorithm="blocks", block_rows=4, block_grad_w_entries=2, order=True),
        dict(conv_algorithm="blocks", block_rows=2, block_grad_w_entries=4,
             block_grad_w_time=16, block_grad_w_warps=2),
        # a launch this small splits its blocks' entries unless block_small_splits=1
        dict(conv_algorithm="blocks", block_small_splits=1),
        dict(conv_algorithm="blocks", block_small_splits=1, block_rows=2,
             block_prefetch=False, order=True),
        dict(conv_algorithm="blocks", block_small_splits=2, block_rows=8, order=True),
        dict(conv_algorithm="blocks", block_small_splits=16, block_rows=1, block_time=16),
    ],
)
def test_triton_launch_configs(make_case, config):
    """Results do not depend on the launch configuration (algorithm, paths per iteration, rows
    per block and their order, tiles, warps, prefetch, the order blocks start in); rows with
    fewer paths than a multiple of conv_paths exercise the masked slots, blocks of rows with
    different sources the empty (entry, row) cells, repeated (src, dst) pairs separate entries
    of one block."""
    config = dict(config)
    order = config.pop("order", False)
    n_t = 530  # tiles of 16 blocks (256 steps): the second one is interior
    layout, x, w, hist, src, dst = make_case(2, 7, 6, n_t, 5, 17, heavy_dst=3, heavy=9)
    src, dst = torch.cat([src, src[:3]]), torch.cat([dst, dst[:3]])  # repeated pairs
    w = torch.cat([w, torch.randn(3, w.shape[1], dtype=w.dtype)])
    g = torch.Generator().manual_seed(5)
    orders = {}
    if order:
        orders = dict(dst_order=(torch.rand(6, generator=g).numpy(), [0, 1, 0, 1, 0, 1]),
                      src_order=(torch.rand(7, generator=g).numpy(), None))
    layout = PathLayout.from_pairs(src, dst, 7, 6, **orders)
    grad_y = torch.randn(2, 6, n_t, dtype=torch.float64)
    expect_y = brute_force(x, w, src, dst, 6, hist)
    expect = _grads(lambda a, b, c: path_conv_reference(a, b, layout, c), x, w, hist, grad_y)
    dev = TRITON_DEVICE
    lay = layout.to(dev)
    previous = set_launch_config(**config)
    try:
        y = path_conv(x.to(dev), w.to(dev), lay, hist.to(dev), backend="triton")
        got = _grads(lambda a, b, c: path_conv(a, b, lay, c, backend="triton"),
                     x.to(dev), w.to(dev), hist.to(dev), grad_y.to(dev))
    finally:
        set_launch_config(previous)
    torch.testing.assert_close(y.cpu(), expect_y, rtol=1e-10, atol=1e-10)
    for g, e in zip(got, expect):
        torch.testing.assert_close(g.cpu(), e, rtol=1e-10, atol=1e-10)


def test_launch_config_validation_and_env(monkeypatch):
    with pytest.raises(ValueError, match="block_max_registers must be 0 or 24..255, got 8"):
        LaunchConfig(block_max_registers=8)
    with pytest.raises(ValueError, match="conv_paths must be a power of two, got 3"):
        LaunchConfig(conv_paths=3)
    with pytest.raises(ValueError, match="conv_padded_taps must be a bool, got 1"):
        LaunchConfig(conv_padded_taps=1)
    monkeypatch.setenv("HYDROSCALE_KERNEL_LAUNCH", "conv_paths=4, conv_bm=32,conv_padded_taps=0")
    cfg = get_launch_config()
    assert (cfg.conv_paths, cfg.conv_bm, cfg.conv_padded_taps) == (4, 32, False)
    monkeypatch.setenv("HYDROSCALE_KERNEL_LAUNCH", "conv_algorithm=toeplitz,block_rows=8")
    cfg = get_launch_config()
    assert (cfg.conv_algorithm, cfg.block_rows) == ("toeplitz", 8)
    assert parse_launch_spec("block_prefetch=1, block_max_registers=72") == {
        "block_prefetch": True, "block_max_registers": 72}
    monkeypatch.setenv("HYDROSCALE_KERNEL_LAUNCH", "warps=2")
    with pytest.raises(ValueError, match="HYDROSCALE_KERNEL_LAUNCH must be 'field=value"):
        get_launch_config()
    with pytest.raises(ValueError, match="conv_algorithm must be one of"):
        LaunchConfig(conv_algorithm="fft")
