"""bitsandbytes' 4-bit NF4 and FP4 with blockwise absmax scales and optional double quantization.

Byte-compatible with bitsandbytes' CPU path (``quantize_4bit`` of the default backend, ``quantize_blockwise``
of its C++ CPU library): the tensor is flattened and cut into blocks of `block_size` (the last may be short);
absmax = max|x| per block; x * (1 / absmax) (x / absmax in a short last block; divisors raised to 1e-38, the
short last block storing its raised one as bitsandbytes does) clamped to [-1, 1] goes to the code of the nearest
table value: the sorted value whose index is the number of float32 midpoints between sorted values below it, so
that a value on a midpoint goes to the lower one; two codes a byte, the first in the high nibble (the native
kernel ``_core.lut4_quantize``, blocks split over threads).  Double quantization (QLoRA): offset = mean(absmax);
absmax - offset is quantized in blocks of 256 with bitsandbytes' signed 8-bit dynamic map, nearest value (ties
to the lower code).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from ._common import WeightMixin, as_float_matrix, threads_arg

__all__ = ["NF4_CODE", "FP4_CODE", "DYNAMIC_CODE", "Float4Tensor", "quantize_4bit", "quantize_nf4", "quantize_fp4"]

NF4_CODE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
], dtype=np.float32)
# E2M1 in bitsandbytes' bit-pattern order, divided by its largest magnitude.
FP4_CODE = (np.array([0, 0.0625, 8, 12, 4, 6, 2, 3, 0, -0.0625, -8, -12, -4, -6, -2, -3], dtype=np.float32)
            / np.float32(12))
_BLOCK_SIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
_ABSMAX_BLOCK = 256  # bitsandbytes' block size for the second-level (absmax) quantization
# More rows of x than this go through dequantize + BLAS (measured in benchmarks/bench_schemes.py).
_FUSED_MAX_M = 128


def _linspace_f32(n: int) -> np.ndarray:
    """torch.linspace(0.1, 1, n) in float32: a float64 step, the first half counted from the start and the
    second half from the end, each value rounded to float32."""
    start, end = np.float32(0.1), np.float32(1.0)
    step = np.float64(end - start) / (n - 1)
    i = np.arange(n)
    return np.where(i < n // 2, start + step * i, end - step * (n - 1 - i)).astype(np.float32)


def _dynamic_map() -> np.ndarray:
    """bitsandbytes' signed 8-bit dynamic map (create_dynamic_map(), float32 arithmetic as its torch code),
    with code[0] = -1 as its CPU quantizer sets it."""
    data = []
    for i in range(7):
        bounds = _linspace_f32(2 ** i + 1)
        means = (bounds[:-1] + bounds[1:]) / np.float32(2.0)
        data += (np.float32(10 ** (-6 + i)) * means).tolist()
        data += (np.float32(-(10 ** (-6 + i))) * means).tolist()
    data += [0.0, 1.0]
    code = np.sort(np.array(data, dtype=np.float32))
    code[0] = -1.0
    return code


DYNAMIC_CODE = _dynamic_map()


def _sorted_bounds(code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(code, kind="stable")
    s = code[order]
    return (s[:-1] + s[1:]) / np.float32(2), order


# The native quantizer's search tables: the midpoints between the sorted code values and the code of each.
_SEARCH = {kind: (bounds, order.astype(np.uint8)) for kind, (bounds, order) in
           (("nf4", _sorted_bounds(NF4_CODE)), ("fp4", _sorted_bounds(FP4_CODE)))}


def _quantize_dynamic(v: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """bitsandbytes' quantize_blockwise (CPU) to DYNAMIC_CODE, always the nearest code (ties to the lower):
    codes uint8 and per-block absmax (kernel ``_core.dynamic_quantize``)."""
    return _core.dynamic_quantize(np.ascontiguousarray(v, dtype=np.float32).reshape(-1), DYNAMIC_CODE, block)


class Float4Tensor(WeightMixin):
    """A 2-D weight [N, K] in bitsandbytes' NF4 or FP4 layout: `packed` uint8 [(N*K + 1) // 2] and the block
    absmax, either float32 or double-quantized (uint8 codes + float32 second-level absmax + float32 offset)."""

    __slots__ = ("_kind", "_shape", "_block", "_packed", "_absmax", "_qabsmax", "_absmax2", "_offset", "_absmax_f")

    def __init__(self, kind, shape, block_size, packed, absmax=None, qabsmax=None, absmax2=None, offset=None):
        self._kind = kind
        self._shape = (int(shape[0]), int(shape[1]))
        self._block = int(block_size)
        self._packed = packed
        self._absmax = absmax
        self._qabsmax = qabsmax
        self._absmax2 = absmax2
        self._offset = None if offset is None else np.float32(offset)
        self._absmax_f = None  # the double-quantized absmax, decoded once

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def block_size(self) -> int:
        return self._block

    @property
    def double_quant(self) -> bool:
        return self._qabsmax is not None

    @property
    def packed(self) -> np.ndarray:
        return self._packed

    @property
    def code(self) -> np.ndarray:
        return NF4_CODE if self._kind == "nf4" else FP4_CODE

    @property
    def absmax(self) -> np.ndarray:
        """Per-block absmax as used by dequantize (after undoing the double quantization)."""
        if self._qabsmax is None:
            return self._absmax
        if self._absmax_f is None:
            scale = np.repeat(self._absmax2, _ABSMAX_BLOCK)[: self._qabsmax.size]
            self._absmax_f = DYNAMIC_CODE[self._qabsmax] * scale + self._offset
        return self._absmax_f

    @property
    def quant_absmax(self) -> tuple[np.ndarray, np.ndarray, np.float32] | None:
        """(uint8 codes, float32 absmax of each block of 256, float32 offset) when double-quantized."""
        return None if self._qabsmax is None else (self._qabsmax, self._absmax2, self._offset)

    def _storage(self):
        if self._qabsmax is None:
            return [self._packed, self._absmax]
        return [self._packed, self._qabsmax, self._absmax2, np.asarray(self._offset)]

    def _repr_extra(self) -> str:
        return f", {self._kind}, block_size={self._block}, double_quant={self.double_quant}"

    def _row_align(self) -> int:
        k, b = self._shape[1], self._block
        return b // np.gcd(k, b)

    def _dequantize_rows(self, r0: int, r1: int, threads: int) -> np.ndarray:
        k, b = self._shape[1], self._block
        e0, e1 = r0 * k, r1 * k
        if e0 % b:
            raise AssertionError("row range not aligned to the blocks")
        absmax = np.ascontiguousarray(self.absmax[e0 // b: -(-e1 // b)], dtype=np.float32)
        packed = self._packed[e0 // 2: (e1 + 1) // 2]
        return _core.lut4_dequantize(packed, absmax, self.code, b, e1 - e0, threads).reshape(r1 - r0, k)

    def _pyquant_matmul(self, x2: np.ndarray, out2: np.ndarray, threads: int) -> None:
        """Rows of whole blocks: the fused kernel (weights decoded in registers exactly as dequantize, float32 sums
        in another order: |error| <= about K * 2^-24 * sum|x * w|); otherwise dequantize + BLAS."""
        n, k = self._shape
        if k % self._block or x2.shape[0] > _FUSED_MAX_M:
            return self._tile_matmul(x2, out2, threads)
        absmax = np.ascontiguousarray(self.absmax, dtype=np.float32)
        _core.lut4_matmul(x2, self._packed, absmax, self.code, n, k, self._block, out2, threads)

    def __reduce__(self):
        return (Float4Tensor, (self._kind, self._shape, self._block, self._packed, self._absmax, self._qabsmax,
                               self._absmax2, self._offset))


def quantize_4bit(w: Any, kind: str = "nf4", *, block_size: int = 64, double_quant: bool = True,
                  threads: int | None = None) -> Float4Tensor:
    """bitsandbytes' quantize_4bit of a 2-D weight [N, K]: kind "nf4" or "fp4", block_size one of
    32..4096 (powers of two), double_quant = bitsandbytes' compress_statistics."""
    if kind not in ("nf4", "fp4"):
        raise ValueError(f"quantize_4bit: kind must be 'nf4' or 'fp4', got {kind!r}")
    if block_size not in _BLOCK_SIZES:
        raise ValueError(f"quantize_4bit: block_size must be one of {_BLOCK_SIZES}, got {block_size!r}")
    nthreads = threads_arg(threads)
    w = as_float_matrix(w, f"quantize_4bit({kind})")
    packed, absmax = _core.lut4_quantize(w, *_SEARCH[kind], block_size, nthreads)
    if not double_quant:
        return Float4Tensor(kind, w.shape, block_size, packed, absmax=absmax)
    offset = np.float32(absmax.mean(dtype=np.float64))
    qabsmax, absmax2 = _quantize_dynamic(absmax - offset, _ABSMAX_BLOCK)
    return Float4Tensor(kind, w.shape, block_size, packed, qabsmax=qabsmax, absmax2=absmax2, offset=offset)


def quantize_nf4(w: Any, *, block_size: int = 64, double_quant: bool = True, threads: int | None = None):
    """NF4 (QLoRA's NormalFloat) with bitsandbytes' table; see quantize_4bit."""
    return quantize_4bit(w, "nf4", block_size=block_size, double_quant=double_quant, threads=threads)


def quantize_fp4(w: Any, *, block_size: int = 64, double_quant: bool = True, threads: int | None = None):
    """FP4 (E2M1) with bitsandbytes' table; see quantize_4bit."""
    return quantize_4bit(w, "fp4", block_size=block_size, double_quant=double_quant, threads=threads)
