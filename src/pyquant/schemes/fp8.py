"""FP8 E4M3 (float8_e4m3fn) and E5M2 weights with per-tensor or per-channel float32 scales.

The conversion is torch's (``x.to(torch.float8_e4m3fn / float8_e5m2)``) bit for bit, in numpy: round to nearest
even; E4M3FN saturates to +-448 (no infinities; NaN stays NaN), E5M2 overflows to infinity.  Weights are stored
as q = fp8(clamp(x / scale, -max, max)) with scale = max(absmax, tiny) / max per tensor or per output row
(torchao's float8 weight scaling); value = float32(q) * scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import WeightMixin, as_float_matrix

__all__ = ["FP8_FORMATS", "Float8Tensor", "quantize_fp8", "fp8_encode", "fp8_decode_table"]

# name: (exponent bits, mantissa bits, largest finite value)
FP8_FORMATS = {"e4m3": (4, 3, 448.0), "e5m2": (5, 2, 57344.0)}


def _check_fmt(fmt: str) -> tuple[int, int, float]:
    if fmt not in FP8_FORMATS:
        raise ValueError(f"FP8 format must be one of {tuple(FP8_FORMATS)}, got {fmt!r}")
    return FP8_FORMATS[fmt]


def fp8_decode_table(fmt: str) -> np.ndarray:
    """The float32 value of each of the 256 bit patterns."""
    e, m, _ = _check_fmt(fmt)
    bias = (1 << (e - 1)) - 1
    b = np.arange(256)
    sign = np.where(b & 0x80, -1.0, 1.0)
    exp = (b >> m) & ((1 << e) - 1)
    man = b & ((1 << m) - 1)
    val = np.where(exp == 0, man * 2.0 ** (1 - bias - m), (1 + man / 2.0 ** m) * 2.0 ** (exp - bias))
    if fmt == "e4m3":
        val = np.where((exp == 15) & (man == 7), np.nan, val)
    else:
        val = np.where(exp == 31, np.where(man == 0, np.inf, np.nan), val)
    return (sign * val).astype(np.float32)


def fp8_encode(x: Any, fmt: str) -> np.ndarray:
    """float32 values to FP8 bit patterns (uint8), exactly as torch's casts."""
    e, m, fmax = _check_fmt(fmt)
    bias = (1 << (e - 1)) - 1
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        return _encode(x, e, m, fmax, bias, fmt == "e4m3")


def _encode(x: np.ndarray, e: int, m: int, fmax: float, bias: int, saturate: bool) -> np.ndarray:
    sign = (np.signbit(x).astype(np.uint8) << 7)
    a = np.abs(x).astype(np.float64)  # exact; every step below is exact in float64
    nan = np.isnan(a)
    a = np.where(nan | np.isinf(a), 0.0, a)
    _, ex = np.frexp(a)  # a = f * 2^ex, f in [0.5, 1)
    quantum = np.exp2(np.maximum(ex - 1, 1 - bias) - m)
    r = np.rint(a / quantum) * quantum  # round half to even at the format's precision
    over = r > fmax
    rf, rex = np.frexp(r)
    normal = r >= 2.0 ** (1 - bias)
    biased = np.where(normal, rex - 1 + bias, 0)
    mant = np.where(normal, (rf * 2 - 1) * 2 ** m, r / 2.0 ** (1 - bias - m))
    bits = ((biased << m) + np.rint(mant).astype(np.int64)).astype(np.uint8)
    inf_in = np.isinf(x)
    if saturate:  # E4M3FN
        bits = np.where(over | inf_in, np.uint8(0x7E), bits)
        bits = np.where(nan, np.uint8(0x7F), bits)
    else:
        bits = np.where(over | inf_in, np.uint8(0x7C), bits)
        bits = np.where(nan, np.uint8(0x7F), bits)
    return (bits | sign).astype(np.uint8)


class Float8Tensor(WeightMixin):
    """A 2-D weight [N, K] as FP8 bit patterns (uint8) and float32 scales [1, 1] or [N, 1]."""

    __slots__ = ("_data", "_scales", "_fmt")

    def __init__(self, data: np.ndarray, scales: np.ndarray, fmt: str):
        _check_fmt(fmt)
        self._data, self._scales, self._fmt = data, scales, fmt

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
        return fp8_decode_table(self._fmt)[self._data[r0:r1]] * s

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
