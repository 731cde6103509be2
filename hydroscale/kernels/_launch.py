"""Launch configuration of the Triton kernels (kept free of Triton imports)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

__all__ = ["LaunchConfig", "get_launch_config", "parse_launch_spec", "set_launch_config"]

ENV_VAR = "HYDROSCALE_KERNEL_LAUNCH"
ALGORITHMS = ("auto", "blocks", "toeplitz")
BLOCKS_MAX_TAPS = 32  # "auto" takes the block kernels up to this window
BLOCKS_LIMIT_TAPS = 64  # the block kernels unroll the taps: never beyond this window
REGISTER_FIELDS = ("block_max_registers", "block_grad_w_max_registers")  # 0 or 24..255


@dataclass(frozen=True)
class LaunchConfig:
    """Launch parameters of the Triton kernels (speed only: results do not depend on them).

    conv_bm : most time blocks (of ``L`` steps) per tile of the forward/grad_x kernel.
    conv_warps : warps per program of the forward/grad_x kernel.
    conv_paths : paths handled per loop iteration of the forward/grad_x kernel (1, 2, 4, 8).
    conv_padded_taps : read the taps from a zero-padded copy ``[P + 1, 2L]`` (made per call)
        and load interior time tiles without masks: fewer instructions and registers per path.
    grad_w_bm, grad_w_warps : the same for the grad_w kernel.
    conv_algorithm : ``"blocks"`` (direct CUDA-core kernels over row blocks,
        :mod:`._triton_block_kernels`), ``"toeplitz"`` (the tensor-core kernels above) or
        ``"auto"``: blocks for windows of at most ``BLOCKS_MAX_TAPS`` (32) taps, Toeplitz
        beyond (measured at K = 9 on an H100: blocks 2.2x faster forward; longer windows were
        not timed).  Windows over ``BLOCKS_LIMIT_TAPS`` (64) always use Toeplitz.
    block_rows, block_time, block_warps : rows per block, steps per tile and warps per program
        of the block forward / input-gradient kernel.
    block_grad_w_time, block_grad_w_warps : the same for the block kernel gradient.
    block_grad_w_entries : entries of one block per program of the block kernel gradient
        (they share the block's output gradient tiles, loaded once for all of them).
    block_max_registers : register cap per thread of the block forward / input-gradient kernel
        (ptxas ``maxnreg``; 0: the compiler's choice).  The kernel waits on loads, so more
        resident warps (fewer registers each) hide more of that latency.
    block_grad_w_max_registers : the same for the block kernel gradient.
    block_prefetch : read the next entry's input row one loop iteration ahead in the block
        forward / input-gradient kernel.
    block_heavy_first : start the blocks with the most entries first (``RowBlocks.heavy_first``)
        rather than in block order, so that a launch does not end waiting on a few long ones.
    block_split_history : a forward with an input history (a time chunk after the first)
        runs the block kernel without it and adds the history's share to the first ``K - 1``
        steps by a second launch over ``2 (K - 1)`` steps (on by default).  The kernel
        compiled with the history path (``HAS_IHIST``) is slower in every tile, not only in
        the first ``K - 1`` steps: on an H200 (``bench/carried_state.py``: 1M reaches x
        3,650 days, f = 24, window 5, 72 registers) a forward with a carried state took
        0.2918 s against 0.1211 s without one (2.41x); split, 0.1346 s against 0.1192 s
        (1.13x).  The GEOGLOWS row (6.84M reaches x 29,220 days in 3,650-day chunks, one
        H200) went from 24.98 s to 13.89 s.
    block_history_stream : on CUDA, the history launch runs on a second stream beside the
        launch without the history (it reads only the carried state), and the main stream
        waits for it before adding its share: a small wave's two launches, each as long as its
        heaviest block's loop, overlap instead of following each other.  On an H200
        (``bench/lakes.py`` at 3M reaches, 3,650 days in 365-day chunks, one call): with
        15,000 lakes (181 waves) 3.468 -> 3.247 s, without lakes (51 waves) 2.046 -> 1.928 s;
        the discharge is the same bits either way.
    block_small_launch, block_small_splits : a block forward launch of fewer than
        ``block_small_launch`` programs (a small wave, too few to fill the GPU) lasts as long
        as its heaviest block's loop over its entries (an exit row of a cluster has one per
        reach above it and per inlet channel, each waiting on its loads).  Such a launch
        splits every (block, tile) into up to ``block_small_splits`` programs over parts of
        its entries, writing partial sums that one reduction adds up in a fixed order (the
        same bits on every run); ``block_small_splits=1`` turns it off.  On an H200
        (``bench/lakes.py`` at 3M reaches, 3,650 days in 365-day chunks, side by side): the
        pass with 15,000 lakes (181 waves, most of them small) 4.67 -> 3.99 s, without lakes
        (51 waves) 2.09 -> 1.98 s; ``bench/engine.py`` at 1M reaches 0.0944 -> 0.0937 s.

    The block defaults (4 rows, 256 steps, 2 warps, at most 72 registers, prefetch, heavy blocks
    first; 32 steps, 1 warp, 4 entries, no register cap for the kernel gradient) were the
    fastest or within noise of the fastest of the configurations timed on an H100 (1M reaches,
    T = 3650; ``bench/engine.py --sweep``): at K = 9 rows 4/8, tiles 128-512, gradient tiles
    32-128; at K = 6 (1.5-day clusters) the register cap took the forward from 0.203 to 0.163 s
    (uncapped: 89 registers, 31 % occupancy, warps waiting on loads; 48 or fewer registers
    spill), 2 warps instead of 4 the forward + backward from 1.12 to 1.04 s; 8 rows, 128/512-step
    tiles and 1 or 4 warps were slower. ``block_prefetch=True`` with 72 registers timed 0.155 s
    (0.163 s without, same run); at 64 registers ncu counted ~150k spilled loads/stores per
    launch.  Starting heavy blocks first took it from 0.1458 to 0.1433 s on an H200 (0.1528 to
    0.1465 s without the prefetch), where ncu had shown SMs' active cycles 15-19 % apart.  The
    kernel gradient, since it keeps one accumulator per tap (H200, 1M reaches, K = 6, forward +
    backward side by side): 32 steps, 1 warp, uncapped 0.467 s; with 64 registers 0.468 s; 64
    steps, 2 warps 0.474 s (capped at 64) and 0.491 s (uncapped); 16 steps 0.562 s; 32 steps
    capped at 48 registers 0.495 s.  Entries per program of the kernel gradient (H100, 1M
    reaches, K = 5, forward + backward side by side, medians of 5): 1 entry 0.402 s, 2 entries
    0.361 s, 4 entries 0.347 s, 8 entries 0.387 s (register spills); 4 entries with 2 warps
    0.397 s, with 16 steps 0.383 s; 2 entries with 64 steps and 2 warps 0.373 s.  Cutting the
    time of launches with few programs into chunks (partial sums added at the end) was within
    noise at 1M reaches (0.342-0.354 s against 0.349-0.350 s) and slower at 100k (0.138-0.167
    s against 0.106-0.129 s).  Running groups of neighbouring blocks tile by tile (for L2 reuse)
    was no faster (0.1620-0.1813 s against 0.1625 s, H100).

    Defaults: conv_bm/conv_warps/conv_paths are the fastest of the configurations timed on an
    H100 (1M reaches, T = 3650, K = 16: 430 ms for tf32x3 with masked taps); conv_padded_taps
    was not timed on a GPU (ptxas: 22 % fewer instructions per path in interior tiles); the
    grad_w values are the only ones timed.  ``bench/kernels.py --sweep`` times more;
    ``$HYDROSCALE_KERNEL_LAUNCH="conv_bm=32,conv_paths=2"`` overrides fields.
    """

    conv_bm: int = 16
    conv_warps: int = 1
    conv_paths: int = 1
    conv_padded_taps: bool = True
    grad_w_bm: int = 128
    grad_w_warps: int = 4
    conv_algorithm: str = "auto"
    block_rows: int = 4
    block_time: int = 256
    block_warps: int = 2
    block_max_registers: int = 72
    block_grad_w_max_registers: int = 0
    block_prefetch: bool = True
    block_heavy_first: bool = True
    block_grad_w_time: int = 32
    block_grad_w_warps: int = 1
    block_grad_w_entries: int = 4
    block_split_history: bool = True
    block_history_stream: bool = True
    block_small_launch: int = 4096
    block_small_splits: int = 8

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "conv_algorithm":
                if v not in ALGORITHMS:
                    raise ValueError(f"LaunchConfig.conv_algorithm must be one of {ALGORITHMS}, "
                                     f"got {v!r}")
            elif f.type == "bool":
                if not isinstance(v, bool):
                    raise ValueError(f"LaunchConfig.{f.name} must be a bool, got {v!r}")
            elif f.name in REGISTER_FIELDS:
                if not isinstance(v, int) or isinstance(v, bool) or not (v == 0 or 24 <= v <= 255):
                    raise ValueError(f"LaunchConfig.{f.name} must be 0 or 24..255, got {v!r}")
            elif not isinstance(v, int) or isinstance(v, bool) or v < 1 or v & (v - 1):
                raise ValueError(f"LaunchConfig.{f.name} must be a power of two, got {v!r}")
        if self.conv_bm < 16 or self.grad_w_bm < 16:
            raise ValueError(
                f"conv_bm and grad_w_bm must be >= 16 (tl.dot), got {self.conv_bm}, "
                f"{self.grad_w_bm}"
            )


_CONFIG = LaunchConfig()


def set_launch_config(config: LaunchConfig | None = None, **fields: int) -> LaunchConfig:
    """Set the default launch configuration (a whole ``config`` or some ``fields``); returns
    the previous one."""
    global _CONFIG
    previous = _CONFIG
    _CONFIG = dataclasses.replace(config or _CONFIG, **fields)
    return previous


def use_blocks(config: LaunchConfig, n_taps: int) -> bool:
    """Whether ``config`` routes a window of ``n_taps`` taps with the block kernels."""
    if n_taps > BLOCKS_LIMIT_TAPS:
        return False
    if config.conv_algorithm == "auto":
        return n_taps <= BLOCKS_MAX_TAPS
    return config.conv_algorithm == "blocks"


def parse_launch_spec(spec: str) -> dict:
    """``"field=value,..."`` -> LaunchConfig fields (``conv_algorithm`` a name, bools as 0/1,
    the others integers); ValueError names a bad item."""
    types = {f.name: f.type for f in dataclasses.fields(LaunchConfig)}
    fields: dict = {}
    for item in spec.split(","):
        key, _, value = (part.strip() for part in item.partition("="))
        if key == "conv_algorithm":
            fields[key] = value
        elif key in types and value.isdigit():
            fields[key] = bool(int(value)) if types[key] == "bool" else int(value)
        else:
            raise ValueError(f"launch configuration item {item!r} is not 'field=integer'")
    return fields


def get_launch_config() -> LaunchConfig:
    """The launch configuration in force: the default, updated by ``$HYDROSCALE_KERNEL_LAUNCH``."""
    spec = os.environ.get(ENV_VAR, "").strip()
    if not spec:
        return _CONFIG
    try:
        fields = parse_launch_spec(spec)
    except ValueError:
        names = sorted(f.name for f in dataclasses.fields(LaunchConfig))
        raise ValueError(
            f"${ENV_VAR} must be 'field=value,...' with fields {names}, got {spec!r}"
        ) from None
    return dataclasses.replace(_CONFIG, **fields)
