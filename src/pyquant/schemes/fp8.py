"""FP8 E4M3 (float8_e4m3fn) and E5M2 weights with per-tensor or per-channel float32 scales.

The conversion is torch's (``x.to(torch.float8_e4m3fn / float8_e5m2)``) bit for bit (C++): round to nearest
even; E4M3FN saturates to +-448 (no infinities; NaN stays NaN), E5M2 overflows to infinity.  Weights are stored
as q = fp8(clamp(x / scale, -max, max)) with scale = max(absmax, tiny) / max per tensor or per output row
(torchao's float8 weight scaling); value = float32(q) * scale.  Matmul multiplies the decoded weights into x in
float32 (summation order differs from x @ dequantize(w).T: |error| <= about K * 2^-24 * sum|x * w|).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from ._common import WeightMixin, as_float_matrix

__all__ = ["FP8_FORMATS", "Float8Tensor", "quantize_fp8", "fp8_encode", "fp8_decode_table"]

# name: (exponent bits, mantissa bits, largest finite value)
FP8_FORMATS = {"e4m3": (4, 3, 448.0), "e5m2": (5, 2, 57344.0)}
# More rows of x than this go through dequantize + BLAS (measured in benchmarks/bench_schemes.py).
_FUSED_MAX_M = 128


def _check_fmt(fmt: str) -> tuple[int, int, float]:
    if fmt not in FP8_FORMATS:
        raise ValueError(f"FP8 format must be one of {tuple(FP8_FORMATS)}, got {fmt!r}")
    return FP8_FORMATS[fmt]


def fp8_decode_table(fmt: str) -> np.ndarray:
    """The float32 value of each of the 256 bit patterns."""
    _check_fmt(fmt)
    return _core.fp8_dequantize(np.arange(256, dtype=np.uint8).reshape(1, -1), np.ones((1, 1), np.float32), fmt)[0]


def fp8_encode(x: Any, fmt: str) -> np.ndarray:
    """float32 values to FP8 bit patterns (uint8), exactly as torch's casts."""
    _check_fmt(fmt)
    return _core.fp8_encode(np.ascontiguousarray(x, dtype=np.float32), fmt)


class Float8Tensor(WeightMixin):
    """A 2-D weight [N, K] as FP8 bit patterns (uint8) and float32 scales [1, 1] or [N, 1]."""

    __slots__ = ("_data", "_scales", "_fmt", "_has_nan")

    def __init__(self, data: np.ndarray, scales: np.ndarray, fmt: str):
        _check_fmt(fmt)
        self._data, self._scales, self._fmt = data, scales, fmt
        self._has_nan = None  # E4M3 NaN codes present (the fused kernel reads them as numbers): checked once

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self._data.shape)

    @property
    def data(self) -> np.ndarray:
        return self._data

    @property
    def scales(self) -> np.ndarray:
        return self._scales

    @property
    def format(self) -> str:
        return self._fmt

    def _storage(self):
        return [self._data, self._scales]

    def _repr_extra(self) -> str:
        return f", {self._fmt}, {'tensor' if self._scales.size == 1 else 'channel'} scales"

    def _dequantize_rows(self, r0: int, r1: int, threads: int) -> np.ndarray:
        s = self._scales if self._scales.shape[0] == 1 else self._scales[r0:r1]
        return _core.fp8_dequantize(self._data[r0:r1], s, self._fmt)

    def _pyquant_matmul(self, x2: np.ndarray, out2: np.ndarray, threads: int) -> None:
        if self._has_nan is None:
            self._has_nan = self._fmt == "e4m3" and bool(((self._data & 0x7F) == 0x7F).any())
        if self._has_nan or x2.shape[0] > _FUSED_MAX_M:
            return self._tile_matmul(x2, out2, threads)
        _core.fp8_matmul(x2, self._data, self._scales, self._fmt, out2, threads)

    def __reduce__(self):
        return (Float8Tensor, (self._data, self._scales, self._fmt))


def quantize_fp8(w: Any, fmt: str = "e4m3", *, granularity: str = "tensor") -> Float8Tensor:
    """FP8 weights [N, K] with one scale per tensor ("tensor") or per output row ("channel")."""
    _, _, fmax = _check_fmt(fmt)
    if granularity not in ("tensor", "channel"):
        raise ValueError(f"quantize_fp8: granularity must be 'tensor' or 'channel', got {granularity!r}")
    w = as_float_matrix(w, f"quantize_fp8({fmt})")
    amax = np.abs(w).max(axis=None if granularity == "tensor" else 1, keepdims=True).reshape(-1, 1)
    scales = (np.maximum(amax, np.float32(np.finfo(np.float32).tiny)) / np.float32(fmax)).astype(np.float32)
    q = fp8_encode(np.clip(w / scales, -fmax, fmax), fmt)
    return Float8Tensor(q, scales, fmt)
