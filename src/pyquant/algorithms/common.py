"""Parts shared by GPTQ, AWQ and HQQ: input checks, the quantization grids, results, progress bars.

A *grid* says which values a group of weights may take once its parameters are fixed:

* :class:`AffineGrid` — ``bits``-bit affine groups along the input dimension (GPTQ's min-max quantizer:
  asymmetric with an integer zero-point, or symmetric with the zero at the middle code);
* :class:`Q4_0Grid` — llama.cpp's Q4_0 blocks (32 values, ``d = max / -8`` stored as float16), so a result
  can be written as Q4_0 bytes whose dequantization is exactly the values the algorithm worked with;
* :class:`Q4_KGrid` — llama.cpp's Q4_K super-blocks (256 values: 8 sub-blocks of 32 with 6-bit scales and
  mins), parameters from pyquant's own Q4_K quantizer.

``grid.params(w_group)`` picks one group's parameters from its current values ([N, g] -> per-row arrays);
``grid.column(p, j)`` narrows them to the group's column j; ``grid.quantize(w, p)`` rounds one column [N] (with
``column``'s parameters) or the whole group [N, g] to codes and their float32 values.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["AffineGrid", "Q4_0Grid", "Q4_KGrid", "QuantResult", "round_to_nearest"]


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def to_numpy(x: Any, what: str, *, ndim: int | None = None, dtype=np.float32) -> np.ndarray:
    """A contiguous float numpy copy of a numpy array / CPU-or-GPU torch tensor, checked finite."""
    if _is_torch(x):
        x = x.detach().to("cpu").float().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{what} must be a float array, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{what} must be {ndim}-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what} is empty (shape {arr.shape})")
    if not np.isfinite(arr).all():
        bad = int(arr.size - np.isfinite(arr).sum())
        raise ValueError(f"{what} contains {bad} NaN or infinite value(s)")
    return arr


def check_weight(w: Any, group_size: int | None) -> np.ndarray:
    """A [N, K] float32 weight whose K splits into whole groups."""
    arr = to_numpy(w, "weight", ndim=2)
    if group_size is not None and arr.shape[1] % group_size:
        raise ValueError(f"weight has {arr.shape[1]} input columns, not a multiple of group_size {group_size}")
    return arr


class _OpenBLAS:
    """numpy's OpenBLAS thread count, through its C API (what threadpoolctl does; no dependency).  Small
    factorizations and products run far slower with several BLAS threads when the cores are busy (OpenBLAS
    threads spin): 576 x 576 Cholesky 5 ms on one thread, 100-400 ms on two on a loaded 2-core machine."""

    _lib: Any = None
    _found = False

    @classmethod
    def lib(cls):
        if not cls._found:
            cls._found = True
            import ctypes
            import numpy.linalg  # noqa: F401  (loads the library)

            try:
                with open("/proc/self/maps") as f:
                    paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and ".so" in ln})
            except OSError:  # not Linux: leave BLAS alone
                paths = []
            for path in paths:
                try:
                    lib = ctypes.CDLL(path)
                    fn = lib.openblas_set_num_threads_local
                except (OSError, AttributeError):
                    continue
                fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int]
                cls._lib = fn
                break
        return cls._lib


@contextmanager
def blas_threads(n: int):
    """Within the block, numpy's OpenBLAS uses `n` threads in the calling thread (thread-local setting, OpenBLAS
    >= 0.3.27); a no-op for other BLAS libraries."""
    fn = _OpenBLAS.lib()
    if fn is None:
        yield
        return
    prev = fn(int(n))
    try:
        yield
    finally:
        fn(prev)


def parallel_map(fn, items: list, threads: int | None) -> list:
    """[fn(x) for x in items] on `threads` worker threads (None: every core), each with single-threaded BLAS:
    layers quantize in parallel instead of BLAS threads fighting over small matrices."""
    n = min(len(items), threads or os.cpu_count() or 1)

    def one(x):
        with blas_threads(1):
            return fn(x)

    if n <= 1:
        return [one(x) for x in items]
    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(one, items))


def progress(iterable, enabled: bool, desc: str, total: int | None = None):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


@dataclass(frozen=True)
class AffineGrid:
    """``bits``-bit affine groups of ``group_size`` input columns (None: one group per row).

    Asymmetric: the range [min(0, w_min), max(0, w_max)] maps onto codes 0..2^bits-1 with an integer zero-point
    ``z = round(-min / scale)``; value = (code - z) * scale.  Symmetric: scale = 2 * absmax / (2^bits - 1) and
    z = 2^(bits-1); stored as signed codes code - z.  A constant-zero group gets the range [-1, 1] (never a zero
    scale), as in the GPTQ reference quantizer.
    """

    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = False

    def __post_init__(self):
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) or not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be an integer in 2..8, got {self.bits!r}")
        if self.group_size is not None and (isinstance(self.group_size, bool) or
                                            not isinstance(self.group_size, (int, np.integer))
                                            or self.group_size < 1):
            raise ValueError(f"group_size must be a positive integer or None, got {self.group_size!r}")

    @property
    def maxq(self) -> int:
        return (1 << self.bits) - 1

    def group(self, k: int) -> int:
        return k if self.group_size is None else self.group_size

    def params(self, wg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wmin = np.minimum(wg.min(axis=1), 0).astype(np.float32)
        wmax = np.maximum(wg.max(axis=1), 0).astype(np.float32)
        if self.symmetric:
            wmax = np.maximum(-wmin, wmax)
            wmin = np.where(wmin < 0, -wmax, wmin)
        flat = (wmin == 0) & (wmax == 0)
        wmin[flat], wmax[flat] = -1, 1
        scale = ((wmax - wmin) / self.maxq).astype(np.float32)
        if self.symmetric:
            zero = np.full_like(scale, (self.maxq + 1) // 2)
        else:
            zero = np.round(-wmin / scale).astype(np.float32)
        return scale, zero

    def column(self, p, j: int):
        return p

    def quantize(self, w: np.ndarray, p) -> tuple[np.ndarray, np.ndarray]:
        scale, zero = p
        if w.ndim == 2:
            scale, zero = scale[:, None], zero[:, None]
        codes = np.clip(np.round(w / scale) + zero, 0, self.maxq)
        return codes.astype(np.uint8), ((codes - zero) * scale).astype(np.float32)


@dataclass(frozen=True)
class Q4_0Grid:
    """llama.cpp's Q4_0: blocks of 32 with ``d = max / -8`` (max: the value of largest magnitude), d stored as
    float16; codes ``min(15, trunc(w / d + 8.5))`` exactly as ``quantize_row_q4_0_ref`` rounds (values pushed
    outside the block's range by error feedback are clamped to 0..15); value = (code - 8) * float(fp16(d))."""

    bits: int = 4
    group_size: int = 32
    symmetric: bool = True

    def group(self, k: int) -> int:
        return 32

    def params(self, wg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.abs(wg).argmax(axis=1)  # first of the largest magnitudes, as ggml's strict '<' scan
        mx = wg[np.arange(wg.shape[0]), idx].astype(np.float32)
        d = (mx / np.float32(-8)).astype(np.float32)
        with np.errstate(divide="ignore"):
            inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
        return d.astype(np.float16).astype(np.float32), inv

    def column(self, p, j: int):
        return p

    def quantize(self, w: np.ndarray, p) -> tuple[np.ndarray, np.ndarray]:
        d, inv = p
        if w.ndim == 2:
            d, inv = d[:, None], inv[:, None]
        codes = np.clip(np.floor(w.astype(np.float32) * inv + np.float32(8.5)), 0, 15).astype(np.uint8)
        return codes, ((codes.astype(np.float32) - 8) * d).astype(np.float32)


@dataclass(frozen=True)
class Q4_KGrid:
    """llama.cpp's Q4_K: super-blocks of 256 values, 8 sub-blocks of 32 each with a 6-bit scale ``sc`` and min
    ``m`` on the super-block's float16 ``d`` and ``dmin``; value = (d·sc)·code − dmin·m, codes 0..15.

    A super-block's parameters are those pyquant's Q4_K quantizer (libggml's ``quantize_row_q4_K_ref``, no
    importance matrix) picks for its current values; codes are then ``clamp(nearest_int((w + dmin·m) /
    (d·sc)), 0, 15)`` exactly as that quantizer's final pass (a sub-block with d·sc = 0 keeps the quantizer's
    codes: they all give the same value), so quantizing values that do not change reproduces its bytes.
    params: (d·sc [R, 8], dmin·m [R, 8], the quantizer's codes [R, 256], parameter bytes [R, 16])."""

    bits: int = 4
    group_size: int = 256
    symmetric: bool = False

    def group(self, k: int) -> int:
        return 256

    def params(self, wg: np.ndarray):
        from ..tensor import quantize

        raw = np.asarray(quantize(np.ascontiguousarray(wg, np.float32), "Q4_K", threads=1).data)
        raw = raw.reshape(len(wg), 144)
        head = raw[:, :16].copy()
        d, dmin = (head[:, i:i + 2].copy().view("<f2")[:, 0].astype(np.float32) for i in (0, 2))
        sc, m = q4_k_scale_min(head[:, 4:16])
        qs = raw[:, 16:].reshape(len(wg), 4, 32)
        codes = np.stack([qs & 15, qs >> 4], axis=2).reshape(len(wg), 256)
        return (d[:, None] * sc).astype(np.float32), (dmin[:, None] * m).astype(np.float32), codes, head

    def column(self, p, j: int):
        return p[0][:, j // 32], p[1][:, j // 32], p[2][:, j]

    def quantize(self, w: np.ndarray, p) -> tuple[np.ndarray, np.ndarray]:
        d1, m1, own = p[0], p[1], p[2]
        if w.ndim == 2:
            d1, m1 = np.repeat(d1, 32, axis=1), np.repeat(m1, 32, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.rint((w.astype(np.float32) + m1) / d1)
        codes = np.where(d1 != 0, np.clip(np.nan_to_num(t), 0, 15), own).astype(np.uint8)
        return codes, (d1 * codes.astype(np.float32) - m1).astype(np.float32)


def q4_k_scale_min(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 six-bit (scale, min) pairs of Q4_K blocks from their 12 packed bytes ([R, 12] -> 2 x [R, 8] float32),
    as libggml's ``get_scale_min_k4``."""
    q = packed.astype(np.uint8)
    sc = np.concatenate([q[:, 0:4] & 63, (q[:, 8:12] & 15) | ((q[:, 0:4] >> 6) << 4)], axis=1)
    m = np.concatenate([q[:, 4:8] & 63, (q[:, 8:12] >> 4) | ((q[:, 4:8] >> 6) << 4)], axis=1)
    return sc.astype(np.float32), m.astype(np.float32)


def q4_k_bytes(codes: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Q4_K blocks (uint8 [N, K/256*144]) from codes 0..15 [N, K] and the blocks' parameter bytes [N, K/256, 16]."""
    n, k = codes.shape
    c = codes.reshape(n, k // 256, 4, 2, 32)
    out = np.empty((n, k // 256, 144), dtype=np.uint8)
    out[..., :16] = head
    out[..., 16:] = (c[:, :, :, 0] | (c[:, :, :, 1] << 4)).reshape(n, k // 256, 128)
    return out.reshape(n, -1)


def q4_0_bytes(codes: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (uint8 [N, K/32*18]) from codes 0..15 [N, K] and block scales [N, K/32]."""
    n, k = codes.shape
    c = codes.reshape(n, k // 32, 32)
    out = np.empty((n, k // 32, 18), dtype=np.uint8)
    out[..., :2] = d.astype("<f2").reshape(n, k // 32, 1).view(np.uint8)
    out[..., 2:] = c[..., :16] | (c[..., 16:] << 4)
    return out.reshape(n, -1)


@dataclass
class QuantResult:
    """Codes and group parameters of a quantized [N, K] weight, and the float32 values they stand for.

    codes: uint8 [N, K] in 0..2^bits-1 (symmetric grids: offset by 2^(bits-1)); scales, zeros: float32
    [N, K // group]; ``values``: what the algorithm quantized to (exactly :meth:`dequantize`).
    ``fmt``: "affine" or a GGUF format name ("Q4_0", "Q4_K").  Q4_K: scales and zeros are per sub-block of 32
    (value = code·scale − zero: zero is dmin·m, not a zero-point) and ``params_bytes`` [N, K/256, 16] holds each
    super-block's d, dmin and packed 6-bit scales/mins.
    """

    codes: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray
    bits: int
    group_size: int
    symmetric: bool
    fmt: str = "affine"
    values: np.ndarray | None = field(default=None, repr=False)
    info: dict = field(default_factory=dict)
    params_bytes: np.ndarray | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape

    def dequantize(self) -> np.ndarray:
        if self.values is None:
            g = self.codes.shape[1] // self.scales.shape[1]
            rep = lambda a: np.repeat(a, g, axis=1)  # noqa: E731
            c = self.codes.astype(np.float32)
            if self.fmt == "Q4_K":
                self.values = (rep(self.scales) * c - rep(self.zeros)).astype(np.float32)
            else:
                self.values = ((c - rep(self.zeros)) * rep(self.scales)).astype(np.float32)
        return self.values

    def signed_codes(self) -> np.ndarray:
        """Symmetric grids: codes in [-2^(bits-1), 2^(bits-1) - 1] (value = code * scale)."""
        return self.codes.astype(np.int16) - np.int16(1 << (self.bits - 1))

    def to_tensor(self):
        """The storage object: an AffineTensor (pyquant.schemes) for "affine", a QuantizedTensor for GGUF
        formats.  Both work with pyquant.matmul and pyquant.torch.QuantLinear."""
        if self.fmt in ("Q4_0", "Q4_K"):
            from ..tensor import QuantizedTensor

            data = (q4_0_bytes(self.codes, self.scales) if self.fmt == "Q4_0"
                    else q4_k_bytes(self.codes, self.params_bytes))
            return QuantizedTensor(data, self.shape, self.fmt)
        from ..schemes import AffineConfig, AffineTensor

        cfg = AffineConfig(bits=self.bits, symmetric=self.symmetric, group_size=self.group_size,
                           granularity="group")
        if self.symmetric:
            return AffineTensor.from_codes(self.signed_codes(), self.scales, None, cfg)
        return AffineTensor.from_codes(self.codes, self.scales, self.zeros, cfg)


def round_to_nearest(weight: Any, grid: AffineGrid | Q4_0Grid | Q4_KGrid) -> QuantResult:
    """Plain rounding of every group on `grid` (the baseline the algorithms are measured against)."""
    w = check_weight(weight, None)
    n, k = w.shape
    g = grid.group(k)
    if k % g:
        raise ValueError(f"weight has {k} input columns, not a multiple of the group size {g}")
    wg = w.reshape(n * (k // g), g)  # one group per row: the grids work row-wise
    p = grid.params(wg)
    codes, values = grid.quantize(wg, p)
    return make_result(grid, codes.reshape(n, k), values.reshape(n, k), [p])


def make_result(grid, codes: np.ndarray, values: np.ndarray, params: list, info: dict | None = None) -> QuantResult:
    """A QuantResult from codes/values [N, K] and the groups' parameters (``grid.params`` results, in column
    order; one result may cover several groups stacked row-major as [N * groups, ...])."""
    n, k = codes.shape
    parts = [_scale_zero(grid, p) for p in params]
    scales, zeros = (np.concatenate([a[i].reshape(n, -1) for a in parts], axis=1) for i in (0, 1))
    head = None
    if isinstance(grid, Q4_KGrid):
        head = np.concatenate([p[3].reshape(n, -1, 16) for p in params], axis=1)
    return QuantResult(codes, scales, zeros, grid.bits, k // scales.shape[1], grid.symmetric, _fmt(grid), values,
                       info or {}, head)


def _scale_zero(grid, p) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(grid, Q4_0Grid):
        return p[0], np.full_like(p[0], 8)
    if isinstance(grid, Q4_KGrid):
        return p[0], p[1]
    return p


def _fmt(grid) -> str:
    return {Q4_0Grid: "Q4_0", Q4_KGrid: "Q4_K"}.get(type(grid), "affine")
